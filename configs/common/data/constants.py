"""Input statistics of common pre-trained weights, as Detectron2's common/data/constants.py names them:
per-channel means and standard deviations of 0-255 pixels, for `model.pixel_mean` / `model.pixel_std`."""
constants = dict(
    # ImageNet statistics in RGB order: torchvision's and MAE's pre-training (ViTDet, MViT, Swin).
    imagenet_rgb256_mean=[123.675, 116.28, 103.53],
    imagenet_rgb256_std=[58.395, 57.12, 57.375],
    # BGR order, for Detectron's (MSRA) pre-trained ResNets, whose first convolution absorbed the
    # standard deviation: hence 1.0.
    imagenet_bgr256_mean=[103.530, 116.280, 123.675],
    imagenet_bgr256_std=[1.0, 1.0, 1.0],
)

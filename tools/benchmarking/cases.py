"""The cases of tools/benchmark.py's tasks, each run in a subprocess of its own: `CASES[task](*case, args)`."""
import statistics
import tempfile
import time
from typing import Callable, Dict

from .coco_eval import coco_eval_case
from .export import export_case
from .inputs import SYNTHETIC_COCO, dataset_batches, load_cfg, random_gt_boxes, synthetic_batch, write_synthetic_coco
from .measure import Meter, process_memory, run_interleaved
from .torchvision_twin import TWINS, torchvision_inputs


# The box-regression layers whose weights the benchmark zeroes, by framework.
_REGRESSION_LAYERS = {
    "d2mask": ("proposal_generator.rpn_head.anchor_deltas", "roi_heads.box_predictor.bbox_pred"),
    "torchvision": ("rpn.head.bbox_pred", "roi_heads.box_predictor.bbox_pred"),
}


def _zero_box_regression(model, framework: str) -> None:
    """Zeroes the RPN's and the box head's regression layers.

    With random weights (and FrozenBN at identity) the features grow to ~1e4, so random box deltas
    saturate their clamp: every proposal and detection becomes nearly the whole image and NMS leaves a
    handful, a far lighter workload than a trained model's. Zero deltas keep proposals on the anchors
    and detections on the proposals, so both frameworks process full sets (1000 proposals, 512 sampled
    regions, 100 detections) as a trained model would; the random scores still rank them.
    """
    import torch

    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in _REGRESSION_LAYERS[framework]:
            if name in modules:
                for param in modules[name].parameters():
                    param.zero_()


def _training_step(model, optimizer, forward: Callable[[], Dict]) -> None:
    optimizer.zero_grad(set_to_none=True)
    losses = forward()
    sum(losses.values()).backward()
    optimizer.step()


def _sgd(model):
    import torch

    # Learning rate 0: the step computes what a real one does, but the weights, and so the workload
    # of every iteration, stay those of the first.
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0, momentum=0.9,
                           weight_decay=1e-4)


def _model_case(task: str, num_gt: str, args) -> Dict:
    """One train or inference case: d2mask alone, or interleaved with torchvision."""
    import torch

    from d2mask.modeling import build_model

    cfg = load_cfg(args)
    device = torch.device(args.device)
    num_gt = int(num_gt)
    count = args.warmup + args.iters
    if args.dataset:
        batches = dataset_batches(cfg, args.dataset, args.batch_size, count)
    else:
        batches = [synthetic_batch(cfg, args.image_size, num_gt, args.batch_size, device)] * count
    sizes = {tuple(x["image"].shape[-2:]) for batch in batches for x in batch}
    if args.compare and len(sizes) > 1:
        raise ValueError(f"--compare {args.compare} needs images of one size (torchvision resizes each image to "
                         f"its min_size/max_size); the batches hold sizes {sorted(sizes)}")
    if task == "inference":
        batches = [[{k: v for k, v in x.items() if k != "instances"} for x in batch] for batch in batches]
    train = task == "train"

    torch.manual_seed(0)
    models = {"d2mask": build_model(cfg).train(train)}
    if args.compare:
        models["torchvision"] = TWINS[args.compare](cfg, next(iter(sizes)), device).train(train)
    for name, model in models.items():
        _zero_box_regression(model, name)
    optimizers = {name: _sgd(model) for name, model in models.items()} if train else {}
    # Converted once, outside the timing: torchvision's inputs are what a loader would give it.
    converted = {id(b): torchvision_inputs(b) for b in batches} if args.compare else {}
    detections = {name: [] for name in models}
    position = {name: 0 for name in models}  # each framework's next batch

    def step_fn(name: str) -> Callable[[], None]:
        model = models[name]

        def step():
            batch = batches[position[name]]
            position[name] += 1
            if name == "torchvision":
                images, targets = converted[id(batch)]
                forward = (lambda: model(images, targets)) if train else (lambda: model(images))
            else:
                forward = lambda: model(batch)  # noqa: E731
            if train:
                _training_step(model, optimizers[name], forward)
                return
            with torch.no_grad():
                outputs = forward()
            counted = [len(o["boxes"]) if name == "torchvision" else len(o["instances"]) for o in outputs]
            detections[name].append(statistics.mean(counted))

        return step

    meters = run_interleaved({name: step_fn(name) for name in models}, device, args.iters, args.warmup)
    result = {
        "task": task, "config": args.config_file, "opts": args.opts, "device": args.device,
        "threads": torch.get_num_threads(), "dataset": args.dataset, "image_sizes": sorted(sizes), "num_gt": None if args.dataset else num_gt,
        "batch_size": args.batch_size, "iters": args.iters, "warmup": args.warmup,
        "compare": args.compare,  # which twin the "torchvision" entry is
    }
    for name, meter in meters.items():
        result[name] = meter.result(args.batch_size)
        if detections[name]:
            result[name]["detections_per_image"] = statistics.mean(detections[name])
    if args.compare:
        d2, tv = result["d2mask"], result["torchvision"]
        result["ratio"] = d2["median_s"] / tv["median_s"]
        # Each round's two iterations ran back to back, under the same load from other processes.
        result["ratio_paired_median"] = statistics.median(a / b for a, b in zip(d2["times_s"], tv["times_s"]))
        # On a shared machine the fastest iteration is the one least slowed by other processes.
        result["ratio_min"] = d2["min_s"] / tv["min_s"]
        result["ratio_cpu"] = d2["cpu_median_s"] / tv["cpu_median_s"]
    result.update(process_memory(device))
    return result


def _data_case(num_workers: str, args) -> Dict:
    """The train loader's images/s alone, then its share of the time of training iterations, and its
    images/s against the training step's (the iteration less its wait for data). With
    `--synthetic-coco N`, on N COCO-like JPEG images of `--image-size` written to a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        cfg = load_cfg(args)
        if args.synthetic_coco:
            write_synthetic_coco(folder, args.synthetic_coco, args.image_size or (800, 1333))
            cfg.merge_from_list(["DATASETS.TRAIN", (SYNTHETIC_COCO,)])
        cfg.merge_from_list(["DATALOADER.NUM_WORKERS", int(num_workers)])
        return _time_loader_and_training(cfg, args)


def _time_loader_and_training(cfg, args) -> Dict:
    import torch

    from d2mask.data import build_detection_train_loader
    from d2mask.modeling import build_model

    device = torch.device(args.device)
    batch_size = cfg.SOLVER.IMS_PER_BATCH

    loader = iter(build_detection_train_loader(cfg))
    meter = Meter(device)
    for i in range(args.warmup + args.iters):
        (meter.memory if i < args.warmup else meter.time)(lambda: next(loader))
    del loader  # stops its workers before the training loop starts its own
    loader_result = meter.result(batch_size)

    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = _sgd(model)
    loader = iter(build_detection_train_loader(cfg))
    data_times, iter_times = [], []
    for i in range(args.warmup + args.iters):
        start = time.perf_counter()
        batch = next(loader)
        loaded = time.perf_counter()
        _training_step(model, optimizer, lambda: model(batch))
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            data_times.append(loaded - start)
            iter_times.append(time.perf_counter() - start)
    step_s = statistics.median(t - d for t, d in zip(iter_times, data_times))
    return {
        "task": "data", "config": args.config_file, "opts": args.opts, "device": args.device,
        "datasets": list(cfg.DATASETS.TRAIN), "num_workers": cfg.DATALOADER.NUM_WORKERS, "batch_size": batch_size,
        "iters": args.iters, "warmup": args.warmup, "synthetic_coco": args.synthetic_coco,
        "image_sizes": sorted({tuple(x["image"].shape[-2:]) for x in batch}),
        "loader": loader_result,
        "train_iter_median_s": statistics.median(iter_times), "train_iter_times_s": iter_times,
        "data_time_median_s": statistics.median(data_times), "data_times_s": data_times,
        "data_share": sum(data_times) / sum(iter_times),
        "train_step_median_s": step_s, "train_step_images_per_s": batch_size / step_s,
        # the target of issue #16: the loader sustains >= 3x the images/s the training step consumes
        "loader_to_step_ratio": loader_result["images_per_s"] * step_s / batch_size,
        **process_memory(device),
    }


# Proposals per image given to the ROI heads in the label_and_sample_proposals stage (before the GT
# boxes are appended), as with Detectron2's POST_NMS_TOPK_TRAIN 2000 of its C4 and 1000-per-image FPN
# schedules at batch 2.
_ROI_PROPOSALS = 2000


def _roi_targets_case(num_gt: int, args) -> Dict:
    """The label_and_sample_proposals stage: the config's ROI heads match _ROI_PROPOSALS random
    proposals (in no spatial order, as NMS leaves them) plus the GT boxes to `num_gt` GT boxes."""
    import torch

    from d2mask.modeling import build_backbone, build_roi_heads
    from d2mask.structures import Boxes, Instances

    device = torch.device(args.device)
    cfg = load_cfg(args)
    roi_heads = build_roi_heads(cfg, build_backbone(cfg).output_shape()).to(device).train()
    image_size = tuple(args.image_size)
    gt = [Instances(image_size, gt_boxes=Boxes(random_gt_boxes(num_gt, image_size, device)),
                    gt_classes=torch.zeros(num_gt, dtype=torch.int64, device=device))]
    boxes = random_gt_boxes(_ROI_PROPOSALS, image_size, device, seed=-1)  # not the GT's seed
    proposals = [Instances(image_size, proposal_boxes=Boxes(boxes), objectness_logits=torch.zeros(len(boxes), device=device))]

    def fn():
        roi_heads.label_and_sample_proposals(proposals, gt)

    meter = run_interleaved({"roi": fn}, device, args.iters, max(args.warmup, 1))["roi"]
    return {"task": "rpn_targets", "stage": "label_and_sample_proposals", "num_gt": num_gt,
            "image_size": list(image_size),
            "num_proposals": _ROI_PROPOSALS + (num_gt if cfg.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT else 0),
            "device": args.device, **meter.result(), **process_memory(device)}


def _rpn_targets_case(stage: str, num_gt: str, args) -> Dict:
    """One case of the rpn_targets task: the config's RPN on random features of one image, or its ROI
    heads' proposal matching."""
    import torch

    if stage == "label_and_sample_proposals":
        return _roi_targets_case(int(num_gt), args)

    from d2mask.modeling import build_backbone, build_proposal_generator
    from d2mask.structures import Boxes, ImageList, Instances

    num_gt = int(num_gt)
    device = torch.device(args.device)
    cfg = load_cfg(args)
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    rpn = build_proposal_generator(cfg, shapes).to(device).train()
    torch.manual_seed(0)
    h, w = args.image_size
    divisor = max(backbone.size_divisibility, 1)
    ph, pw = -(-h // divisor) * divisor, -(-w // divisor) * divisor  # padded like an ImageList
    features = {  # each level ceil(padded size / stride), as strided convolutions and pooling give
        name: torch.randn(1, shapes[name].channels, -(-ph // shapes[name].stride), -(-pw // shapes[name].stride),
                          device=device)
        for name in rpn.in_features
    }
    images = ImageList(torch.zeros(1, 3, ph, pw, device=device), [(h, w)])
    gt = [Instances((h, w), gt_boxes=Boxes(random_gt_boxes(num_gt, (h, w), device)))]
    anchors = rpn.anchor_generator([features[f] for f in rpn.in_features])

    if stage == "label_and_sample_anchors":
        def fn():
            rpn.label_and_sample_anchors(anchors, gt)
    elif stage == "rpn_forward_backward":
        def fn():
            rpn.zero_grad(set_to_none=True)
            _, losses = rpn(images, features, gt)
            sum(losses.values()).backward()
    else:
        raise ValueError(f"unknown rpn_targets stage {stage!r}")
    meter = run_interleaved({stage: fn}, device, args.iters, max(args.warmup, 1))[stage]
    return {"task": "rpn_targets", "stage": stage, "num_gt": num_gt, "image_size": [h, w],
            "num_anchors": sum(len(a) for a in anchors), "device": args.device,
            **meter.result(), **process_memory(device)}


# How a subprocess runs one case of a task: fn(*case_strings, args) -> dict.
CASES: Dict[str, Callable] = {
    "train": lambda num_gt, args: _model_case("train", num_gt, args),
    "inference": lambda num_gt, args: _model_case("inference", num_gt, args),
    "data": _data_case,
    "rpn_targets": _rpn_targets_case,
    "coco_eval": coco_eval_case,
    "export": export_case,
}

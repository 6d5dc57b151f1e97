"""demo/demo.py with Detectron2's flags: images by name and glob, a generated video, the webcam's
argument checks. An untrained tiny model with --confidence-threshold 0 has detections to draw."""
import os

import cv2
import numpy as np
import pytest

from tests.common import REPO, load_script

CONFIG = os.path.join(REPO, "configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml")
OPTS = ["--opts", "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
        "MODEL.RPN.POST_NMS_TOPK_TEST", "20"]


@pytest.fixture
def demo(tmp_path, monkeypatch):
    monkeypatch.setenv("D2MASK_DATASETS", str(tmp_path / "datasets"))
    return load_script("demo/demo.py")


def _image(seed, h=48, w=64):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_images_by_glob_are_drawn_into_the_output_directory(demo, tmp_path):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"in{i}.png"), _image(i))
    written = demo.main(["--config-file", CONFIG, "--input", str(tmp_path / "in*.png"), "--output",
                         str(tmp_path / "vis"), "--confidence-threshold", "0.0", *OPTS])
    assert written == [str(tmp_path / "vis" / "in0.png"), str(tmp_path / "vis" / "in1.png")]
    for i, path in enumerate(written):
        drawn = cv2.imread(path)
        assert drawn.shape == (48, 64, 3) and not np.array_equal(drawn, _image(i))  # detections drawn


def test_one_image_to_one_file_and_the_threshold_reaches_the_model(demo, tmp_path):
    cv2.imwrite(str(tmp_path / "in.png"), _image(0))
    (path,) = demo.main(["--config-file", CONFIG, "--input", str(tmp_path / "in.png"), "--output",
                         str(tmp_path / "out.jpg"), "--confidence-threshold", "0.7", *OPTS])
    assert path == str(tmp_path / "out.jpg") and cv2.imread(path).shape == (48, 64, 3)
    cfg = demo.setup_cfg(demo.get_parser().parse_args(["--config-file", CONFIG, "--confidence-threshold", "0.7"]))
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.7 and cfg.MODEL.RETINANET.SCORE_THRESH_TEST == 0.7


def test_video_frames_are_drawn_into_a_video(demo, tmp_path):
    source = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(source, cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48), True)
    for i in range(3):
        writer.write(_image(i))
    writer.release()
    (path,) = demo.main(["--config-file", CONFIG, "--video-input", source, "--output", str(tmp_path / "out.avi"),
                         "--confidence-threshold", "0.0", *OPTS])
    video = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames.append(frame)
    video.release()
    assert len(frames) == 3 and all(f.shape == (48, 64, 3) for f in frames)


@pytest.mark.parametrize("flags, message", [
    (["--webcam", "--output", "x.png"], "--output is not supported with --webcam"),
    (["--webcam", "--input", "a.png"], "exactly one of --input, --video-input and --webcam (got --input, --webcam)"),
    ([], "exactly one of --input, --video-input and --webcam (got none)"),
])
def test_source_flags_are_checked(demo, flags, message, capsys):
    with pytest.raises(SystemExit) as e:
        demo.main(["--config-file", CONFIG, *flags])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_an_unreadable_video_is_one_line(demo, tmp_path):
    with pytest.raises(FileNotFoundError, match="Cannot open the video .*nothing.mp4"):
        demo.main(["--config-file", CONFIG, "--video-input", str(tmp_path / "nothing.mp4"), *OPTS])


@pytest.mark.parametrize("config, summary", [
    ("configs/Shapes/semantic_R_18_FPN_shapes.yaml", "classes"),
    ("configs/Shapes/panoptic_fpn_R_18_shapes.yaml", "segments"),
])
def test_semantic_and_panoptic_models_are_drawn(demo, tmp_path, capsys, config, summary):
    cv2.imwrite(str(tmp_path / "in.png"), _image(0))
    # The untrained panoptic model's instances all become segments (its detections score ~1/4).
    opts = OPTS + ["MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", "0.0"]
    (path,) = demo.main(["--config-file", os.path.join(REPO, config), "--input", str(tmp_path / "in.png"),
                         "--output", str(tmp_path / "out.png"), "--confidence-threshold", "0.0", *opts])
    assert summary in capsys.readouterr().out
    drawn = cv2.imread(path)
    assert drawn.shape == (48, 64, 3) and not np.array_equal(drawn, _image(0))  # the segments tinted


def test_the_instance_mode_reaches_the_drawing(demo):
    from d2mask.utils.visualizer import ColorMode

    # nothing scores above 1: in IMAGE_BW the whole image is grey
    cfg = demo.setup_cfg(demo.get_parser().parse_args(["--config-file", CONFIG, "--confidence-threshold", "1.0", *OPTS]))
    predictions, drawing = demo.VisualizationDemo(cfg, instance_mode=ColorMode.IMAGE_BW).run_on_image(_image(0))
    drawn = drawing.get_image()
    assert len(predictions["instances"]) == 0 and drawn.shape == (48, 64, 3)
    assert (drawn[:, :, 0] == drawn[:, :, 1]).all() and (drawn[:, :, 1] == drawn[:, :, 2]).all()

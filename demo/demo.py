#!/usr/bin/env python
"""Runs a model on images, a video or a webcam and draws its detections, with Detectron2's demo flags.

    python demo/demo.py --config-file configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml \
        --input "photos/*.jpg" --output vis/ \
        --opts MODEL.WEIGHTS detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x/137260431/model_final_a54504.pkl
    python demo/demo.py --config-file CFG --video-input clip.mp4 --output clip_vis.mp4 --opts MODEL.WEIGHTS W
    python demo/demo.py --config-file CFG --webcam --opts MODEL.WEIGHTS W    # Esc closes the window

Without --output the drawings are shown in an OpenCV window instead of saved.
"""
import argparse
import glob
import os
import sys
import time
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from d2mask.config import CfgNode, ConfigError, load_config
from d2mask.data import MetadataCatalog
from d2mask.data.detection_utils import read_image
from d2mask.engine import DefaultPredictor, report_user_errors
from d2mask.utils.video_visualizer import VideoVisualizer
from d2mask.utils.visualizer import ColorMode, VisImage, Visualizer

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository's projects

WINDOW_NAME = "d2mask demo"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a YAML config")
    parser.add_argument("--webcam", action="store_true", help="take inputs from the webcam")
    parser.add_argument("--video-input", help="path to a video file")
    parser.add_argument("--input", nargs="+", help="image files, or one glob pattern such as 'directory/*.jpg'")
    parser.add_argument("--output", help="a file or directory to save the drawings in; without it they are shown "
                                         "in an OpenCV window")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="lowest score of a drawn instance")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    sources = [flag for flag, given in (("--input", args.input), ("--video-input", args.video_input),
                                        ("--webcam", args.webcam)) if given]
    if len(sources) != 1:
        parser.error(f"give exactly one of --input, --video-input and --webcam (got {', '.join(sources) or 'none'})")
    if args.webcam and args.output:
        parser.error("--output is not supported with --webcam: the drawings are shown in a window")
    if not 0.0 <= args.confidence_threshold <= 1.0:
        parser.error(f"--confidence-threshold must be in [0, 1], got {args.confidence_threshold}")


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    cfg = load_config(args.config_file, args.opts)
    # the models' own score thresholds, so that low-scoring instances are not even computed
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.freeze()
    return cfg


class VisualizationDemo:
    """A `DefaultPredictor` and the drawing of its outputs (Detectron2's demo/predictor.py class)."""

    def __init__(self, cfg: CfgNode, instance_mode: ColorMode = ColorMode.IMAGE):
        """
        Args:
            instance_mode: how instances are coloured (`ColorMode.IMAGE`, `SEGMENTATION`, `IMAGE_BW`).
        """
        self.predictor = DefaultPredictor(cfg)
        self.metadata = self.predictor.metadata or MetadataCatalog.get("__unused")
        self.instance_mode = instance_mode

    def run_on_image(self, image: np.ndarray) -> Tuple[Dict, VisImage]:
        """(predictions, drawing) for a BGR image."""
        predictions = self.predictor(image)
        return predictions, _draw(Visualizer(image[:, :, ::-1], self.metadata, instance_mode=self.instance_mode),
                                  predictions)

    def run_on_video(self, video: cv2.VideoCapture) -> Iterator[np.ndarray]:
        """The BGR drawing of each frame; an instance keeps its colour from frame to frame."""
        video_visualizer = VideoVisualizer(self.metadata, self.instance_mode)
        while video.isOpened():
            ok, frame = video.read()
            if not ok:
                break
            drawing = _draw(video_visualizer, self.predictor(frame), np.ascontiguousarray(frame[:, :, ::-1]))
            yield drawing.get_image()[:, :, ::-1]


def _draw(visualizer, predictions: Dict, *frame: np.ndarray) -> VisImage:
    """Draws a model's panoptic segmentation, else its semantic segmentation, else its instances, with a
    `Visualizer` or a `VideoVisualizer` (which takes the frame first)."""
    if "panoptic_seg" in predictions:
        panoptic_seg, segments_info = predictions["panoptic_seg"]
        return visualizer.draw_panoptic_seg(*frame, panoptic_seg.cpu(), segments_info)
    if "sem_seg" in predictions:
        return visualizer.draw_sem_seg(*frame, predictions["sem_seg"].argmax(dim=0).cpu())
    return visualizer.draw_instance_predictions(*frame, predictions["instances"].to("cpu"))


def _summary(predictions: Dict) -> str:
    """What a model found in one image: its instances, or its segments."""
    if "panoptic_seg" in predictions:
        return f"{len(predictions['panoptic_seg'][1])} segments"
    if "instances" in predictions:
        return f"{len(predictions['instances'])} instances"
    return f"{len(predictions['sem_seg'].argmax(dim=0).unique())} classes"


def _expand_inputs(inputs: List[str]) -> List[str]:
    if len(inputs) == 1:
        inputs = sorted(glob.glob(os.path.expanduser(inputs[0]))) or inputs
    return inputs


def _output_path(output: str, input_path: str, several: bool) -> str:
    if os.path.isdir(output) or several:
        os.makedirs(output, exist_ok=True)
        return os.path.join(output, os.path.basename(input_path))
    return output


def _run_on_images(demo: VisualizationDemo, args: argparse.Namespace) -> List[str]:
    paths = _expand_inputs(args.input)
    written = []
    for path in paths:
        image = read_image(path, "BGR", max_pixels=demo.predictor.cfg.INPUT.MAX_IMAGE_PIXELS)
        start = time.perf_counter()
        predictions, drawing = demo.run_on_image(image)
        bgr = drawing.get_image()[:, :, ::-1]
        print(f"{path}: {_summary(predictions)} in {time.perf_counter() - start:.2f}s")
        if args.output:
            target = _output_path(args.output, path, len(paths) > 1)
            if not cv2.imwrite(target, bgr):
                raise ConfigError(f"Could not write {target}: --output must be a directory or an image file name")
            written.append(target)
        else:
            cv2.imshow(WINDOW_NAME, bgr)
            if cv2.waitKey(0) == 27:  # Esc
                break
    return written


def _run_on_video(demo: VisualizationDemo, args: argparse.Namespace) -> List[str]:
    video = cv2.VideoCapture(args.video_input)
    if not video.isOpened():
        raise FileNotFoundError(f"Cannot open the video {args.video_input} (missing, or a format OpenCV cannot read)")
    width, height = int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    writer, target = None, None
    if args.output:
        target = _output_path(args.output, args.video_input, several=False)
        fourcc = "MJPG" if target.lower().endswith(".avi") else "mp4v"
        writer = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height), True)
        if not writer.isOpened():
            raise ConfigError(f"Could not write the video {target}: give --output a .mp4 or .avi file name")
    try:
        for frame in demo.run_on_video(video):
            if writer is not None:
                writer.write(frame)
            else:
                cv2.imshow(os.path.basename(args.video_input), frame)
                if cv2.waitKey(1) == 27:
                    break
    finally:
        video.release()
        if writer is not None:
            writer.release()
    return [target] if target else []


def _run_on_webcam(demo: VisualizationDemo) -> List[str]:
    camera = cv2.VideoCapture(0)
    if not camera.isOpened():
        raise FileNotFoundError("Cannot open the webcam (OpenCV device 0)")
    try:
        for frame in demo.run_on_video(camera):
            cv2.imshow(WINDOW_NAME, frame)
            if cv2.waitKey(1) == 27:
                break
    finally:
        camera.release()
        cv2.destroyAllWindows()
    return []


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Returns the files written."""
    parser = get_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    demo = VisualizationDemo(setup_cfg(args))
    if args.input:
        return _run_on_images(demo, args)
    if args.video_input:
        return _run_on_video(demo, args)
    return _run_on_webcam(demo)


if __name__ == "__main__":
    report_user_errors(main, sys.argv[1:])

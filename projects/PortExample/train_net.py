#!/usr/bin/env python
"""Trains or evaluates the PortExample model, the way a Detectron2 project's train_net.py does.

    python projects/PortExample/train_net.py --config-file projects/PortExample/configs/mask_rcnn_SE_R_18_FPN_shapes.yaml
"""
import os

from d2mask.checkpoint import DetectionCheckpointer
from d2mask.config import get_cfg
from d2mask.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from d2mask.evaluation import COCOEvaluator
from d2mask.projects.port_example import add_port_example_config


class Trainer(DefaultTrainer):
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, output_dir=output_folder)


def setup(args):
    cfg = get_cfg()
    add_port_example_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )

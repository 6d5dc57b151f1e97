"""The command line and the start-up that every training/evaluation script shares.

    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, args=(args,))

and in `main`: `cfg = ...; default_setup(cfg, args)`, then `DefaultTrainer(cfg)` (re-exported here,
where Detectron2 users import it from).
"""
import argparse
import logging
import os
import platform
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import yaml

from ..checkpoint import DetectionCheckpointer
from ..config import CfgNode, ConfigError, LazyConfig, import_modules
from ..data import MetadataCatalog
from ..data.datasets import set_datasets_root
from ..data.detection_utils import SUPPORTED_IMAGE_FORMATS, build_augmentation
from ..modeling import build_model
from ..utils import comm
from ..utils.atomic_write import atomic_write
from ..utils.env import seed_all_rng
from ..utils.events import EventWriter
from ..utils.logger import setup_logger
from .output_dir import check_eval_weights, check_output_dir, check_resumed_config
from .rendezvous import DEFAULT_JOIN_TIMEOUT
from .training import build_default_writers
from .validation import validate_config, validate_lazy_config

__all__ = [
    "default_argument_parser",
    "default_setup",
    "check_run_request",
    "DefaultPredictor",
    "DefaultTrainer",
    "create_ddp_model",
    "default_writers",
]

# Loggers set up by default_setup: d2mask itself, fvcore (its checkpointer), and user projects
# (code in projects/ logging with logging.getLogger(__name__)).
_LOGGERS = ("d2mask", "fvcore", "projects")


class _ArgumentParser(argparse.ArgumentParser):
    """Takes flags anywhere on the line, also after the `KEY VALUE` overrides.

    argparse alone would read everything after the first override as overrides, so a `--resume`
    at the end would silently become a config key. Here every token naming a flag (its full name or,
    as argparse allows, an unambiguous prefix of it) is a flag, taking as many values as its `nargs`
    says; another token starting with "--" is an error; the remaining tokens are the overrides.
    """

    def _action(self, token: str) -> Optional[argparse.Action]:
        """The action a flag token names (`--num-gpus`, `--num-gpus=2`, `--num-g`), or None."""
        name = token.split("=", 1)[0] if token.startswith("--") else token
        if name in self._option_string_actions:
            return self._option_string_actions[name]
        if not (self.allow_abbrev and name.startswith("--")):
            return None
        matches = {a for option, a in self._option_string_actions.items() if option.startswith(name)}
        return matches.pop() if len(matches) == 1 else None

    @staticmethod
    def _num_values(action: argparse.Action, following: Sequence[str]) -> int:
        """How many of the `following` tokens are values of `action`, as argparse counts them."""
        is_value = [not t.startswith("-") or _is_number(t) for t in following]
        nargs = action.nargs
        if nargs is None:
            return 1
        if isinstance(nargs, int):
            return nargs
        if nargs == argparse.REMAINDER:
            return len(following)
        available = next((i for i, v in enumerate(is_value) if not v), len(following))
        if nargs == argparse.OPTIONAL:
            return min(available, 1)
        return available  # "*" and "+": every value up to the next flag

    def _split(self, argv: Sequence[str]) -> Tuple[List[str], List[str]]:
        flags: List[str] = []
        overrides: List[str] = []
        tokens = list(argv)
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if token == "--":  # argparse's end of the flags: the rest are overrides
                overrides.extend(tokens[i + 1:])
                break
            action = self._action(token) if token.startswith("-") else None
            if action is None and token.startswith("--"):
                self.error(
                    f"unrecognized flag '{token}'"
                    + (" among the config overrides" if overrides else "")
                    + f". Known flags: {', '.join(sorted(a for a in self._option_string_actions if a.startswith('--')))}"
                )
            if action is None:
                overrides.append(token)
                i += 1
                continue
            count = 0 if "=" in token else self._num_values(action, tokens[i + 1:])
            if count > len(tokens) - i - 1 or (count == 0 and action.nargs == argparse.ONE_OR_MORE):
                needed = action.nargs if isinstance(action.nargs, int) else 1
                self.error(f"flag '{token}' needs {'a value' if needed == 1 else f'{needed} values'}")
            flags.extend(tokens[i:i + 1 + count])
            i += 1 + count
        return flags, overrides

    def parse_args(self, args: Optional[Sequence[str]] = None, namespace=None) -> argparse.Namespace:
        flags, overrides = self._split(sys.argv[1:] if args is None else args)
        ns = super().parse_args(flags, namespace)
        ns.opts = overrides
        return ns


def _is_number(token: str) -> bool:
    """A negative number is a value ("SEED -1", "--offset -3"), not a flag."""
    try:
        float(token)
    except ValueError:
        return False
    return True


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of tools/train_net.py; scripts may add their own flags to it.

    Returns:
        A parser whose `parse_args()` gives config_file, resume, eval_only, num_gpus, num_machines,
        machine_rank, dist_url and opts (the `KEY VALUE` / `KEY=VALUE` config overrides).
    """
    examples = f"""Examples:

One process (GPU if available, else CPU):
    $ {sys.argv[0]} --config-file cfg.yaml SOLVER.IMS_PER_BATCH 2 SOLVER.BASE_LR 0.0025

Evaluate a trained model:
    $ {sys.argv[0]} --config-file cfg.yaml --eval-only MODEL.WEIGHTS /path/to/model_final.pth

Resume an interrupted run from OUTPUT_DIR/last_checkpoint:
    $ {sys.argv[0]} --config-file cfg.yaml --resume

Two machines of 8 GPUs (run on each, R = 0 or 1, HOST = machine 0):
    $ {sys.argv[0]} --config-file cfg.yaml --num-gpus 8 --num-machines 2 --machine-rank R --dist-url tcp://HOST:PORT
"""
    parser = _ArgumentParser(
        epilog=epilog or examples, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", default="", metavar="FILE",
                        help="path to the config file (YAML; a Python config for tools/lazyconfig_train_net.py)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last_checkpoint if it exists")
    parser.add_argument(
        "--start-over",
        action="store_true",
        help="train anew in an OUTPUT_DIR holding an earlier run, moving its files into a subdirectory",
    )
    parser.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS on DATASETS.TEST")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes (GPUs) per machine")
    parser.add_argument("--num-machines", type=int, default=1, help="machines in the job")
    parser.add_argument("--machine-rank", type=int, default=0, help="this machine's index (0 = the one at --dist-url)")
    parser.add_argument(
        "--dist-url",
        default="auto",
        help="rendezvous of the processes: tcp://HOST:PORT of machine 0, or 'auto' (a free port, one machine)",
    )
    parser.add_argument(
        "--join-timeout",
        type=float,
        default=DEFAULT_JOIN_TIMEOUT.total_seconds(),
        metavar="SECONDS",
        help="how long the processes of a job wait for each other to join at --dist-url (each logs whom it "
        "waits for every minute)",
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides: for a YAML config 'KEY VALUE' pairs or 'KEY=VALUE' items (SOLVER.MAX_ITER 100), "
        "for a Python config 'key.path=VALUE' items (train.max_iter=100)",
    )
    return parser


def _environment() -> str:
    lines = [f"Python {sys.version.split()[0]} on {platform.platform()}", f"PyTorch {torch.__version__}"]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        lines.append(f"CUDA {torch.version.cuda}, GPUs: {', '.join(names)}")
    else:
        lines.append(f"No GPU; {torch.get_num_threads()} CPU threads")
    return "\n".join(lines)


def check_run_request(
    weights: str, output_dir: str, args: argparse.Namespace, config: dict, lazy: bool = False
) -> Optional[str]:
    """Refuses, before anything is written, a run that would silently do the wrong thing: an
    evaluation without weights, a new training run into another run's OUTPUT_DIR, a resumed run
    whose model changed (see `d2mask.engine.output_dir`).

    Args:
        config: the run's config as plain nested dicts, as saved in OUTPUT_DIR/config.yaml.
        lazy: the config is a Python config (keys `model.*`, `train.init_checkpoint`, ...).

    Returns:
        A line to log once logging is set up (where `--start-over` moved the earlier run), or None.
    """
    resume = getattr(args, "resume", False)
    keys = ("train.init_checkpoint", "train.output_dir") if lazy else ("MODEL.WEIGHTS", "OUTPUT_DIR")
    if getattr(args, "eval_only", False):
        check_eval_weights(weights, output_dir, resume=resume, key=keys[0])
        return None
    moved_to = check_output_dir(output_dir, resume=resume, start_over=getattr(args, "start_over", False), key=keys[1])
    if resume:
        if lazy:
            check_resumed_config(output_dir, config, model_keys="model.", free_keys=(), weights_key=keys[0])
        else:
            check_resumed_config(output_dir, config)
    return f"--start-over: moved the files of the earlier run in {output_dir} to {moved_to}" if moved_to else None


def _setting(cfg: Any, yaml_key: str, python_key: str, default: Any = None) -> Any:
    """The value of `yaml_key` in a YAML config (CfgNode) or of `python_key` in a Python config."""
    node = cfg
    for name in (yaml_key if isinstance(cfg, CfgNode) else python_key).split("."):
        if name not in node:
            return default
        node = node[name]
    return node


def _plain_config(cfg: Any) -> dict:
    """`cfg` as the nested dicts its config.yaml holds (a Python config without its values that have
    no YAML form, which config.yaml leaves out too)."""
    if isinstance(cfg, CfgNode):
        return yaml.safe_load(cfg.dump())
    return yaml.safe_load(LazyConfig.to_yaml(cfg, dropped=[]))


def _save_config(cfg: Any, path: str) -> List[str]:
    """Writes `cfg` to `path`; returns the keys of a Python config left out (values with no YAML form)."""
    dropped: List[str] = []
    if isinstance(cfg, CfgNode):
        with atomic_write(path) as f:
            f.write(cfg.dump())
    else:
        LazyConfig.save(cfg, path, dropped=dropped)
    return dropped


def default_writers(output_dir: str, max_iter: Optional[int] = None) -> List[EventWriter]:
    """Detectron2's name and signature for `build_default_writers` (console lines, metrics.json and
    TensorBoard files in `output_dir`, which is created), as its lazyconfig_train_net.py calls it.
    `max_iter` (the last iteration + 1) gives the console lines an ETA; None gives none."""
    os.makedirs(output_dir, exist_ok=True)
    return build_default_writers(output_dir, max_iter)


def default_setup(cfg: Any, args: Optional[argparse.Namespace] = None) -> None:
    """Prepares a process for a run of `cfg`, a YAML config (CfgNode) or a Python config (whose keys
    are given in brackets).

    Creates OUTPUT_DIR (train.output_dir); sets up logging (rank 0 to the console, every rank to
    OUTPUT_DIR/log.txt or log.txt.rank<R>); logs the environment, the arguments and the config file;
    writes the full merged config to OUTPUT_DIR/config.yaml (rank 0); seeds every generator with
    SEED (train.seed) + rank, or a drawn, logged seed when it is < 0; sets cuDNN benchmarking
    (CUDNN_BENCHMARK, train.cudnn_benchmark); passes DATASETS.ROOT (train.datasets_root) to
    `set_datasets_root`; imports the IMPORTS modules (YAML configs; a Python config imports its own).
    With `args`, first refuses a run that `check_run_request` refuses.

    Raises:
        ConfigError: an invalid config value (`validate_config`, `validate_lazy_config`), before
            anything is written.
    """
    lazy = not isinstance(cfg, CfgNode)
    validate_lazy_config(cfg) if lazy else validate_config(cfg)
    output_dir = _setting(cfg, "OUTPUT_DIR", "train.output_dir", "")
    rank = comm.get_rank()
    moved = None
    if args is not None and comm.is_main_process():
        weights = _setting(cfg, "MODEL.WEIGHTS", "train.init_checkpoint", "")
        moved = check_run_request(weights, output_dir, args, _plain_config(cfg), lazy=lazy)
    if output_dir and comm.is_main_process():
        os.makedirs(output_dir, exist_ok=True)
    for name in _LOGGERS:
        setup_logger(output_dir or None, distributed_rank=rank, name=name)
    logger = logging.getLogger("d2mask")
    if moved:
        logger.warning(moved)
    logger.info(f"Rank of this process: {rank}. World size: {comm.get_world_size()}")
    logger.info(f"Environment:\n{_environment()}")
    if args is not None:
        logger.info(f"Command line arguments: {args}")
        config_file = getattr(args, "config_file", "")
        if config_file:
            with open(config_file, "r", encoding="utf-8") as f:
                logger.info(f"Contents of config file {config_file}:\n{f.read()}")
    if output_dir and comm.is_main_process():
        path = os.path.join(output_dir, "config.yaml")
        dropped = _save_config(cfg, path)
        if dropped:  # objects built in a Python config; the run itself does not need the dump
            logger.warning(f"Config saved to {path} without the values that have no YAML form: {'; '.join(dropped)}")
        else:
            logger.info(f"Full config saved to {path}")

    seed = _setting(cfg, "SEED", "train.seed", -1)
    seed_all_rng(None if seed < 0 else seed + rank)
    torch.backends.cudnn.benchmark = _setting(cfg, "CUDNN_BENCHMARK", "train.cudnn_benchmark", False)
    set_datasets_root(_setting(cfg, "DATASETS.ROOT", "train.datasets_root", ""))
    if isinstance(cfg, CfgNode):
        import_modules(cfg.IMPORTS, source="the config's IMPORTS")


class DefaultPredictor:
    """The model of a config, with its MODEL.WEIGHTS loaded, run on one image at a time:

        predictor = DefaultPredictor(cfg)
        outputs = predictor(cv2.imread("input.jpg"))  # {"instances": Instances at the image's size}

    The image is resized as in evaluation (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST), given in the
    model's INPUT.FORMAT, and the predictions are scaled back to the original size. For batches or a
    whole dataset, build the model and a test data loader instead.

    Attributes:
        cfg: a frozen copy of the config.
        model: the model, in eval mode.
        metadata: the `Metadata` of DATASETS.TEST[0], if any (class names for drawing).
        aug: the resize augmentation.
        input_format: INPUT.FORMAT.
    """

    def __init__(self, cfg: CfgNode):
        if cfg.INPUT.FORMAT not in SUPPORTED_IMAGE_FORMATS:
            raise ConfigError(f"INPUT.FORMAT must be one of {SUPPORTED_IMAGE_FORMATS}, got {cfg.INPUT.FORMAT!r}")
        self.cfg = cfg.clone()
        self.cfg.freeze()
        self.model = build_model(self.cfg)
        self.model.eval()
        self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0]) if len(cfg.DATASETS.TEST) else None
        DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        (self.aug,) = build_augmentation(self.cfg, is_train=False)
        self.input_format = cfg.INPUT.FORMAT

    def __call__(self, original_image: np.ndarray) -> Dict[str, Any]:
        """
        Args:
            original_image: `ndarray[H, W, 3]` uint8 in BGR order (as cv2.imread gives).

        Returns:
            The model's output for this image, e.g. {"instances": Instances of image size (H, W)}.
        """
        if original_image.ndim != 3 or original_image.shape[2] != 3:
            raise ValueError(f"DefaultPredictor takes one BGR image of shape (H, W, 3), got shape "
                             f"{tuple(original_image.shape)}")
        if self.input_format == "RGB":
            original_image = original_image[:, :, ::-1]
        elif self.input_format == "L":
            original_image = cv2.cvtColor(original_image, cv2.COLOR_BGR2GRAY)[:, :, None]
        height, width = original_image.shape[:2]
        image = self.aug.get_transform(original_image).apply_image(original_image)
        # (H, W, C) -> (C, H, W); "height"/"width" make the model scale its outputs to the original image
        inputs = {"image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))), "height": height,
                  "width": width}
        with torch.no_grad():
            return self.model([inputs])[0]


from .default_trainer import DefaultTrainer, create_ddp_model  # noqa: E402  (Detectron2's import path)

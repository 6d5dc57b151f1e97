"""Defaults of the optimiser, learning-rate schedule and checkpointing."""
from ..key_docs import define


def add_solver_defaults(cfg) -> None:
    define(cfg, "SOLVER.OPTIMIZER", "SGD", "Optimiser: SGD or AdamW.")
    define(cfg, "SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR", "WarmupMultiStepLR or WarmupCosineLR.")
    define(cfg, "SOLVER.MAX_ITER", 40000, "Training iterations.")
    define(cfg, "SOLVER.BASE_LR", 0.001, "Learning rate after warm-up.")
    define(cfg, "SOLVER.BASE_LR_END", 0.0, "Final learning rate of WarmupCosineLR.")
    define(cfg, "SOLVER.MOMENTUM", 0.9, "SGD momentum.")
    define(cfg, "SOLVER.NESTEROV", False, "Use Nesterov momentum.")
    define(cfg, "SOLVER.WEIGHT_DECAY", 0.0001, "Weight decay of all parameters but those below.")
    define(cfg, "SOLVER.WEIGHT_DECAY_NORM", 0.0, "Weight decay of normalisation layers' parameters.")
    define(cfg, "SOLVER.WEIGHT_DECAY_BIAS", None, "Weight decay of biases; None means SOLVER.WEIGHT_DECAY.")
    define(cfg, "SOLVER.BIAS_LR_FACTOR", 1.0, "Learning-rate multiplier of biases.")
    define(cfg, "SOLVER.GAMMA", 0.1, "Learning-rate factor at each of SOLVER.STEPS.")
    define(cfg, "SOLVER.STEPS", (30000,), "Iterations at which WarmupMultiStepLR multiplies the rate by GAMMA.")
    define(cfg, "SOLVER.WARMUP_FACTOR", 1.0 / 1000, "Learning-rate factor at the start of warm-up.")
    define(cfg, "SOLVER.WARMUP_ITERS", 1000, "Warm-up iterations.")
    define(cfg, "SOLVER.WARMUP_METHOD", "linear", "Warm-up shape: linear or constant.")
    define(cfg, "SOLVER.CHECKPOINT_PERIOD", 5000, "Save a checkpoint every this many iterations.")
    define(cfg, "SOLVER.IMS_PER_BATCH", 16, "Images per iteration summed over all processes.")
    define(cfg, "SOLVER.REFERENCE_WORLD_SIZE", 0, "World size the schedule was written for; > 0 rescales batch, LR and schedule to the actual one.")
    define(cfg, "SOLVER.CLIP_GRADIENTS.ENABLED", False, "Clip gradients before each step.")
    define(cfg, "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "value", "value (clamp each element) or norm (rescale each parameter's gradient).")
    define(cfg, "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 1.0, "Maximum gradient value or norm.")
    define(cfg, "SOLVER.CLIP_GRADIENTS.NORM_TYPE", 2.0, "p of the p-norm used by norm clipping.")
    define(cfg, "SOLVER.AMP.ENABLED", False, "Train with automatic mixed precision (CUDA).")

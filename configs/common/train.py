"""Settings of the run itself, read by tools/lazyconfig_train_net.py (not built by `instantiate`).

Each key has the meaning of the YAML key named beside it.
"""
import torch

train = dict(
    output_dir="./output",  # OUTPUT_DIR
    init_checkpoint="",  # MODEL.WEIGHTS: a path or URL to start from; "" starts from scratch
    max_iter=90000,  # SOLVER.MAX_ITER
    eval_period=5000,  # TEST.EVAL_PERIOD: evaluate every this many iterations and at the end; 0: at the end
    val_loss_period=0,  # TEST.VAL_LOSS_PERIOD: losses on dataloader.test's first dataset; 0: never
    best_metric="",  # TEST.BEST_METRIC: e.g. "segm/AP", kept as model_best.pth; "": none
    best_metric_mode="max",  # TEST.BEST_METRIC_MODE
    early_stop_patience=0,  # TEST.EARLY_STOP_PATIENCE: evaluations without a better best_metric; 0: never stop
    # SOLVER.MAX_EPOCHS and the counts in epochs (*_EPOCHS); > 0 replaces the counts in iterations
    max_epochs=0.0,
    steps_epochs=[],  # SOLVER.STEPS_EPOCHS: the lr_scheduler's milestones
    eval_period_epochs=0.0,  # TEST.EVAL_PERIOD_EPOCHS
    val_loss_period_epochs=0.0,  # TEST.VAL_LOSS_PERIOD_EPOCHS
    # SOLVER.REFERENCE_WORLD_SIZE: the schedule is for this many processes, rescaled to the actual
    # number (batch, learning rate, iteration counts); 0: used as it is
    reference_world_size=0,
    log_period=20,  # write metrics every this many iterations
    # SOLVER.CHECKPOINT_PERIOD, SOLVER.CHECKPOINTS_TO_KEEP: the arguments of hooks.PeriodicCheckpointer,
    # and nothing else, since Detectron2's scripts pass this dict to it as it is
    checkpointer=dict(period=5000, max_to_keep=0),
    checkpoint_period_epochs=0.0,  # SOLVER.CHECKPOINT_PERIOD_EPOCHS
    checkpoint_signals=["SIGTERM", "SIGINT"],  # SOLVER.CHECKPOINT_SIGNALS
    amp=dict(enabled=False, precision="float16"),  # SOLVER.AMP.*
    # SOLVER.CLIP_GRADIENTS.*: clip_type "value" clamps each element, "norm" rescales each parameter's gradient
    clip_gradients=dict(enabled=False, clip_type="value", clip_value=1.0, norm_type=2.0),
    max_nonfinite_skips=0,  # SOLVER.MAX_NONFINITE_SKIPS
    # DDP.FIND_UNUSED_PARAMETERS; fp16_compression: gradients exchanged in float16 (no YAML key)
    ddp=dict(find_unused_parameters=False, fp16_compression=False),
    device="cuda" if torch.cuda.is_available() else "cpu",  # MODEL.DEVICE
    seed=-1,  # SEED: < 0 draws a seed and logs it
    cudnn_benchmark=False,  # CUDNN_BENCHMARK
    datasets_root="",  # DATASETS.ROOT: cache directory of built-in datasets; "": $D2MASK_DATASETS or ~/.cache/d2mask
)

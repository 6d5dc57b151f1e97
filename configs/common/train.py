"""Settings of the run itself, read by tools/lazyconfig_train_net.py (not built by `instantiate`).

Each key has the meaning of the YAML key named beside it.
"""
import torch

train = dict(
    output_dir="./output",  # OUTPUT_DIR
    init_checkpoint="",  # MODEL.WEIGHTS: a path or URL to start from; "" starts from scratch
    max_iter=90000,  # SOLVER.MAX_ITER
    eval_period=5000,  # TEST.EVAL_PERIOD: evaluate every this many iterations and at the end; 0: at the end
    log_period=20,  # write metrics every this many iterations
    checkpointer=dict(period=5000, max_to_keep=0),  # SOLVER.CHECKPOINT_PERIOD, SOLVER.CHECKPOINTS_TO_KEEP
    amp=dict(enabled=False, precision="float16"),  # SOLVER.AMP.*
    # SOLVER.CLIP_GRADIENTS.*: clip_type "value" clamps each element, "norm" rescales each parameter's gradient
    clip_gradients=dict(enabled=False, clip_type="value", clip_value=1.0, norm_type=2.0),
    max_nonfinite_skips=0,  # SOLVER.MAX_NONFINITE_SKIPS
    ddp=dict(find_unused_parameters=False),  # DDP.FIND_UNUSED_PARAMETERS
    device="cuda" if torch.cuda.is_available() else "cpu",  # MODEL.DEVICE
    seed=-1,  # SEED: < 0 draws a seed and logs it
    cudnn_benchmark=False,  # CUDNN_BENCHMARK
)

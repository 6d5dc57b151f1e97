"""The export task of tools/benchmark.py: eager inference against the artefacts of `d2mask.export`
(TorchScript by tracing, torch.export, ONNX Runtime), on one image and the same random weights, in one
process, their runs interleaved."""
import statistics
import time
from typing import Any, Callable, Dict, List, Tuple

from .inputs import load_cfg
from .measure import process_memory, run_interleaved

# The export methods the task measures, in order; each is timed against "eager".
METHODS = ("tracing", "torch_export", "onnx")


def _exported_runs(model, image, methods: List[str]) -> Tuple[Dict[str, Callable[[], Any]], Dict[str, float]]:
    """Exports `detector_inference(model, image)` by each method.

    Returns:
        Per method, its artefact as a function of no arguments that runs it on `image` (checked to
        give the eager model's detections there), and the seconds the export took.
    """
    import io

    import torch

    from d2mask.export import export_onnx, export_torch_export, export_torchscript, output_names, verify_export

    runs, seconds = {}, {}
    for method in methods:
        start = time.perf_counter()
        if method == "tracing":
            traced, adapter = export_torchscript(model, image)
            run = lambda traced=traced: traced(image)  # noqa: E731
        elif method == "torch_export":
            program, adapter = export_torch_export(model, image)
            module = program.module()
            run = lambda module=module: module(image)  # noqa: E731
        else:
            import onnxruntime

            f = io.BytesIO()
            adapter = export_onnx(model, image, f)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()  # as many threads as torch uses
            session = onnxruntime.InferenceSession(f.getvalue(), options, providers=["CPUExecutionProvider"])
            feed, names = {"image": image.numpy()}, output_names(adapter)
            run = lambda session=session, names=names: session.run(names, feed)  # noqa: E731
        seconds[method] = time.perf_counter() - start
        with torch.no_grad():
            verify_export(run(), adapter, image)  # ExportError if the artefact differs from eager
        runs[method] = run
    return runs, seconds


def export_case(methods: str, args) -> Dict:
    """Eager inference and the artefacts of `methods` (comma-separated) on one `--image-size` image of
    random pixels, the model of the config with random weights (seed 0): times of the interleaved
    runs, and each method's ratio to eager."""
    import torch

    from d2mask.export import detector_inference
    from d2mask.modeling import build_model

    cfg = load_cfg(args)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    h, w = args.image_size
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        detections = len(detector_inference(model, image))
    methods = methods.split(",")
    runs, export_s = _exported_runs(model, image, methods)

    def step(run: Callable) -> Callable[[], None]:
        def fn():
            with torch.no_grad():
                run()

        return fn

    steps = {"eager": step(lambda: detector_inference(model, image))}
    steps.update({method: step(run) for method, run in runs.items()})
    meters = run_interleaved(steps, torch.device("cpu"), args.iters, args.warmup)
    result = {
        "task": "export", "config": args.config_file, "opts": args.opts, "device": args.device,
        "threads": torch.get_num_threads(), "image_size": [h, w], "iters": args.iters, "warmup": args.warmup,
        "detections": detections, "eager": meters["eager"].result(1),
    }
    eager_times = meters["eager"].times
    for method in methods:
        measured = meters[method].result(1)
        measured["export_s"] = export_s[method]
        measured["ratio"] = measured["median_s"] / result["eager"]["median_s"]
        # Each round ran every step back to back, under the same load from other processes.
        measured["ratio_paired_median"] = statistics.median(a / b for a, b in zip(measured["times_s"], eager_times))
        result[method] = measured
    result.update(process_memory(torch.device("cpu")))
    return result


def print_export(r: Dict) -> None:
    """One line for eager, one per export method with its ratio to eager."""
    eager = r["eager"]
    print(f"export: {r['config']} {' '.join(r['opts'])}, image {r['image_size'][0]}x{r['image_size'][1]}, "
          f"{r['detections']} detections, {r['threads']} threads", flush=True)
    print(f"  {'eager':12s} median {eager['median_s']:8.3f} s", flush=True)
    for method in METHODS:
        if method in r:
            m = r[method]
            print(f"  {method:12s} median {m['median_s']:8.3f} s  ratio to eager {m['ratio']:.2f} "
                  f"(paired {m['ratio_paired_median']:.2f})  export took {m['export_s']:.1f} s", flush=True)

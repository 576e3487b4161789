"""Deployment latency of V1, V2 and V3-Large (1.0 at 224, batch 1) in every runtime, in one run, against the
issue's targets. Writes docs/benchmarks/deploy.json and docs/performance.md and prints the table.

Rows:
- ``torch eager``: the model as trained, fp32 (the baseline of the predict target);
- ``predict jit`` / ``compile`` / ``onednn`` (fp32 and bf16): `mobilenet predict`'s fast path
  (:func:`mobilenet.export.fast.fast_inference_model`);
- ``<runtime> ours``: our exports (BN folded; ONNX with GlobalAveragePool; int8 with the V3 rewrite);
- ``<runtime> plain``: a plain export for reference, ``torch.onnx.export`` of the unfolded model (TorchScript
  exporter) and, for int8, onnxruntime's QDQ quantization of that graph as it is: what a user gets without
  this project's graph work. "Fastest runtime" in the targets is the fastest plain row.

Usage: python benchmarks/deploy.py [--threads N] [--models v1,v2,v3] [--min-seconds 1.5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import mobilenet
from mobilenet.cli.tables import format_table
from mobilenet.export.fast import fast_inference_model
from mobilenet.export.onnx_quant import quantize_onnx
from mobilenet.export.runtimes import load_runner
from mobilenet.fileio import atomic_write_text
from mobilenet.profiling.bench import BenchResult, BenchSettings, benchmark, environment, random_batch
from mobilenet.profiling.cost import cost_of
from mobilenet.profiling.runners import export_for, openvino_runner

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"v1": "mobilenet_v1_1.0_224", "v2": "mobilenet_v2_1.0_224", "v3": "mobilenet_v3_large_1.0_224"}
# Issue 4's table (2 cores, V1 1.0 at 224, batch 1), for comparison with this machine's plain rows.
ISSUE_V1_MS = {"onnxruntime fp32": 8.4, "openvino fp32": 9.3, "tflite fp32": 10.0, "openvino bf16": 5.1,
               "onnxruntime int8": 4.1, "tflite int8": 3.7, "openvino int8": 3.6}


def plain_onnx(model: torch.nn.Module, path: Path) -> Path:
    """The reference export: the unfolded eval model through torch.onnx's TorchScript exporter, opset 17."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(path), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["logits"])
    return path


def loaders(model: torch.nn.Module, scratch: Path, threads: int) -> dict[tuple[str, str, str], Callable]:
    """(runtime, variant, precision) -> a function that builds the runner (its cost is counted as memory)."""
    calibration = random_batch(8, 224, seed=1)

    def torch_run(module: Callable) -> Callable:
        return lambda batch: module(torch.from_numpy(batch))

    def eager() -> Callable:
        def run(batch: np.ndarray) -> torch.Tensor:
            with torch.inference_mode():
                return model(torch.from_numpy(batch))
        return run

    plain = plain_onnx(model, scratch / "plain.onnx")
    plain_int8 = quantize_onnx(plain, scratch / "plain_int8.onnx", calibration)
    ours = {(rt, p): export_for(model, rt, p, scratch / f"{rt}_{p}")[0]
            for rt, p in [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("tflite", "fp32"), ("tflite", "int8")]}
    table: dict[tuple[str, str, str], Callable] = {
        ("torch", "eager", "fp32"): eager,
        ("predict", "jit", "fp32"): lambda: torch_run(fast_inference_model(model, "jit")),
        ("predict", "compile", "fp32"): lambda: torch_run(fast_inference_model(model, "compile")),
        ("predict", "onednn", "fp32"): lambda: torch_run(fast_inference_model(model, "onednn")),
        ("predict", "onednn", "bf16"): lambda: torch_run(fast_inference_model(model, "onednn", precision="bf16")),
    }
    for precision in ("fp32", "int8"):
        plain_file = plain if precision == "fp32" else plain_int8
        table[("onnxruntime", "plain", precision)] = lambda f=plain_file: load_runner(f, "onnxruntime", threads)
        table[("openvino", "plain", precision)] = lambda f=plain_file: openvino_runner(f, threads, "fp32")
        table[("onnxruntime", "ours", precision)] = lambda f=ours[("onnxruntime", precision)]: load_runner(
            f, "onnxruntime", threads)
        table[("openvino", "ours", precision)] = lambda f=ours[("onnxruntime", precision)]: openvino_runner(
            f, threads, "fp32")
        table[("tflite", "ours", precision)] = lambda f=ours[("tflite", precision)]: load_runner(f, "tflite", threads)
    table[("openvino", "plain", "bf16")] = lambda: openvino_runner(plain, threads, "bf16")
    table[("openvino", "ours", "bf16")] = lambda: openvino_runner(ours[("onnxruntime", "fp32")], threads, "bf16")
    return table


def measure_model(name: str, threads: int, settings: BenchSettings, rounds: int) -> list[tuple[str, BenchResult]]:
    """Every row measured in ``rounds`` interleaved rounds, keeping each row's fastest median: two graphs that
    are the same up to op order differ by up to 10% from one measurement to the next on this machine."""
    torch.manual_seed(0)
    model = mobilenet.create_model(name).eval()
    mult_adds = cost_of(model.config).mult_adds
    best: dict[tuple[str, str, str], BenchResult] = {}
    with tempfile.TemporaryDirectory() as scratch:
        table = loaders(model, Path(scratch), threads)
        for _ in range(rounds):
            for (runtime, variant, precision), load in table.items():
                result = benchmark(load, model=name, runtime=runtime, precision=precision, batches=[1],
                                   resolution=224, mult_adds=mult_adds, threads=threads, settings=settings)[0]
                key = (runtime, variant, precision)
                if key not in best or result.timing.median < best[key].timing.median:
                    best[key] = result
                print(f"{name:30s} {runtime:12s} {variant:8s} {precision:5s} {result.timing.median * 1e3:7.2f} ms",
                      flush=True)
    return [(variant, best[(runtime, variant, precision)]) for runtime, variant, precision in table]


def verdicts(rows: list[tuple[str, BenchResult]]) -> dict[str, object]:
    def fastest(variant: str, precisions: tuple[str, ...], runtimes: tuple[str, ...]) -> BenchResult:
        return min((r for v, r in rows if v == variant and r.precision in precisions and r.runtime in runtimes),
                   key=lambda r: r.timing.median)

    exports = ("onnxruntime", "openvino", "tflite")
    ours_fp32, plain_fp32 = fastest("ours", ("fp32",), exports), fastest("plain", ("fp32",), exports)
    ours_int8, plain_int8 = fastest("ours", ("int8",), exports), fastest("plain", ("int8",), exports)
    eager = fastest("eager", ("fp32",), ("torch",)).timing.median
    predict_fp32 = min(r.timing.median for v, r in rows if r.runtime == "predict" and r.precision == "fp32")
    predict_bf16 = min(r.timing.median for v, r in rows if r.runtime == "predict" and r.precision == "bf16")
    return {
        "fp32_ratio": ours_fp32.timing.median / plain_fp32.timing.median,
        "fp32_ours": f"{ours_fp32.runtime} {ours_fp32.timing.median * 1e3:.2f} ms",
        "fp32_plain": f"{plain_fp32.runtime} {plain_fp32.timing.median * 1e3:.2f} ms",
        "int8_ratio": ours_int8.timing.median / plain_int8.timing.median,
        "int8_ours": f"{ours_int8.runtime} {ours_int8.timing.median * 1e3:.2f} ms",
        "int8_plain": f"{plain_int8.runtime} {plain_int8.timing.median * 1e3:.2f} ms",
        "predict_fp32_speedup": eager / predict_fp32,
        "predict_bf16_speedup": eager / predict_bf16,
    }


def markdown(all_rows: dict[str, list[tuple[str, BenchResult]]], checks: dict[str, dict], env: dict) -> str:
    lines = [
        "# Deployment performance",
        "",
        "Written by `python benchmarks/deploy.py` (do not edit by hand). Batch 1 at 224x224, random weights, "
        f"{env['threads']} threads on {env['cpu']}; fp32 matmul reference {env['matmul']['gflops']:.0f} GFLOP/s. "
        "Each row: the best of interleaved rounds, each the median of at least 1.5 s of calls after warm-up. "
        "`ours` is this project's export, `plain` a plain "
        "`torch.onnx.export` (and its naive QDQ int8) for reference. int8 is calibrated on random images "
        "(timing only; accuracy is measured by `mobilenet export --int8 --val`).",
        "",
    ]
    for name, rows in all_rows.items():
        lines += [f"## {name}", ""]
        table = [(r.runtime, v, r.precision, f"{r.timing.median * 1e3:.2f}", f"{r.timing.p90 * 1e3:.2f}",
                  f"{r.timing.p99 * 1e3:.2f}", f"{r.images_per_s:.0f}", f"{r.gflops:.1f}",
                  f"{100 * r.matmul_fraction:.0f}%") for v, r in rows]
        lines.append(format_table(("runtime", "variant", "precision", "median ms", "p90 ms", "p99 ms", "images/s",
                                   "GFLOP/s", "of matmul"), table, markdown=True))
        c = checks[name]
        lines += [
            "",
            f"- fastest fp32 export: ours {c['fp32_ours']} vs plain {c['fp32_plain']}: ratio {c['fp32_ratio']:.2f} "
            f"(target <= 1.10: {'met' if c['fp32_ratio'] <= 1.1 else 'NOT met'})",
            f"- fastest int8 export: ours {c['int8_ours']} vs plain {c['int8_plain']}: ratio {c['int8_ratio']:.2f} "
            f"(target <= 1.10: {'met' if c['int8_ratio'] <= 1.1 else 'NOT met'})",
            f"- predict fp32 speed-up over eager: {c['predict_fp32_speedup']:.2f}x; bf16: "
            f"{c['predict_bf16_speedup']:.2f}x (target >= 2.5x)",
            "",
        ]
    lines += ["Issue 4's own measurements of V1 (ms): "
              + ", ".join(f"{k} {v}" for k, v in ISSUE_V1_MS.items()) + ".", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--models", default="v1,v2,v3")
    parser.add_argument("--min-seconds", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    settings = BenchSettings(warmup=10, iterations=50, min_seconds=args.min_seconds)
    names = [MODELS[key] for key in args.models.split(",")]
    all_rows = {name: measure_model(name, args.threads, settings, args.rounds) for name in names}
    checks = {name: verdicts(rows) for name, rows in all_rows.items()}
    env = environment(args.threads)
    document = {"environment": env, "checks": checks,
                "results": {name: [{"variant": v, **r.to_dict()} for v, r in rows] for name, rows in all_rows.items()}}
    atomic_write_text(ROOT / "docs" / "benchmarks" / "deploy.json", json.dumps(document, indent=2) + "\n")
    text = markdown(all_rows, checks, env)
    atomic_write_text(ROOT / "docs" / "performance.md", text)
    print(text)


if __name__ == "__main__":
    main()

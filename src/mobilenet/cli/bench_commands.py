"""`mobilenet bench`: inference latency, throughput, achieved GFLOP/s and memory of a model in one runtime,
or of a paper's whole width x resolution grid (``--sweep``). Writes JSON and a chart; prints a table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mobilenet.cli.tables import format_table, millions
from mobilenet.errors import MobilenetError
from mobilenet.fileio import atomic_write_text, dump_json, make_output_folder
from mobilenet.profiling.bench import (
    MATMUL_SIZE,
    BenchResult,
    BenchSettings,
    benchmark,
    environment,
    threads_label,
)
from mobilenet.profiling.runners import RUNTIMES, Prepared, default_runtime, prepare


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="latency percentiles, images/s, GFLOP/s and memory of a model in one runtime (or --sweep a grid)",
    )
    bench.add_argument("target", nargs="?", metavar="MODEL_OR_FILE",
                       help="model name (random weights), .safetensors checkpoint, run folder, or exported file")
    bench.add_argument("--runtime", choices=RUNTIMES,
                       help="default: torch for a model or checkpoint, the natural runtime of an exported file")
    precision = bench.add_mutually_exclusive_group()
    precision.add_argument("--int8", action="store_true",
                           help="export int8 (onnxruntime, openvino, tflite), calibrated on random images")
    precision.add_argument("--bf16", action="store_true", help="OpenVINO with bf16 inference precision")
    bench.add_argument("--batch", default="1", help="comma-separated batch sizes (default 1), e.g. 1,8,32")
    bench.add_argument("--threads", type=int, help="threads for the runtime and the matmul reference "
                       "(default: torch's intra-op count)")
    bench.add_argument("--resolution", type=int, help="input size (overrides the model name's)")
    bench.add_argument("--channels-last", action="store_true", help="torch and torch-compile: NHWC memory format")
    bench.add_argument("--warmup", type=int, default=5, help="untimed calls first (default 5)")
    bench.add_argument("--iterations", type=int, default=30, help="timed calls at least (default 30)")
    bench.add_argument("--min-seconds", type=float, default=1.0, help="time at least this long (default 1.0)")
    bench.add_argument("--sweep", action="store_true", help="the papers' width x resolution grid instead of one model")
    bench.add_argument("--family", choices=("v1", "v2", "v3", "all"), default=None,
                       help="grid for --sweep (default all)")
    bench.add_argument("-o", "--output", type=Path, default=Path("runs/bench"), help="folder for JSON and charts")
    bench.add_argument("--json", action="store_true", help="print the JSON document instead of the table")
    bench.set_defaults(func=run_bench)


def parse_batches(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]; anything else is a one-line error."""
    try:
        batches = [int(part) for part in text.split(",")]
    except ValueError:
        batches = []
    if not batches or any(b < 1 for b in batches):
        raise MobilenetError(f"--batch takes positive integers separated by commas, e.g. 1,8,32 (got {text!r})")
    return sorted(set(batches))


def _threads(value: int | None) -> int:
    import torch

    threads = torch.get_num_threads() if value is None else value
    if threads < 1:
        raise MobilenetError(f"--threads must be an integer >= 1 (got {threads})")
    return threads


def _precision(args: argparse.Namespace) -> str:
    return "int8" if args.int8 else "bf16" if args.bf16 else "fp32"


def run_bench(args: argparse.Namespace) -> int:
    batches = parse_batches(args.batch)
    threads = _threads(args.threads)
    settings = BenchSettings(args.warmup, args.iterations, args.min_seconds)
    make_output_folder(args.output)  # before measuring: a bad folder should not cost the whole benchmark
    if args.sweep:
        return _run_sweep(args, batches, threads, settings)
    if args.target is None:
        raise MobilenetError("name a model (e.g. mobilenet_v2_1.0_224) or an exported file, or pass --sweep")
    if args.family is not None:
        raise MobilenetError("--family picks the grid of --sweep; add --sweep or drop --family")
    runtime = args.runtime or default_runtime(args.target)
    with prepare(args.target, runtime, _precision(args), threads=threads, resolution=args.resolution,
                 channels_last=args.channels_last) as prepared:
        results = _measure(prepared, batches, threads, settings)
    stem = "_".join([prepared.model, runtime, prepared.precision] + (["channels_last"] if args.channels_last else []))
    from mobilenet.profiling.sweep import plot_batches

    files = {"json": args.output / f"{stem}.json", "plot": plot_batches(results, args.output / f"{stem}.png")}
    document = _document("bench", results, threads, files)
    atomic_write_text(files["json"], dump_json(document) + "\n")
    if args.json:
        print(dump_json(document))
        return 0
    print(_header(results, threads))
    print()
    rows = [(r.batch, *_measurements(r)) for r in results]
    print(format_table(("batch", *_MEASUREMENT_HEADERS), rows))
    print()
    print(f"wrote {files['json']} and {files['plot']}")
    return 0


def _measure(prepared: Prepared, batches: Sequence[int], threads: int, settings: BenchSettings) -> list[BenchResult]:
    return benchmark(
        prepared.load,
        model=prepared.model,
        runtime=prepared.runtime,
        precision=prepared.precision,
        batches=batches,
        resolution=prepared.resolution,
        mult_adds=prepared.mult_adds,
        threads=threads,
        settings=settings,
        in_chans=prepared.config.in_chans,
        notes=prepared.notes,
    )


_MEASUREMENT_HEADERS = (
    "threads", "iters", "median ms", "p90 ms", "p99 ms", "images/s", "GFLOP/s", "of matmul", "RSS +MiB"
)


def _measurements(result: BenchResult) -> tuple[object, ...]:
    memory = "n/a" if result.rss_increase_mb is None else f"{result.rss_increase_mb:.1f}"
    return (
        result.threads,
        result.timing.iterations,
        f"{result.timing.median * 1e3:.2f}",
        f"{result.timing.p90 * 1e3:.2f}",
        f"{result.timing.p99 * 1e3:.2f}",
        f"{result.images_per_s:.1f}",
        f"{result.gflops:.2f}",
        f"{100 * result.matmul_fraction:.1f}%",
        memory,
    )


def _header(results: Sequence[BenchResult], threads: int) -> str:
    first = results[0]
    lines = [
        f"{first.model} at {first.resolution}x{first.resolution} ({millions(first.mult_adds)} M mult-adds per image) "
        f"in {first.runtime}, {first.precision}, {threads_label(threads)}",
        _reference_line(first, threads),
        f"memory: {first.memory_method}; process peak RSS {max(r.process_peak_rss_mb for r in results):.0f} MiB",
    ]
    lines += [f"note: {note}" for note in first.notes]
    return "\n".join(lines)


def _reference_line(result: BenchResult, threads: int) -> str:
    return (f"GFLOP/s = 2 x mult-adds x batch / median; matmul reference {result.matmul_gflops:.1f} GFLOP/s "
            f"({MATMUL_SIZE}x{MATMUL_SIZE} fp32 torch.matmul, {threads_label(threads)})")


def _document(command: str, results: Sequence[BenchResult], threads: int, files: dict[str, Path | None],
              extra: dict[str, dict[str, object]] | None = None) -> dict[str, object]:
    rows = [{**r.to_dict(), **(extra or {}).get(r.model, {})} for r in results]
    return {
        "command": command,
        "environment": environment(threads),
        "gflops_definition": "2 x mult-adds per image x batch / median seconds / 1e9",
        "memory_method": results[0].memory_method if results else None,
        "results": rows,
        "files": {key: str(path) for key, path in files.items() if path is not None},
    }


def _run_sweep(args: argparse.Namespace, batches: list[int], threads: int, settings: BenchSettings) -> int:
    from mobilenet.profiling.sweep import (
        known_top1,
        plot_accuracy_vs_latency,
        plot_latency_vs_mult_adds,
        sweep_models,
    )

    if args.target is not None:
        raise MobilenetError("--sweep runs the papers' grid; drop MODEL_OR_FILE (or drop --sweep)")
    if args.resolution is not None:
        raise MobilenetError("--sweep runs each model at its grid resolution; drop --resolution")
    runtime = args.runtime or "torch"
    results: list[BenchResult] = []
    family = args.family or "all"
    for name in sweep_models(family):
        with prepare(name, runtime, _precision(args), threads=threads, channels_last=args.channels_last) as prepared:
            measured = _measure(prepared, batches, threads, settings)
        results += measured
        for r in measured:
            print(f"bench: {r.model} batch {r.batch}: median {r.timing.median * 1e3:.2f} ms", file=sys.stderr,
                  flush=True)
    charted = [r for r in results if r.batch == batches[0]]
    stem = f"sweep_{family}_{runtime}_{_precision(args)}"
    files = {
        "json": args.output / f"{stem}.json",
        "latency_vs_mult_adds": plot_latency_vs_mult_adds(charted, args.output / f"{stem}_latency_vs_mult_adds.png"),
        "accuracy_vs_latency": plot_accuracy_vs_latency(charted, args.output / f"{stem}_accuracy_vs_latency.png"),
    }
    top1 = {r.model: known_top1(r.model) for r in results}
    extra = {name: {"top1": t.percent, "top1_source": t.source} if t else {"top1": None, "top1_source": None}
             for name, t in top1.items()}
    document = _document("sweep", results, threads, files, extra)
    atomic_write_text(files["json"], dump_json(document) + "\n")
    if args.json:
        print(dump_json(document))
        return 0
    print(_reference_line(results[0], threads))
    print(f"memory: {results[0].memory_method}")
    print()
    rows = [
        (r.model, r.batch, millions(r.mult_adds), *_measurements(r),
         "-" if top1[r.model] is None else f"{top1[r.model].percent:.1f}")
        for r in results
    ]
    print(format_table(("model", "batch", "mult-adds (M)", *_MEASUREMENT_HEADERS, "top-1 %"), rows))
    print()
    sources = sorted({t.source for t in top1.values() if t is not None})
    print("top-1: published ImageNet accuracy, from " + "; ".join(sources) if sources else "top-1: none known")
    written = [str(path) for path in files.values() if path is not None]
    print(f"wrote {', '.join(written)}")
    return 0

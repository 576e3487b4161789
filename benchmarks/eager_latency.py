"""Forward latency of every V1/V2/V3 variant at 224 in eager PyTorch: the baseline later work is measured against.

Writes docs/benchmarks/eager_latency.json and docs/benchmarks/eager_latency.md and prints the table.
Usage: python benchmarks/eager_latency.py [--batches 1,32] [--threads N] [--iterations 20]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

import mobilenet
from mobilenet.cli.tables import format_table
from mobilenet.fileio import atomic_write_text
from mobilenet.profiling.cost import cost_of
from mobilenet.profiling.timing import measure

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--pattern", default="*_224")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    names = [n for n in mobilenet.list_models(args.pattern) if "_conv_" not in n and "_shallow_" not in n]
    rows = []
    for name in names:
        model = mobilenet.create_model(name).eval()
        mult_adds = cost_of(name).mult_adds
        for batch in batches:
            x = torch.randn(batch, 3, 224, 224)
            with torch.inference_mode():
                iterations = args.iterations if batch == 1 else max(5, args.iterations // 4)
                timing = measure(lambda m=model, t=x: m(t), warmup=3, iterations=iterations)
            rows.append({"model": name, "batch": batch, "mult_adds": mult_adds, **timing.to_dict(),
                         "images_per_s": batch / timing.median})
            print(f"{name:42s} batch {batch:3d}: median {timing.median * 1e3:8.2f} ms  p90 {timing.p90 * 1e3:8.2f} ms",
                  flush=True)
    table = format_table(
        ("model", "batch", "mult-adds (M)", "median ms", "p90 ms", "images/s"),
        [(r["model"], r["batch"], f"{r['mult_adds'] / 1e6:.1f}", f"{r['median'] * 1e3:.2f}", f"{r['p90'] * 1e3:.2f}",
          f"{r['images_per_s']:.1f}") for r in rows],
        markdown=True,
    )
    env = {"torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or platform.machine()}
    header = (f"# Eager PyTorch forward latency at 224x224\n\nfp32, NCHW, `torch.inference_mode()`, random weights, "
              f"{args.threads} threads, torch {torch.__version__}. Produced by `python benchmarks/eager_latency.py`."
              "\n\n")
    atomic_write_text(DOCS / "eager_latency.md", header + table + "\n")
    atomic_write_text(DOCS / "eager_latency.json", json.dumps({"environment": env, "results": rows}, indent=2))
    print(table)


if __name__ == "__main__":
    main()

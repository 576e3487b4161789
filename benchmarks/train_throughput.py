"""Training throughput (images/s) of MobileNetV2 1.0 at 224 (batch 32) and V1 0.25 at 96.

Compares, each in one run: fp32 NCHW eager (what a plain PyTorch user gets), channels_last fp32, bf16
autocast + channels_last, and the trainer's default path (``precision="auto"`` + channels_last).
Writes docs/benchmarks/train_throughput.{json,md} and prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

import mobilenet
from mobilenet.cli.tables import format_table
from mobilenet.evaluation.metrics import autocast_context
from mobilenet.fileio import atomic_write_text
from mobilenet.profiling.cost import cost_of
from mobilenet.profiling.timing import measure
from mobilenet.training.trainer import resolve_precision

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
CASES = [("mobilenet_v2_1.0_224", 32), ("mobilenet_v1_0.25_96", 32)]
MODES = [("fp32 NCHW (baseline)", "fp32", False), ("fp32 channels_last", "fp32", True),
         ("bf16 channels_last", "bf16", True), ("default (auto + channels_last)", "auto", True)]


def step_fn(name: str, batch: int, precision: str, channels_last: bool):
    torch.manual_seed(0)
    model = mobilenet.create_model(name, num_classes=1000).train()
    resolution = model.config.resolution
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, resolution, resolution).contiguous(memory_format=memory_format)
    y = torch.randint(0, 1000, (batch,))
    device = torch.device("cpu")

    def step() -> None:
        with autocast_context(device, precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=8)
    args = parser.parse_args()
    rows = []
    for name, batch in CASES:
        baseline = None
        for label, precision, channels_last in MODES:
            resolved = resolve_precision(precision, torch.device("cpu"), cost_of(name).mult_adds)
            timing = measure(step_fn(name, batch, resolved, channels_last), warmup=2, iterations=args.iterations)
            rate = batch / timing.median
            baseline = baseline or rate
            rows.append({"model": name, "batch": batch, "mode": label, "precision": resolved,
                         "channels_last": channels_last, "images_per_s": rate, "speedup": rate / baseline,
                         **timing.to_dict()})
            print(f"{name} {label:32s} {rate:8.1f} img/s  x{rate / baseline:.2f}", flush=True)
    table = format_table(
        ("model", "batch", "mode", "precision", "images/s", "vs baseline"),
        [(r["model"], r["batch"], r["mode"], r["precision"], f"{r['images_per_s']:.1f}", f"{r['speedup']:.2f}x")
         for r in rows],
        markdown=True,
    )
    header = ("# Training throughput on CPU\n\nOne SGD step (forward, backward, update) per iteration, median of "
              f"{args.iterations}, {torch.get_num_threads()} threads, torch {torch.__version__}. "
              "Produced by `python benchmarks/train_throughput.py`.\n\n")
    atomic_write_text(DOCS / "train_throughput.md", header + table + "\n")
    atomic_write_text(DOCS / "train_throughput.json", json.dumps(rows, indent=2))
    print(table)


if __name__ == "__main__":
    main()

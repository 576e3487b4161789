"""The papers' width x resolution grids, their published ImageNet accuracies, and the benchmark charts.

The charts redraw the papers' trade-off figures with latency measured here: latency against mult-adds (the V1
paper's Figure 4 puts accuracy there; V2's Figure 5 and V3's Figure 1 plot accuracy against latency), one line per
width multiplier across resolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mobilenet.errors import MobilenetError
from mobilenet.fileio import atomic_path
from mobilenet.models.registry import model_name, parse_name
from mobilenet.profiling.bench import BenchResult, threads_label

FAMILIES = ("v1", "v2", "v3")

SWEEP_GRIDS: dict[str, tuple[tuple[str, float, int], ...]] = {
    # V1 paper, Figures 4 and 5: alpha x rho, all 16 pairs.
    "v1": tuple(("mobilenet_v1", a, r) for a in (1.0, 0.75, 0.5, 0.25) for r in (224, 192, 160, 128)),
    # V2 paper, Figure 5: multipliers 0.35 to 1.0 at five resolutions, plus 1.4 at 224 (the released grid).
    "v2": tuple(("mobilenet_v2", a, r) for a in (1.0, 0.75, 0.5, 0.35) for r in (224, 192, 160, 128, 96))
    + (("mobilenet_v2", 1.4, 224),),
    # V3 Large and Small at the two released multipliers, at V1's four resolutions.
    "v3": tuple(
        (arch, a, r)
        for arch in ("mobilenet_v3_large", "mobilenet_v3_small")
        for a in (1.0, 0.75)
        for r in (224, 192, 160, 128)
    ),
}


def sweep_models(family: str) -> list[str]:
    """Model names of one family's grid (``"all"`` for the three in turn)."""
    if family == "all":
        return [name for each in FAMILIES for name in sweep_models(each)]
    if family not in SWEEP_GRIDS:
        raise MobilenetError(f"unknown family {family!r}; choose one of: {', '.join(FAMILIES)}, all")
    return [model_name(arch, alpha, resolution) for arch, alpha, resolution in SWEEP_GRIDS[family]]


@dataclass(frozen=True)
class Top1:
    """A published ImageNet top-1 accuracy (percent, single crop) and where it is printed."""

    percent: float
    source: str


_P1_T6 = "MobileNetV1 paper (Howard et al. 2017), Table 6"
_P1_T7 = "MobileNetV1 paper (Howard et al. 2017), Table 7"
_P1_T9 = "MobileNetV1 paper (Howard et al. 2017), Table 9"
_SLIM_V1 = "TF-slim mobilenet_v1.md, released checkpoints (the V1 paper plots them in Figure 4, prints no number)"
_P2_T4 = "MobileNetV2 paper (Sandler et al. 2018), Table 4"
_SLIM_V2 = "TF-slim mobilenet/README.md, released checkpoints (the V2 paper plots them in Figure 5, prints no number)"
_P3_T3 = "MobileNetV3 paper (Howard et al. 2019), Table 3"


def _entries(arch: str, source: str, rows: Sequence[tuple[float, int, float]]) -> dict[str, Top1]:
    return {model_name(arch, alpha, resolution): Top1(top1, source) for alpha, resolution, top1 in rows}


# Only numbers printed in the sources (transcribed in shared/reference/papers.md, sections 1.6-1.11, 2.4, 2.5, 3.3).
# A family's own paper wins where it prints the number; the released checkpoints fill the rest of its grid.
KNOWN_TOP1: dict[str, Top1] = {
    **_entries("mobilenet_v1", _SLIM_V1, [
        (0.75, 192, 67.2), (0.75, 160, 65.3), (0.75, 128, 62.1), (0.5, 192, 61.7), (0.5, 128, 56.3),
        (0.25, 192, 47.7), (0.25, 160, 45.5), (0.25, 128, 41.5),
    ]),
    **_entries("mobilenet_v1", _P1_T6, [(1.0, 224, 70.6), (0.75, 224, 68.4), (0.5, 224, 63.7), (0.25, 224, 50.6)]),
    **_entries("mobilenet_v1", _P1_T7, [(1.0, 192, 69.1), (1.0, 160, 67.2), (1.0, 128, 64.4)]),
    **_entries("mobilenet_v1", _P1_T9, [(0.5, 160, 60.2)]),
    **_entries("mobilenet_v2", _SLIM_V2, [
        (1.0, 192, 70.7), (1.0, 160, 68.8), (1.0, 128, 65.3), (1.0, 96, 60.3),
        (0.75, 224, 69.8), (0.75, 192, 68.7), (0.75, 160, 66.4), (0.75, 128, 63.2), (0.75, 96, 58.8),
        (0.5, 224, 65.4), (0.5, 192, 63.9), (0.5, 160, 61.0), (0.5, 128, 57.7), (0.5, 96, 51.2),
        (0.35, 224, 60.3), (0.35, 192, 58.2), (0.35, 160, 55.7), (0.35, 128, 50.8), (0.35, 96, 45.5),
    ]),
    **_entries("mobilenet_v2", _P2_T4, [(1.0, 224, 72.0), (1.4, 224, 74.7)]),
    **_entries("mobilenet_v3_large", _P3_T3, [(1.0, 224, 75.2), (0.75, 224, 73.3)]),
    **_entries("mobilenet_v3_small", _P3_T3, [(1.0, 224, 67.4), (0.75, 224, 65.4)]),
}


def known_top1(model: str) -> Top1 | None:
    return KNOWN_TOP1.get(model)


def _pyplot():  # noqa: ANN202 - the matplotlib.pyplot module
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_log_ticks(*axes) -> None:  # noqa: ANN002 - matplotlib Axis objects
    """Label log axes 0.3, 0.5, 1, 2, 5 ... instead of overlapping 3x10^-1 style minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis in axes:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(NullFormatter())


def _save(fig, path: Path) -> Path:  # noqa: ANN001 - a matplotlib Figure
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    _pyplot().close(fig)
    return path


def _series(results: Sequence[BenchResult]) -> dict[tuple[str, float], list[BenchResult]]:
    """Results grouped into one line per (architecture, width), ordered by mult-adds."""
    lines: dict[tuple[str, float], list[BenchResult]] = {}
    for result in results:
        arch, alpha, _ = parse_name(result.model)
        lines.setdefault((arch, alpha), []).append(result)
    return {key: sorted(rows, key=lambda r: r.mult_adds) for key, rows in lines.items()}


def _label(arch: str, alpha: float) -> str:
    short = arch.removeprefix("mobilenet_").replace("_", "-").upper()
    return f"{short.replace('LARGE', 'Large').replace('SMALL', 'Small')} {alpha:g}"


def _title(results: Sequence[BenchResult]) -> str:
    first = results[0]
    return f"{first.runtime} {first.precision}, batch {first.batch}, {threads_label(first.threads)}"


def plot_latency_vs_mult_adds(results: Sequence[BenchResult], path: Path) -> Path:
    """Median latency against mult-adds, log-log, one line per width multiplier (resolution varies along it)."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(8, 5.5))
    for (arch, alpha), rows in _series(results).items():
        axis.plot([r.mult_adds / 1e6 for r in rows], [r.timing.median * 1e3 for r in rows], marker="o",
                  label=_label(arch, alpha))
    axis.set(xscale="log", yscale="log", xlabel="mult-adds (millions, log scale)",
             ylabel="median latency (ms, log scale)", title=f"Latency vs mult-adds ({_title(results)})")
    _plain_log_ticks(axis.xaxis, axis.yaxis)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize="small", ncol=2)
    return _save(fig, path)


def plot_accuracy_vs_latency(results: Sequence[BenchResult], path: Path) -> Path | None:
    """Published top-1 against measured latency for the models whose accuracy is known; None if there is none."""
    known = [r for r in results if known_top1(r.model) is not None]
    if not known:
        return None
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(8, 5.5))
    for (arch, alpha), rows in _series(known).items():
        axis.plot([r.timing.median * 1e3 for r in rows], [known_top1(r.model).percent for r in rows], marker="o",
                  label=_label(arch, alpha))
    axis.set(xscale="log", xlabel="median latency (ms, log scale)", ylabel="published ImageNet top-1 (%)",
             title=f"Accuracy vs latency ({_title(known)})")
    _plain_log_ticks(axis.xaxis)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize="small", ncol=2)
    return _save(fig, path)


def plot_batches(results: Sequence[BenchResult], path: Path) -> Path:
    """One model in one runtime: latency percentiles and images/s against batch size."""
    plt = _pyplot()
    rows = sorted(results, key=lambda r: r.batch)
    batches = [r.batch for r in rows]
    fig, (latency, throughput) = plt.subplots(1, 2, figsize=(10, 4))
    for name, values in (("median", [r.timing.median for r in rows]), ("p90", [r.timing.p90 for r in rows]),
                         ("p99", [r.timing.p99 for r in rows])):
        latency.plot(batches, [v * 1e3 for v in values], marker="o", label=name)
    latency.set(xlabel="batch size", ylabel="latency per batch (ms)", title="Latency")
    throughput.plot(batches, [r.images_per_s for r in rows], marker="o")
    throughput.set(xlabel="batch size", ylabel="images/s", title="Throughput")
    for axis in (latency, throughput):
        axis.set_xscale("log", base=2)
        axis.set_xticks(batches, [str(b) for b in batches])
        axis.grid(alpha=0.3)
    latency.legend()
    fig.suptitle(f"{rows[0].model}: {rows[0].runtime} {rows[0].precision}, {threads_label(rows[0].threads)}")
    return _save(fig, path)

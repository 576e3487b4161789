"""Wall-clock timing with warm-up and percentiles: the one timer every benchmark uses."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per call; ``threads`` is the thread count of the timed code (torch's intra-op count unless given)."""

    median: float
    p90: float
    p99: float
    mean: float
    iterations: int
    threads: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def measure(
    fn: Callable[[], object],
    *,
    warmup: int = 3,
    iterations: int = 20,
    min_seconds: float = 0.0,
    synchronize: Callable[[], None] | None = None,
    threads: int | None = None,
) -> Timing:
    """Call ``fn`` ``warmup`` times, then time at least ``iterations`` calls (and ``min_seconds`` in total).

    Pass ``synchronize=torch.cuda.synchronize`` for GPU work: without it, asynchronous kernels make the timings
    meaningless (pytorch/pytorch #18631). Pass ``threads`` when ``fn`` runs in another runtime (onnxruntime,
    OpenVINO, TFLite) with its own thread pool: that count is recorded instead of torch's.
    """
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < iterations or time.perf_counter() - started < min_seconds:
        begin = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - begin)
    ordered = sorted(samples)
    return Timing(
        median=statistics.median(ordered),
        p90=_percentile(ordered, 0.90),
        p99=_percentile(ordered, 0.99),
        mean=statistics.fmean(ordered),
        iterations=len(ordered),
        threads=threads if threads is not None else torch.get_num_threads(),
    )


@dataclass(frozen=True)
class Windows:
    """Per function, one entry per window: the median seconds per call, and minor page faults per call."""

    medians: dict[str, list[float]]
    page_faults: dict[str, list[float]]

    def ratios(self, numerator: str, denominator: str) -> list[float]:
        """``numerator``'s time over ``denominator``'s, window by window."""
        return [a / b for a, b in zip(self.medians[numerator], self.medians[denominator])]


def _minor_page_faults() -> int:
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure_alternating(
    fns: dict[str, Callable[[], object]], *, windows: int = 6, seconds: float = 0.4, warmup: int = 3
) -> Windows:
    """Time each function in turn for ``seconds`` (at least 10 calls), ``windows`` times over.

    For ratios between functions: timed side by side, they share the machine's speed of the moment, which on a
    shared VM drifts by up to 2x between minutes, so one-off medians taken minutes apart do not compare.
    Page faults show allocator effects (eager PyTorch maps fresh memory for every large activation).
    """
    medians: dict[str, list[float]] = {name: [] for name in fns}
    faults: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(windows):
        for name, fn in fns.items():
            before = _minor_page_faults()
            timing = measure(fn, warmup=warmup, iterations=10, min_seconds=seconds)
            medians[name].append(timing.median)
            faults[name].append((_minor_page_faults() - before) / (timing.iterations + warmup))
    return Windows(medians, faults)

"""Inference benchmarks: latency percentiles, images/s, achieved GFLOP/s against the machine's own matmul rate,
and the memory a runner takes. Every runtime is measured the same way, through :func:`benchmark`.

- Latency is :func:`mobilenet.profiling.timing.measure` (warm-up, then median, p90 and p99 of timed calls).
- Achieved GFLOP/s is ``2 x mult-adds x batch / median`` with mult-adds from the one cost counter
  (:mod:`mobilenet.profiling.cost`), so the number is comparable to the papers' operation counts.
- The reference rate is a square fp32 ``torch.matmul`` at the same thread count, measured once per process:
  the fraction says how far a network of small depthwise and 1x1 convolutions is from the machine's dense peak.
- Memory is the increase of the process's resident set over its level just before the runner was loaded (freed
  heap pages are first returned to the OS): the kernel's peak (``VmHWM``) is reset through
  ``/proc/self/clear_refs`` before loading and before each batch, so the figure covers loading (compiling,
  building a session) and the runs of that batch. Where the peak
  cannot be reset (not Linux) only the process-lifetime peak from ``getrusage`` is reported.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import os
import platform
import resource
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mobilenet.errors import MobilenetError
from mobilenet.profiling.timing import Timing, measure

NumpyRunner = Callable[[np.ndarray], object]
MATMUL_SIZE = 2048
MEMORY_METHOD_RESET = (
    "peak RSS increase over the level before loading: load + this batch's runs (Linux VmHWM, reset per batch)"
)
MEMORY_METHOD_PROCESS = "process-lifetime peak RSS from getrusage (the peak could not be reset on this system)"


@dataclass(frozen=True)
class BenchSettings:
    """How long to measure. Warm-up calls absorb lazy work (torch.compile's compilation, a runtime's first-call
    allocations); ``min_seconds`` extends short runs so that p99 rests on enough samples."""

    warmup: int = 5
    iterations: int = 30
    min_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.warmup < 1 or self.iterations < 1 or not 0 <= self.min_seconds < float("inf"):
            raise MobilenetError(
                f"need --warmup >= 1, --iterations >= 1 and --min-seconds >= 0 (got {self.warmup}, "
                f"{self.iterations}, {self.min_seconds})"
            )


@dataclass(frozen=True)
class BenchResult:
    """One (model, runtime, precision, batch) measurement; times in seconds, memory in MiB."""

    model: str
    runtime: str
    precision: str
    batch: int
    resolution: int
    mult_adds: int  # per image, from the cost counter
    timing: Timing
    matmul_gflops: float
    rss_increase_mb: float | None
    process_peak_rss_mb: float
    memory_method: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def threads(self) -> int:
        return self.timing.threads

    @property
    def images_per_s(self) -> float:
        return self.batch / self.timing.median

    @property
    def gflops(self) -> float:
        """Achieved GFLOP/s: two floating-point operations per mult-add."""
        return 2.0 * self.mult_adds * self.batch / self.timing.median / 1e9

    @property
    def matmul_fraction(self) -> float:
        return self.gflops / self.matmul_gflops

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "runtime": self.runtime,
            "precision": self.precision,
            "batch": self.batch,
            "resolution": self.resolution,
            "threads": self.threads,
            "mult_adds": self.mult_adds,
            "median_ms": self.timing.median * 1e3,
            "p90_ms": self.timing.p90 * 1e3,
            "p99_ms": self.timing.p99 * 1e3,
            "mean_ms": self.timing.mean * 1e3,
            "iterations": self.timing.iterations,
            "images_per_s": self.images_per_s,
            "gflops": self.gflops,
            "matmul_gflops": self.matmul_gflops,
            "matmul_fraction": self.matmul_fraction,
            "rss_increase_mb": self.rss_increase_mb,
            "process_peak_rss_mb": self.process_peak_rss_mb,
            "memory_method": self.memory_method,
            "notes": list(self.notes),
        }


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run a block with torch's intra-op thread count set to ``threads``, then restore it."""
    if threads < 1:
        raise MobilenetError(f"threads must be an integer >= 1, got {threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@functools.cache
def matmul_rate(threads: int, size: int = MATMUL_SIZE) -> float:
    """GFLOP/s of a ``size`` x ``size`` fp32 ``torch.matmul`` on ``threads`` threads (measured once per process)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    out = torch.empty(size, size)
    with torch_threads(threads), torch.inference_mode():
        # the machine's rate, not its load of the moment: the best of three short medians
        seconds = min(
            measure(lambda: torch.matmul(a, b, out=out), warmup=2, iterations=5, min_seconds=0.3).median
            for _ in range(3)
        )
    return 2.0 * size**3 / seconds / 1e9


def threads_label(threads: int) -> str:
    return f"{threads} thread" + ("" if threads == 1 else "s")


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# The kernel's peak-RSS counter is also what getrusage reports, so each reset would erase the process's true
# peak; the highest value seen before any reset is kept here.
_peak_before_resets_kb = 0


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) for this process; False where that is not possible."""
    global _peak_before_resets_kb
    _peak_before_resets_kb = max(_peak_before_resets_kb, _status_kb("VmHWM") or 0)
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def _release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``), so that a runner loaded after an export
    cannot reuse them unseen and the RSS increase counts its real footprint."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def process_peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        return peak / 2**20  # bytes on macOS, and no resets there
    return max(peak, _peak_before_resets_kb) / 2**10  # KiB elsewhere


class MemoryProbe:
    """The resident-set increase over a baseline taken just before the runner is loaded."""

    def __init__(self) -> None:
        _release_free_memory()
        self.baseline_kb = _status_kb("VmRSS")
        self.resettable = self.baseline_kb is not None and _reset_peak_rss()
        self.load_peak_kb: int | None = None

    @property
    def method(self) -> str:
        return MEMORY_METHOD_RESET if self.resettable else MEMORY_METHOD_PROCESS

    def loaded(self) -> None:
        """Call once the runner is loaded: keeps the loading peak, then resets the counter for the runs."""
        if self.resettable:
            self.load_peak_kb = _status_kb("VmHWM")
            _reset_peak_rss()

    def increase_mb(self) -> float | None:
        """Peak increase over the baseline since :meth:`loaded` (or the last call), loading included."""
        if not self.resettable or self.baseline_kb is None:
            return None
        peak = max(_status_kb("VmHWM") or 0, self.load_peak_kb or 0)
        _reset_peak_rss()
        return max(0, peak - self.baseline_kb) / 2**10


def random_batch(batch: int, resolution: int, in_chans: int = 3, seed: int = 0) -> np.ndarray:
    """A float32 NCHW batch of N(0, 1) noise: what a normalised image looks like to the network's cost."""
    return np.random.default_rng(seed).standard_normal((batch, in_chans, resolution, resolution), dtype=np.float32)


def benchmark(
    load: Callable[[], NumpyRunner],
    *,
    model: str,
    runtime: str,
    precision: str,
    batches: Sequence[int],
    resolution: int,
    mult_adds: int,
    threads: int,
    settings: BenchSettings = BenchSettings(),
    in_chans: int = 3,
    notes: Sequence[str] = (),
    matmul_gflops: float | None = None,
) -> list[BenchResult]:
    """Load a runner with ``load()`` and time it at each batch size; one result per batch.

    ``load`` must build everything the runner needs (a session, a compiled module): its memory is counted.
    Torch's thread count is set to ``threads`` for the whole measurement (runners in other runtimes take
    theirs when loaded); the matmul reference uses the same count. Pass ``matmul_gflops`` measured in another
    process to keep this one's allocator as it was: the reference frees 16 MiB blocks, which raises glibc's
    mmap threshold and spares eager PyTorch its per-call page faults.
    """
    if not batches or any(b < 1 for b in batches):
        raise MobilenetError(f"batch sizes must be integers >= 1, got {list(batches)}")
    with torch_threads(threads):
        reference = matmul_rate(threads) if matmul_gflops is None else matmul_gflops
        probe = MemoryProbe()
        runner = load()
        probe.loaded()
        results = []
        for batch in batches:
            inputs = random_batch(batch, resolution, in_chans)
            timing = measure(
                lambda x=inputs: runner(x),
                warmup=settings.warmup,
                iterations=settings.iterations,
                min_seconds=settings.min_seconds,
                threads=threads,
            )
            results.append(
                BenchResult(
                    model=model,
                    runtime=runtime,
                    precision=precision,
                    batch=batch,
                    resolution=resolution,
                    mult_adds=mult_adds,
                    timing=timing,
                    matmul_gflops=reference,
                    rss_increase_mb=probe.increase_mb(),
                    process_peak_rss_mb=process_peak_rss_mb(),
                    memory_method=probe.method,
                    notes=tuple(notes),
                )
            )
    return results


def environment(threads: int) -> dict[str, object]:
    """Facts a reader needs to compare two benchmark files."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "threads": threads,
        "matmul": {"size": MATMUL_SIZE, "dtype": "float32", "gflops": matmul_rate(threads)},
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

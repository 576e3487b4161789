"""`mobilenet bench`: the measurements are consistent with their definitions, files are written, every runtime
path loads, and bad requests are one-line errors. Speed targets live in benchmarks/deploy.py, not here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mobilenet.cli.main import main
from mobilenet.models.registry import config_from_name
from mobilenet.profiling.cost import cost_of

TINY = "mobilenet_v1_0.25_128"
QUICK = ["--warmup", "1", "--iterations", "3", "--min-seconds", "0"]
HAS_ORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnx, onnxscript or onnxruntime not installed ([onnx] extra)")


def bench_json(capsys, *args: str) -> dict:
    assert main(["bench", *args, *QUICK, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_torch_bench_numbers_follow_their_definitions(tmp_path: Path, capsys) -> None:
    doc = bench_json(capsys, TINY, "--runtime", "torch", "--batch", "1,2", "--threads", "1", "-o", str(tmp_path))
    mult_adds = cost_of(config_from_name(TINY)).mult_adds
    assert [row["batch"] for row in doc["results"]] == [1, 2]
    for row in doc["results"]:
        assert row["threads"] == 1 and row["mult_adds"] == mult_adds
        assert 0 < row["median_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["images_per_s"] == pytest.approx(row["batch"] / (row["median_ms"] / 1e3))
        assert row["gflops"] == pytest.approx(2 * mult_adds * row["batch"] / (row["median_ms"] / 1e3) / 1e9)
        assert row["matmul_fraction"] == pytest.approx(row["gflops"] / row["matmul_gflops"])
        assert row["rss_increase_mb"] is None or row["rss_increase_mb"] >= 0
    assert doc["environment"]["matmul"]["gflops"] > 1 and doc["environment"]["threads"] == 1
    assert Path(doc["files"]["json"]).is_file() and Path(doc["files"]["plot"]).stat().st_size > 1000


def test_table_output_states_threads_and_reference(tmp_path: Path, capsys) -> None:
    assert main(["bench", TINY, "--runtime", "torch-fast", *QUICK, "--threads", "2", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 threads" in out and "matmul reference" in out and "median ms" in out and "p99 ms" in out


@needs_ort
def test_int8_onnxruntime_and_an_exported_file(tmp_path: Path, capsys) -> None:
    doc = bench_json(capsys, TINY, "--runtime", "onnxruntime", "--int8", "-o", str(tmp_path))
    assert doc["results"][0]["precision"] == "int8" and doc["results"][0]["runtime"] == "onnxruntime"
    import mobilenet
    from mobilenet.export import export_model

    model = mobilenet.create_model(TINY, num_classes=10)
    exported = export_model(model, tmp_path / "m.onnx", "onnx").path
    doc = bench_json(capsys, str(exported), "--batch", "3", "-o", str(tmp_path))
    row = doc["results"][0]
    assert row["runtime"] == "onnxruntime" and row["batch"] == 3 and row["model"] == TINY  # from the sidecar
    assert row["mult_adds"] == cost_of(model.config).mult_adds


@pytest.mark.skipif(not (HAS_ORT and importlib.util.find_spec("openvino")), reason="needs [onnx] and [openvino]")
def test_openvino_runs_fp32_unless_bf16_is_asked(tmp_path: Path, capsys) -> None:
    doc = bench_json(capsys, TINY, "--runtime", "openvino", "-o", str(tmp_path))
    row = doc["results"][0]
    assert row["runtime"] == "openvino" and row["precision"] == "fp32"
    assert not any("although" in note for note in row["notes"])  # the f32 precision hint held
    doc = bench_json(capsys, TINY, "--runtime", "openvino", "--bf16", "-o", str(tmp_path))
    assert doc["results"][0]["precision"] == "bf16"


def test_sweep_draws_the_papers_charts(tmp_path: Path, capsys) -> None:
    doc = bench_json(capsys, "--sweep", "--family", "v1", "--runtime", "torch", "-o", str(tmp_path))
    rows = {row["model"]: row for row in doc["results"]}
    assert len(rows) == 16 and rows["mobilenet_v1_1.0_224"]["top1"] == 70.6
    assert rows["mobilenet_v1_1.0_224"]["mult_adds"] > rows["mobilenet_v1_0.25_128"]["mult_adds"]
    for key in ("latency_vs_mult_adds", "accuracy_vs_latency"):
        assert Path(doc["files"][key]).stat().st_size > 1000


@pytest.mark.parametrize(
    "args, message",
    [
        ([TINY, "--batch", "1,x"], "--batch takes positive integers"),
        ([TINY, "--runtime", "torch", "--int8"], "--int8 needs --runtime"),
        ([TINY, "--threads", "0"], "--threads must be an integer >= 1"),
        (["missing.onnx"], "not found"),
        (["mobilenet_v9_1.0_224"], "mobilenet_v9"),
        ([], "name a model"),
    ],
)
def test_bad_requests_are_one_line_errors(args: list[str], message: str, tmp_path: Path, capsys) -> None:
    assert main(["bench", *args, "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_alternating_windows_pair_each_function_with_its_neighbours() -> None:
    """Two sleeps of 2 and 6 ms timed in turn: every window's ratio is about 3; a function that allocates and
    touches a freshly mapped block shows page faults, one that does nothing shows none."""
    import time

    from mobilenet.profiling.timing import measure_alternating

    def touch_fresh_memory() -> None:
        block = bytearray(64 << 20)  # above glibc's largest mmap threshold (32 MiB): mapped anew on each call
        block[:: 1 << 12] = bytes(len(block) >> 12)  # write one byte per 4 KiB page

    windows = measure_alternating(
        {"short": lambda: time.sleep(0.002), "long": lambda: time.sleep(0.006), "alloc": touch_fresh_memory,
         "idle": lambda: None},
        windows=3, seconds=0.05,
    )
    assert all(len(v) == 3 for v in windows.medians.values())
    assert all(2.0 < r < 3.5 for r in windows.ratios("long", "short")), windows.ratios("long", "short")
    assert min(windows.page_faults["alloc"]) > 100 > max(windows.page_faults["idle"])


def test_process_peak_survives_the_per_run_peak_resets() -> None:
    import subprocess
    import sys

    script = (
        "import numpy as np; from mobilenet.profiling import bench\n"
        "block = np.ones(512 * 2**20 // 8); del block\n"  # a 512 MiB peak, then freed
        "bench._reset_peak_rss(); print(bench.process_peak_rss_mb())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert float(done.stdout) >= 512

"""The CLI for costs: tables, JSON, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mobilenet.cli.main import main as cli

ROOT = Path(__file__).resolve().parents[1]


def test_readme_model_table_is_what_the_cli_prints(capsys) -> None:
    assert cli(["models", "--markdown"]) == 0
    table = capsys.readouterr().out.strip()
    assert table in (ROOT / "README.md").read_text()


def test_cost_json_is_machine_readable(capsys) -> None:
    assert cli(["cost", "mobilenet_v2_1.0_224", "--json", "--per-layer"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params"] == 3_504_872 and round(report["mult_adds"] / 1e6, 1) == 300.8
    assert sum(layer["mult_adds"] for layer in report["layers"]) == report["mult_adds"]
    assert {row["layer_type"] for row in report["breakdown"]} >= {"1x1 conv", "depthwise conv", "full conv"}


def test_compare_shows_the_table_4_ratio(capsys) -> None:
    assert cli(["compare", "mobilenet_v1_1.0_224", "mobilenet_v1_conv_1.0_224", "--json"]) == 0
    first, second = json.loads(capsys.readouterr().out)
    assert round(second["mult_adds"] / first["mult_adds"], 1) == 8.6
    assert cli(["cost", "mobilenet_v1_1.0_224", "--resolution", "160"]) == 0
    assert "290,7" in capsys.readouterr().out.replace("290.7", "290,7")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mobilenet", *args], capture_output=True, text=True, timeout=120)


def test_user_mistakes_are_one_line_errors_with_status_2() -> None:
    cases = [
        (("cost", "mobilenet_v3_larg_1.0_224"), "closest: mobilenet_v3_large_1.0_224"),
        (("cost", "mobilenet_v1_0_224"), "width_multiplier (alpha) must be a number > 0"),
        (("cost", "mobilenet_v1_1.0_224", "--resolution", "16"), "resolution must be an integer >= 32"),
        (("cost", "mobilenet_v1_1.0_224", "--resolution", "224.5"), "invalid int value"),
        (("cost", "mobilenet_v1_1.0_224", "--num-classes", "-3"), "num_classes must be an integer >= 0"),
        (("nonsense",), "invalid choice"),
    ]
    for args, fragment in cases:
        result = run_cli(*args)
        assert result.returncode == 2, args
        assert fragment in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr


def test_import_then_predict_prints_imagenet_labels(coral_dir: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("ai_edge_litert", reason="the tflite extra (ai-edge-litert) is not installed")
    weights = tmp_path / "v2.safetensors"
    source = coral_dir / "mobilenet_v2_1.0_224_quant.tflite"
    assert cli(["import", str(source), "--labels", str(coral_dir / "imagenet_labels.txt"), "-o", str(weights)]) == 0
    capsys.readouterr()
    assert cli(["predict", str(weights), str(coral_dir / "cat.bmp"), "--topk", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.split(": ", 1)[1].startswith("Egyptian cat"), line

    # Imported without labels, the names come from --labels at predict time (1001 lines, background first).
    bare = tmp_path / "v2_bare.safetensors"
    assert cli(["import", str(source), "-o", str(bare)]) == 0
    capsys.readouterr()
    assert cli(["predict", str(bare), str(coral_dir / "cat.bmp"), "--topk", "1"]) == 0
    unlabelled = capsys.readouterr().out.strip()
    assert "Egyptian cat" not in unlabelled, unlabelled
    labels = coral_dir / "imagenet_labels.txt"
    assert cli(["predict", str(bare), str(coral_dir / "cat.bmp"), "--topk", "1", "--labels", str(labels)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.split(": ", 1)[1].startswith("Egyptian cat"), line


def test_finetune_from_imported_official_weights(coral_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert", reason="the tflite extra (ai-edge-litert) is not installed")
    from tests.test_training import write_blobs

    weights = tmp_path / "v1.safetensors"
    assert cli(["import", str(coral_dir / "mobilenet_v1_0.25_128_quant.tflite"), "-o", str(weights)]) == 0
    data = write_blobs(tmp_path / "data")
    run = tmp_path / "run"
    assert cli(["finetune", str(data), "--from", str(weights), "--epochs", "2", "--freeze-epochs", "1",
                "--batch-size", "8", "--precision", "fp32", "--out", str(run), "--quiet"]) == 0
    import mobilenet

    model = mobilenet.load(run / "last.safetensors")
    assert model.class_names == ["class_0", "class_1", "class_2"]
    assert model.config.padding == "tf_same" and model.preprocessing.mean == (0.5, 0.5, 0.5)

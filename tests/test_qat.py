"""Quantization-aware fine-tuning: trained digits model -> fake-quant fine-tuning -> int8 TFLite, whose accuracy
is measured against fp32 and post-training int8 on the held-out digits."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from mobilenet.cli.main import main as cli
from mobilenet.training import ImageClassifier, Trainer, make_train_config
from tests.test_training import write_blobs, write_digits

HAS_LITERT = all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_litert", "torchao"))
needs_litert = pytest.mark.skipif(not HAS_LITERT, reason="litert-torch not installed ([litert] extra)")


@needs_litert
@pytest.mark.slow
def test_qat_on_digits_keeps_fp32_accuracy_in_int8(tmp_path: Path) -> None:
    from mobilenet.training.qat import QatSettings, quantization_aware_finetune
    from mobilenet.weights.tflite_import import read_tflite

    train_dir, test_dir = write_digits(tmp_path / "digits")
    config = make_train_config("finetune", model="mobilenet_v2_0.5_32", epochs=8, batch_size=64, lr=0.005,
                               ema_decay=0.0, precision="fp32", train_scale=(0.8, 1.0), hflip=0.0, warmup_epochs=1)
    result = Trainer(config, train_dir, test_dir, tmp_path / "run", quiet=True).fit()
    model = ImageClassifier.from_weights(result.run_dir).model
    settings = QatSettings(epochs=1, lr=1e-3, batch_size=64, train_scale=(0.8, 1.0), hflip=0.0)  # as trained
    report = quantization_aware_finetune(model, train_dir, tmp_path / "qat.tflite", val_dir=test_dir,
                                         settings=settings, quiet=True)
    print(report.summary())
    qat, ptq = report.qat, report.ptq
    assert qat.images == 450 and qat.labelled and ptq is not None
    assert qat.fp32_top1 >= 0.9, qat.fp32_top1  # the model is trained
    assert qat.int8_top1 >= qat.fp32_top1 - 0.02, report.summary()
    assert qat.top1_agreement >= 0.95, report.summary()
    ops = Counter(op.type for op in read_tflite(report.path).ops)
    assert ops["DEQUANTIZE"] == 0 and ops["CONV_2D"] > 10  # int8 kernels end to end
    sidecar = json.loads(Path(str(report.path) + ".json").read_text())
    assert sidecar["quantization"].startswith("quantization-aware") and sidecar["class_names"] == model.class_names

    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("the TFLite half passed; the ONNX half needs onnxruntime (pip install mobilenet[onnx])")
    onnx_report = quantization_aware_finetune(model, train_dir, tmp_path / "qat.onnx", val_dir=test_dir,
                                              settings=settings, quiet=True)
    print(onnx_report.summary())
    assert onnx_report.qat.int8_top1 >= onnx_report.qat.fp32_top1 - 0.02, onnx_report.summary()
    ops = _optimized_ops(onnx_report.path, tmp_path)
    assert ops["Conv"] == 0 and ops["Add"] == 0, ops  # every conv and residual add runs in int8


def _optimized_ops(path: Path, tmp_path: Path) -> Counter:
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)
    assert ops["QLinearConv"] > 10, ops
    return ops


def test_qat_flags_are_checked_before_training(tmp_path: Path, capsys) -> None:
    data = write_blobs(tmp_path / "blobs")
    code = cli(["train", str(data), "--model", "mobilenet_v1_0.25_32", "--qat", "--qat-epochs", "0",
                "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert ("--qat-epochs must be at least 1" in err) if HAS_LITERT else ("needs litert-torch" in err)
    assert not (tmp_path / "run").exists()


@needs_litert
def test_cli_train_with_qat_writes_the_int8_file(tmp_path: Path, capsys) -> None:
    data = write_blobs(tmp_path / "blobs", per_class=16)
    fmt = "onnx" if importlib.util.find_spec("onnxruntime") else "tflite"
    code = cli(["train", str(data), "--model", "mobilenet_v1_0.25_32", "--recipe", "finetune", "--epochs", "1",
                "--batch-size", "8", "--quiet", "--out", str(tmp_path / "run"), "--qat", "--qat-epochs", "1",
                "--qat-format", fmt])
    out = capsys.readouterr().out
    assert code == 0, out
    written = tmp_path / "run" / f"model_int8_qat.{fmt}"
    assert written.is_file() and Path(f"{written}.json").is_file()
    assert "quantization-aware int8" in out and "post-training int8" in out

"""Bad input on the command line: one line naming the problem and the fix, status 2, nothing half-written."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mobilenet
from mobilenet.cli.main import main as cli
from mobilenet.errors import MobilenetError
from mobilenet.fileio import atomic_write_text
from mobilenet.weights.torch_import import read_state_dict

CLASSES = ["ant", "bee"]


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    model = mobilenet.create_model("mobilenet_v1_0.25_32", num_classes=len(CLASSES))
    model.class_names = list(CLASSES)
    return Path(model.save(str(tmp_path / "model.safetensors")))


def image_folder(root: Path, good: int, corrupt: int) -> Path:
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(good):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
        for i in range(corrupt):
            (root / name / f"broken{i}.jpg").write_bytes(rng.bytes(300))
    return root


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str) -> str:
    assert cli(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def test_evaluate_rejects_a_zero_batch_and_a_folder_without_images(weights, tmp_path, capsys) -> None:
    good = image_folder(tmp_path / "good", good=2, corrupt=0)
    one_line_error(capsys, ["evaluate", str(weights), str(good), "--batch-size", "0"], "batch size must be")
    broken = image_folder(tmp_path / "broken", good=0, corrupt=2)
    with pytest.warns(UserWarning):
        one_line_error(capsys, ["evaluate", str(weights), str(broken)], "no image in", "4 files skipped")


def test_predict_fails_when_no_input_is_an_image(weights, tmp_path, capsys) -> None:
    broken = image_folder(tmp_path / "broken", good=0, corrupt=1)
    assert cli(["predict", str(weights), str(broken / "ant" / "broken0.jpg")]) == 2
    captured = capsys.readouterr()
    assert "skipped" in captured.out and "none of the 1 inputs could be read" in captured.err


def test_predict_labels_must_be_a_text_file(weights, tmp_path, capsys) -> None:
    photo = image_folder(tmp_path / "good", good=1, corrupt=0) / "ant" / "0.png"
    binary = tmp_path / "labels.bin"
    binary.write_bytes(bytes(range(128, 256)))
    one_line_error(capsys, ["predict", str(weights), str(photo), "--labels", str(binary)], "is not UTF-8 text")
    one_line_error(capsys, ["predict", str(weights), str(photo), "--labels", str(tmp_path)], "is a folder")


def test_foreign_files_point_at_the_command_that_takes_them(tmp_path, capsys) -> None:
    foreign = tmp_path / "model.tflite"
    foreign.write_bytes(b"TFL3" + bytes(100))
    photo = image_folder(tmp_path / "good", good=1, corrupt=0) / "ant" / "0.png"
    one_line_error(capsys, ["predict", str(foreign), str(photo)], "not mobilenet weights", "mobilenet import")
    one_line_error(capsys, ["import", str(foreign), "-o", str(tmp_path / "x.onnx")], "name it *.safetensors")
    assert not (tmp_path / "x.onnx").exists()
    one_line_error(capsys, ["models", "zzz*"], "no model matches 'zzz*'")


def test_bench_checks_its_output_folder_before_measuring(tmp_path, capsys) -> None:
    in_the_way = tmp_path / "results"
    in_the_way.write_text("a file, not a folder")
    one_line_error(capsys, ["bench", "mobilenet_v1_0.25_32", "-o", str(in_the_way)], "a file is in the way")
    one_line_error(capsys, ["bench", "mobilenet_v1_0.25_128", "--resolution", "0"], "resolution must be")


def test_atomic_writes_refuse_unusable_targets_and_keep_normal_permissions(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(MobilenetError, match="a file is in the way"):
        atomic_write_text(tmp_path / "file" / "report.json", "{}")
    with pytest.raises(MobilenetError, match="is a folder"):
        atomic_write_text(tmp_path, "{}")
    atomic_write_text(tmp_path / "report.json", "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "report.json"]


def test_state_dicts_that_need_code_or_are_corrupt_get_one_line(tmp_path) -> None:
    pickled = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)
    with pytest.raises(MobilenetError, match=r"pickles Python objects \(torch\.nn\.modules\.linear\.Linear\)") as info:
        read_state_dict(pickled)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(MobilenetError, match="is not a PyTorch state dict") as info:
        read_state_dict(corrupt)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


def test_warnings_print_as_one_line_without_library_source(weights, tmp_path) -> None:
    data = image_folder(tmp_path / "mixed", good=2, corrupt=1)
    result = subprocess.run([sys.executable, "-m", "mobilenet", "evaluate", str(weights), str(data)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("mobilenet: warning: skipping unreadable image") for line in lines)


def test_export_refuses_folders_and_nan_weights_before_converting(weights, tmp_path, capsys) -> None:
    (tmp_path / "dir.onnx").mkdir()
    one_line_error(capsys, ["export", str(weights), "--format", "onnx", "-o", str(tmp_path / "dir.onnx")],
                   "dir.onnx: it is a folder")
    (tmp_path / "m.onnx.json").mkdir()
    one_line_error(capsys, ["export", str(weights), "--format", "onnx", "-o", str(tmp_path / "m.onnx")],
                   "m.onnx.json: it is a folder")
    assert not (tmp_path / "m.onnx").exists()
    broken = mobilenet.load(weights)
    with torch.no_grad():
        broken.classifier.weight[0, 0] = float("nan")
    nan_weights = Path(broken.save(str(tmp_path / "nan.safetensors")))
    one_line_error(capsys, ["export", str(nan_weights), "--format", "torchscript"], "NaN or infinite values",
                   "classifier.weight")


def test_predict_json_stays_strict_json_when_weights_are_nan(weights, tmp_path, capsys) -> None:
    import json

    broken = mobilenet.load(weights)
    with torch.no_grad():
        broken.classifier.bias.fill_(float("nan"))
    path = broken.save(str(tmp_path / "nan.safetensors"))
    photo = image_folder(tmp_path / "good", good=1, corrupt=0) / "ant" / "0.png"
    assert cli(["predict", str(path), str(photo), "--json"]) == 0
    text = capsys.readouterr().out
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON output"))


def test_damaged_weights_metadata_is_named(weights, tmp_path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata()
    state = load_file(str(weights))
    cases = [
        ({"mobilenet.config": "{not json"}, state, "mobilenet.config is damaged"),
        ({"mobilenet.config": "{}"}, state, "model config is damaged"),
        ({"mobilenet.class_names": "5"}, state, "mobilenet.class_names is damaged"),
        ({}, {k: v for k, v in state.items() if k != "classifier.weight"}, 'Missing key(s) in state_dict: "classifier'),
    ]
    for i, (changes, tensors, message) in enumerate(cases):
        path = tmp_path / f"damaged{i}.safetensors"
        save_file(tensors, str(path), metadata={**metadata, **changes})
        with pytest.raises(MobilenetError, match=re.escape(message)):
            mobilenet.load(path)


def test_impossible_widths_are_one_line_errors() -> None:
    from mobilenet.weights.torch_import import torchvision_arch

    with pytest.raises(MobilenetError, match="too wide: at most 32"):
        mobilenet.create_model("mobilenet_v1_0.25_128", width_multiplier=1e9)
    for width in (-1.0, float("nan")):
        with pytest.raises(MobilenetError, match="--width-mult must be a number > 0"):
            torchvision_arch("mobilenet_v2", width)


def test_a_closed_pipe_ends_the_listing_quietly() -> None:
    process = subprocess.Popen([sys.executable, "-m", "mobilenet", "models"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # like `mobilenet models | head -0`, closed long before the first line is written
    assert process.wait(timeout=120) == 0
    assert process.stderr.read() == b""


def test_load_takes_paths_and_run_folders(weights, tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.safetensors").write_bytes(weights.read_bytes())
    assert mobilenet.load(run).class_names == CLASSES
    with pytest.raises(MobilenetError, match="weights file or run folder must be a path .*, got None"):
        mobilenet.load(None)  # type: ignore[arg-type]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MobilenetError, match="has no best.safetensors or last.safetensors"):
        mobilenet.load(empty)


def test_options_that_do_not_apply_are_refused(weights, capsys) -> None:
    one_line_error(capsys, ["bench", "mobilenet_v1_0.25_32", "--family", "v3"], "add --sweep or drop --family")
    one_line_error(capsys, ["export", str(weights), "--format", "onnx", "--calibration-images", "5"],
                   "--calibration-images applies to --int8 exports")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"alpha": 0.5, "width_multiplier": 0.75}, "alpha and width_multiplier name the same option"),
        ({"include_top": "no"}, "include_top must be True or False"),
        ({"dropout": "0.5"}, "dropout must be a finite number"),
        ({"bn_eps": None}, "bn_eps must be a finite number"),
        ({"preprocessing": None}, "preprocessing must be a Preprocessing"),
    ],
)
def test_create_model_checks_option_types(options: dict, message: str) -> None:
    with pytest.raises(MobilenetError, match=message):
        mobilenet.create_model("mobilenet_v1_0.25_128", **options)


def test_api_mistakes_that_used_to_pass_quietly(weights, tmp_path) -> None:
    from mobilenet.evaluation.predict import predict
    from mobilenet.profiling.cost import cost_of_model

    model = mobilenet.load(weights)
    photo = image_folder(tmp_path / "good", good=1, corrupt=0) / "ant" / "0.png"
    assert [p.path for p in predict(model, str(photo), topk=1)] == [str(photo)]  # one path, not its characters
    for kwargs, message in (({"topk": 0}, "topk must be an integer >= 1"), ({"batch_size": 0}, "batch_size must"),
                            ({"labels": "ab"}, "labels must be a list of class names")):
        with pytest.raises(MobilenetError, match=message):
            predict(model, [photo], **kwargs)
    headless = mobilenet.create_model("mobilenet_v1_0.25_32", include_top=False)
    with pytest.raises(MobilenetError, match="has no classifier"):
        predict(headless, [photo])
    with pytest.raises(MobilenetError, match="built without a classifier"):
        headless.reset_classifier(5)
    with pytest.raises(MobilenetError, match="3 class names for a classifier of 2 classes"):
        model.save(str(tmp_path / "x.safetensors"), class_names=["a", "b", "c"])
    with pytest.raises(MobilenetError, match="name the file \\*.safetensors"):
        model.save(str(tmp_path / "x.onnx"))
    with pytest.raises(MobilenetError, match="resolution must be an integer >= 32, got 0"):
        cost_of_model(model, 0)
    with pytest.raises(MobilenetError, match="shell-style pattern"):
        mobilenet.list_models(None)  # type: ignore[arg-type]


def test_image_classifier_evaluates_its_own_model(weights, tmp_path) -> None:
    from mobilenet.training import ImageClassifier

    data = image_folder(tmp_path / "data", good=2, corrupt=0)
    run = tmp_path / "run"
    run.mkdir()
    other = mobilenet.create_model("mobilenet_v1_0.25_32", num_classes=3)
    other.class_names = ["x", "y", "z"]
    other.save(str(run / "best.safetensors"))  # a different model in the run folder must not be the one scored
    (run / "mine.safetensors").write_bytes(weights.read_bytes())
    classifier = ImageClassifier.from_weights(run / "mine.safetensors")
    assert classifier.evaluate(data)["num_samples"] == 4
    with pytest.raises(MobilenetError, match="cannot tell the format"):
        classifier.export(tmp_path / "model.bin")


def test_preprocessing_and_export_refuse_what_they_cannot_use(tmp_path) -> None:
    from mobilenet.export.api import export_model
    from mobilenet.models import Preprocessing

    for fields, message in (({"mean": (float("nan"),) * 3}, "mean must be a non-empty list of finite numbers"),
                            ({"channel_order": "GBR"}, "channel_order must be 'RGB' or 'BGR'"),
                            ({"labels_offset": -1}, "labels_offset must be 0 or 1")):
        with pytest.raises(MobilenetError, match=message):
            Preprocessing(**fields)
    with pytest.raises(MobilenetError, match="preprocessing must be a table"):
        Preprocessing.from_dict(None)  # type: ignore[arg-type]
    backbone = mobilenet.create_model("mobilenet_v1_0.25_32", features_only=True)
    with pytest.raises(MobilenetError, match="features_only model returns a list"):
        export_model(backbone, tmp_path / "b.onnx", "onnx")
    with pytest.raises(MobilenetError, match="export takes a MobileNet"):
        export_model(torch.nn.Linear(2, 2), tmp_path / "l.onnx", "onnx")

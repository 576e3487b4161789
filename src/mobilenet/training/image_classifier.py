"""A Model Maker-style Python API over the same trainer, evaluator and predictor the CLI uses.

>>> classifier = ImageClassifier.create("flowers/train", model="mobilenet_v3_small_1.0_224", epochs=10)
>>> classifier.evaluate("flowers/test")["top1"]
>>> classifier.predict(["rose.jpg"])[0].labels[0]
>>> classifier.export("flowers.safetensors")
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from mobilenet.errors import MobilenetError
from mobilenet.evaluation.predict import Prediction, expand_inputs, predict
from mobilenet.evaluation.report import evaluate_folder
from mobilenet.fileio import as_path
from mobilenet.models.builder import MobileNet
from mobilenet.training.checkpoint import BEST_WEIGHTS
from mobilenet.training.config import make_train_config
from mobilenet.training.trainer import Trainer, TrainResult
from mobilenet.weights.format import load


class ImageClassifier:
    """A trained classifier: ``create`` trains it, then ``evaluate``, ``predict`` and ``export``."""

    def __init__(self, model: MobileNet, run_dir: Path, result: TrainResult | None = None) -> None:
        self.model = model
        self.run_dir = run_dir
        self.result = result

    @property
    def class_names(self) -> list[str]:
        return list(self.model.class_names or [])

    @classmethod
    def create(
        cls,
        train_data: str | Path,
        model: str = "mobilenet_v3_small_1.0_224",
        epochs: int = 10,
        *,
        validation_data: str | Path | None = None,
        run_dir: str | Path | None = None,
        recipe: str = "finetune",
        quiet: bool = True,
        **options: Any,
    ) -> ImageClassifier:
        """Train on an image folder. ``model`` is a model name (trained from scratch) or a weights file
        (transfer learning: the head alone first, then everything with a lower backbone learning rate)."""
        as_path(train_data, "train_data")
        if not isinstance(model, (str, os.PathLike)):
            raise MobilenetError(f"model must be a model name or a weights path, got {model!r}")
        weights = Path(model) if Path(model).suffix == ".safetensors" or Path(model).is_dir() else None
        if weights is not None:
            from mobilenet.weights.format import read_metadata, resolve_weights

            weights = resolve_weights(weights)
            meta = read_metadata(weights)["config"]
            from mobilenet.models.registry import model_name

            name = model_name(meta.arch, meta.width_multiplier, meta.resolution)
            options.setdefault("freeze_backbone_epochs", max(1, epochs // 3))
        else:
            name = model
        config = make_train_config(recipe, model=name, epochs=epochs, **options)
        folder = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="mobilenet-run-"))
        result = Trainer(
            config, train_data, validation_data, folder, init_weights=weights, resume=run_dir is not None, quiet=quiet
        ).fit()
        return cls(load(folder / BEST_WEIGHTS), folder, result)

    @classmethod
    def from_weights(cls, path: str | Path) -> ImageClassifier:
        from mobilenet.weights.format import resolve_weights

        resolved = resolve_weights(path)
        return cls(load(resolved), resolved.parent)

    def evaluate(self, test_data: str | Path, batch_size: int = 64) -> dict[str, Any]:
        """Evaluate this classifier's model (not whatever its run folder holds now) on a folder of class folders."""
        with tempfile.TemporaryDirectory(prefix="mobilenet-eval-") as scratch:
            weights = self.model.save(str(Path(scratch) / "model.safetensors"))
            return evaluate_folder(weights, test_data, batch_size=batch_size).to_dict()

    def predict(self, images: str | Path | list[str | Path], topk: int = 1, backend: str = "auto") -> list[Prediction]:
        """Top-``topk`` classes for an image, a folder, a glob, or a list of them."""
        items = [images] if isinstance(images, (str, Path)) else list(images)
        return predict(self.model, expand_inputs([str(i) for i in items]), topk=topk, backend=backend)

    def export(self, path: str | Path, **options: object) -> Path:
        """Write the model by the file's suffix: ``.safetensors`` weights (with class names and preprocessing),
        or a checked deployment file, ``.onnx``, ``.tflite``, ``.pt`` or ``.pt2`` (``options`` go to
        :func:`mobilenet.export.export_model`, e.g. ``int8=True, calibration="data/train"``)."""
        from mobilenet.export.api import FORMATS, SUFFIXES, export_model

        suffix = Path(path).suffix.lower()
        by_suffix = {SUFFIXES[fmt]: fmt for fmt in FORMATS}
        if suffix in by_suffix:
            return export_model(self.model, path, by_suffix[suffix], **options).path
        if suffix != ".safetensors":
            raise MobilenetError(f"cannot tell the format of {path}: name it *.safetensors (weights) or one of "
                                 f"{', '.join(by_suffix)} (a checked deployment file)")
        if options:
            raise MobilenetError(f"export options apply to {', '.join(by_suffix)} files, not {suffix}")
        return self.model.save(str(path))

"""`mobilenet train | finetune | evaluate | predict | demo`: from an image folder to a trained model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mobilenet.errors import MobilenetError
from mobilenet.fileio import dump_json

# Flags that map one-to-one onto TrainConfig fields; None means "keep the recipe's value".
_TRAIN_FLAGS: list[tuple[str, type, str]] = [
    ("epochs", int, "number of epochs"),
    ("batch_size", int, "global batch size (split across processes)"),
    ("lr", float, "peak learning rate"),
    ("weight_decay", float, "L2 / decoupled weight decay"),
    ("optimizer", str, "adamw | rmsprop | sgd"),
    ("schedule", str, "cosine | step | exponential | constant"),
    ("warmup_epochs", float, "linear warm-up length"),
    ("label_smoothing", float, "label smoothing"),
    ("ema_decay", float, "weight EMA decay (0 disables)"),
    ("dropout", float, "dropout before the classifier"),
    ("clip_grad_norm", float, "gradient clipping norm (0 disables)"),
    ("precision", str, "auto | fp32 | bf16 | fp16"),
    ("seed", int, "random seed"),
    ("val_fraction", float, "validation split when no --val folder is given"),
    ("num_workers", int, "data loading processes"),
    ("device", str, "auto | cpu | cuda"),
]


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a MobileNet on an image folder (one subfolder per class)")
    train.add_argument("data", help="training image folder")
    train.add_argument("--model", default=None, help="model name, e.g. mobilenet_v3_small_1.0_224")
    _add_training_flags(train, default_recipe="paper-v2")
    train.set_defaults(func=run_train)

    finetune = subparsers.add_parser("finetune", help="transfer learning from weights to a new image folder")
    finetune.add_argument("data", help="training image folder")
    finetune.add_argument("--from", dest="init", required=True, help="weights file (ours or imported) or run folder")
    finetune.add_argument("--freeze-epochs", type=int, default=None,
                          help="stage 1 length in epochs, head only (default: a third of the run)")
    finetune.add_argument("--backbone-lr-scale", type=float, default=None, help="stage 2 backbone lr factor")
    _add_training_flags(finetune, default_recipe="finetune")
    finetune.set_defaults(func=run_finetune)

    evaluate = subparsers.add_parser("evaluate", help="top-1/top-5, per-class metrics and a confusion matrix")
    evaluate.add_argument("checkpoint", help="weights file or run folder")
    evaluate.add_argument("data", help="image folder with the checkpoint's class subfolders")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--out", default=None, help="folder for evaluation.json and confusion_matrix.png")
    evaluate.add_argument("--json", action="store_true", help="print the JSON report")
    evaluate.set_defaults(func=run_evaluate)

    predict = subparsers.add_parser("predict", help="class names with probabilities for images")
    predict.add_argument("checkpoint", help="weights file or run folder")
    predict.add_argument("paths", nargs="+", help="image files, folders or globs")
    predict.add_argument("--topk", type=int, default=5)
    predict.add_argument("--labels", default=None, help="a labels file, one class name per line")
    predict.add_argument("--json", action="store_true")
    predict.add_argument("--backend", choices=("auto", "onednn", "compile", "jit", "eager"), default="auto",
                         help="auto: folded TorchScript with oneDNN Graph fusion, else plain TorchScript, else eager")
    predict.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                         help="bf16: 3-7x faster than eager fp32 on CPUs with bf16 units, with bf16 rounding")
    predict.set_defaults(func=run_predict)

    demo = subparsers.add_parser("demo", help="generate the built-in data, train, evaluate and predict")
    demo.add_argument("--out", default="demo_output", help="output folder")
    demo.add_argument("--epochs", type=int, default=None)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=run_demo)


def _add_training_flags(parser: argparse.ArgumentParser, default_recipe: str) -> None:
    parser.add_argument("--val", default=None, help="validation image folder (default: a stratified split)")
    parser.add_argument("--recipe", default=default_recipe, help="paper-v1 | paper-v2 | paper-v3 | finetune")
    parser.add_argument("--out", default=None, help="run folder (default runs/<model>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--deterministic", action="store_true", help="deterministic kernels (bitwise resume)")
    parser.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes")
    parser.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory layout")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--qat", action="store_true",
                        help="then quantization-aware fine-tuning to an int8 TFLite file (needs the [litert] extra)")
    parser.add_argument("--qat-epochs", type=int, default=2, help="QAT epochs (default 2)")
    parser.add_argument("--qat-lr", type=float, default=1e-3, help="QAT SGD learning rate, cosine to 0 (default 1e-3)")
    parser.add_argument("--qat-format", choices=("tflite", "onnx"), default="tflite", help="QAT output format")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a training option by name; values as JSON, e.g. hflip=0.0, train_scale=[0.5,1.0], dropout=null"
    )
    for name, kind, text in _TRAIN_FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None, help=text)


# Options that --set must not touch: a dedicated option sets them, and a --set would clash with it or be ignored.
_TRAIN_DEDICATED = {"model": "--model", "recipe": "--recipe"}
_FINETUNE_DEDICATED = {
    "model": "--from (the weights decide the model)",
    "recipe": "--recipe",
    "freeze_backbone_epochs": "--freeze-epochs",
    "backbone_lr_scale": "--backbone-lr-scale",
}


def _overrides(args: argparse.Namespace, dedicated: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(args, name) for name, _, _ in _TRAIN_FLAGS}
    if args.deterministic:
        values["deterministic"] = True
    if args.sync_bn:
        values["sync_bn"] = True
    if args.no_channels_last:
        values["channels_last"] = False
    for item in args.set:
        key, value = _parse_set(item, dedicated)
        values[key] = value
    if values.get("clip_grad_norm") == 0:
        values["clip_grad_norm"] = None
    return values


def _parse_set(item: str, dedicated: dict[str, str]) -> tuple[str, Any]:
    """One ``--set KEY=VALUE``: a known, settable key and a value of that option's type."""
    from mobilenet.training.config import FIELD_TYPES, coerce_option

    raw_key, sep, raw = item.partition("=")
    key = raw_key.strip().replace("-", "_")
    if not sep or not key:
        raise MobilenetError(f"--set expects KEY=VALUE, e.g. --set hflip=0.0; got {item!r}")
    if key in dedicated:
        raise MobilenetError(f"--set {item}: {key} has its own option; use {dedicated[key]} instead")
    if key not in FIELD_TYPES:
        valid = ", ".join(name for name in FIELD_TYPES if name not in dedicated)
        raise MobilenetError(f"--set {item}: {key!r} is not a training option; valid keys: {valid}")
    # Text options take the text as typed (device=cuda:0, description=123); others are JSON (0.5, [0.5,1.0],
    # true, null), and anything that is not JSON stays text for the type check to reject by name.
    value: Any = raw
    if FIELD_TYPES[key] is not str:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            pass
    try:
        return key, coerce_option(key, value)
    except MobilenetError as exc:
        raise MobilenetError(f"--set {item}: {exc}") from None


def run_train(args: argparse.Namespace) -> int:
    from mobilenet.training import Trainer, make_train_config

    _check_qat_available(args)
    overrides = _overrides(args, _TRAIN_DEDICATED)
    if args.model is None:
        raise MobilenetError("--model is required, e.g. --model mobilenet_v3_small_1.0_224 (see `mobilenet models`)")
    config = make_train_config(args.recipe, model=args.model, **overrides)
    from mobilenet.models.registry import parse_name

    parse_name(config.model)  # fail before reading any data
    out = Path(args.out or f"runs/{config.model}")
    result = Trainer(config, args.data, args.val, out, resume=args.resume, quiet=args.quiet).fit()
    _maybe_qat(args, result.weights, config)
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    from mobilenet.training import Trainer, make_train_config
    from mobilenet.weights.format import read_metadata, resolve_weights

    _check_qat_available(args)
    _check_finetune_flags(args)
    overrides = _overrides(args, _FINETUNE_DEDICATED)
    init = resolve_weights(args.init)
    meta = read_metadata(init)
    if args.backbone_lr_scale is not None:
        overrides["backbone_lr_scale"] = args.backbone_lr_scale
    config = make_train_config(args.recipe, model=_name_of(meta["config"]), **overrides)
    # The head alone first: a third of the run unless told, counted from the run's epochs (flag or recipe).
    freeze = args.freeze_epochs if args.freeze_epochs is not None else max(1, config.epochs // 3)
    config = make_train_config(args.recipe, model=config.model, **{**overrides, "freeze_backbone_epochs": freeze})
    out = Path(args.out or f"runs/finetune-{config.model}")
    result = Trainer(config, args.data, args.val, out, init_weights=init, resume=args.resume, quiet=args.quiet).fit()
    _maybe_qat(args, result.weights, config)
    return 0


def _check_finetune_flags(args: argparse.Namespace) -> None:
    if args.freeze_epochs is not None and args.freeze_epochs < 0:
        raise MobilenetError(f"--freeze-epochs must be an integer >= 0 (0: no frozen stage), got {args.freeze_epochs}")
    if args.backbone_lr_scale is not None and not args.backbone_lr_scale > 0:
        raise MobilenetError(
            f"--backbone-lr-scale must be a number > 0 (the backbone's share of the learning rate), "
            f"got {args.backbone_lr_scale}"
        )


def _check_qat_available(args: argparse.Namespace) -> None:
    """Fail before training, not after it, when --qat cannot run."""
    import importlib.util

    if args.qat and (importlib.util.find_spec("litert_torch") is None or importlib.util.find_spec("torchao") is None):
        raise MobilenetError("--qat writes an int8 TFLite file and needs litert-torch: install torch==2.13.0 first, "
                             "then pip install 'mobilenet[litert]'")
    if args.qat and args.qat_epochs < 1:
        raise MobilenetError(f"--qat-epochs must be at least 1, got {args.qat_epochs}")


def _maybe_qat(args: argparse.Namespace, weights: Path, config: Any) -> None:
    """``--qat``: fine-tune the trained weights with fake quantization; write ``model_int8_qat.tflite|onnx``."""
    if not args.qat:
        return
    from mobilenet.training.qat import QatSettings, quantization_aware_finetune
    from mobilenet.weights.format import load

    settings = QatSettings(epochs=args.qat_epochs, lr=args.qat_lr, batch_size=config.batch_size, seed=config.seed,
                           val_fraction=config.val_fraction, train_scale=tuple(config.train_scale), hflip=config.hflip)
    report = quantization_aware_finetune(load(weights), args.data, weights.parent / f"model_int8_qat.{args.qat_format}",
                                         val_dir=args.val, settings=settings, quiet=args.quiet)
    print(report.summary())


def _name_of(config: Any) -> str:
    from mobilenet.models.registry import model_name

    return model_name(config.arch, config.width_multiplier, config.resolution)


def run_evaluate(args: argparse.Namespace) -> int:
    from mobilenet.evaluation.report import evaluate_folder

    report = evaluate_folder(args.checkpoint, args.data, batch_size=args.batch_size, out_dir=args.out)
    if args.json:
        print(dump_json(report.to_dict()))
        return 0
    print(format_evaluation(report))
    return 0


def format_evaluation(report: Any) -> str:
    from mobilenet.cli.tables import format_table

    result = report.result
    lines = [
        f"{result.num_samples} images: top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  loss {result.loss:.4f}"
        f"  (skipped files: {result.skipped})",
        "",
    ]
    rows = [
        (c["class"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"])
        for c in result.per_class(report.class_names)
    ]
    lines.append(format_table(("class", "precision", "recall", "f1", "support"), rows))
    if report.json_path:
        lines += ["", f"report: {report.json_path}", f"confusion matrix: {report.confusion_png}"]
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    from mobilenet.evaluation.predict import expand_inputs, predict
    from mobilenet.fileio import read_label_file
    from mobilenet.weights.format import load, resolve_weights

    if args.topk < 1:
        raise MobilenetError(f"--topk must be >= 1, got {args.topk}")
    model = load(resolve_weights(args.checkpoint))
    labels = read_label_file(args.labels) if args.labels else None
    results = predict(model, expand_inputs(args.paths), topk=args.topk, labels=labels, backend=args.backend,
                      precision=args.precision)
    if args.json:
        print(dump_json([r.to_dict() for r in results]))
    else:
        print_predictions(results)
    if all(result.error for result in results):
        raise MobilenetError(f"none of the {len(results)} inputs could be read as an image; pass JPEG/PNG files")
    return 0


def print_predictions(results: list[Any]) -> None:
    for result in results:
        if result.error:
            print(f"{result.path}: skipped ({result.error})")
            continue
        ranked = ", ".join(f"{label} {prob:.3f}" for label, prob in zip(result.labels, result.probabilities))
        print(f"{result.path}: {ranked}")


def run_demo(args: argparse.Namespace) -> int:
    from mobilenet.demo import run_demo as demo

    demo(Path(args.out), epochs=args.epochs, seed=args.seed)
    return 0

"""`mobilenet import`: turn a released model file into our safetensors weights, preprocessing included."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from mobilenet.errors import MobilenetError
from mobilenet.models.builder import MobileNet


def _import_tflite(source: Path, labels: Path | None) -> MobileNet:
    # Imported lazily: the TFLite reader pulls in ai-edge-litert, an optional dependency.
    from mobilenet.weights.tflite_import import import_tflite

    return import_tflite(source, labels=labels)


# File extension -> (importer, what the format is); the error for other files lists these.
IMPORTERS: dict[str, tuple[Callable[[Path, Path | None], MobileNet], str]] = {
    ".tflite": (_import_tflite, "TFLite flatbuffer, float or quantized (TF-slim, Coral, Keras conversions)"),
}


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import",
        help="convert released weights (.tflite) into a mobilenet safetensors file",
        description="Convert released weights into a mobilenet safetensors file that `mobilenet.load` reads. "
        "Supported: " + ", ".join(f"{ext} ({what})" for ext, (_, what) in IMPORTERS.items()) + ".",
    )
    parser.add_argument("source", type=Path, metavar="SOURCE", help="the file to import, e.g. model.tflite")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="where to write .safetensors")
    parser.add_argument("--labels", type=Path, metavar="FILE", help="class names, one per line, in output order")
    parser.set_defaults(func=run_import)


def importer_for(source: Path) -> Callable[[Path, Path | None], MobileNet]:
    """The importer for a file's extension, or an error listing the supported formats."""
    entry = IMPORTERS.get(source.suffix.lower())
    if entry is None:
        supported = "; ".join(f"{ext}: {what}" for ext, (_, what) in IMPORTERS.items())
        raise MobilenetError(
            f"cannot import {source.name!r}: unknown format {source.suffix or '(no extension)'!r}; "
            f"supported formats are {supported}"
        )
    return entry[0]


def run_import(args: argparse.Namespace) -> int:
    importer = importer_for(args.source)
    if not args.source.is_file():
        raise MobilenetError(f"file not found: {args.source}")
    model = importer(args.source, args.labels)
    written = model.save(str(args.output))
    config, prep = model.config, model.preprocessing
    extra = model.weights_info.get("extra", {})
    print(
        f"{args.source.name}: {extra.get('model', config.arch)} ({extra.get('quantization', 'float')} weights, "
        f"{config.num_classes} classes)"
    )
    print(
        f"preprocessing: {prep.resolution}px, mean {list(prep.mean)}, std {list(prep.std)}, "
        f"labels_offset {prep.labels_offset}"
    )
    print(f"wrote {written}")
    return 0

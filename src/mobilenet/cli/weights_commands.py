"""`mobilenet import`: turn a released model file into our safetensors weights, preprocessing included."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from mobilenet.errors import MobilenetError
from mobilenet.models.builder import MobileNet
from mobilenet.models.registry import model_name
from mobilenet.weights.format import non_finite_tensors

_STATE_DICT_EXTENSIONS = (".pth", ".pt", ".bin", ".safetensors")


def _import_tflite(args: argparse.Namespace) -> MobileNet:
    # Imported lazily: the TFLite reader pulls in ai-edge-litert, an optional dependency.
    from mobilenet.weights.tflite_import import import_tflite

    return import_tflite(args.source, labels=args.labels)


def _import_keras(args: argparse.Namespace) -> MobileNet:
    # Imported lazily: keras and h5py are optional dependencies (mobilenet[keras]).
    from mobilenet.weights.keras_import import import_keras

    return import_keras(args.source, labels=args.labels, resolution=args.resolution)


def _import_state_dict(args: argparse.Namespace) -> MobileNet:
    from mobilenet.weights.format import read_metadata
    from mobilenet.weights.tflite_import import labels_for_outputs
    from mobilenet.weights.torch_import import model_from_state_dict, read_state_dict

    if args.from_layout is None or args.arch is None:
        missing = "--from-layout torchvision|timm" if args.from_layout is None else "--arch NAME"
        raise MobilenetError(
            f"{args.source.name} is a state dict: say whose with {missing} (e.g. --from-layout torchvision "
            "--arch mobilenet_v3_large, or --from-layout timm --arch mobilenetv2_100)"
        )
    if args.from_layout == "timm" and args.width_mult != 1.0:
        raise MobilenetError("timm's model names carry the width (mobilenetv2_050); --width-mult is torchvision's")
    if args.source.suffix.lower() == ".safetensors" and _is_ours(args.source, read_metadata):
        raise MobilenetError(f"{args.source.name} is already a mobilenet weights file; load it with mobilenet.load")
    state = read_state_dict(args.source)
    model = model_from_state_dict(
        state, args.from_layout, args.arch, width_mult=args.width_mult, source_name=args.source.name
    )
    if args.labels:
        model.class_names = labels_for_outputs(args.labels, model.config.num_classes, model.preprocessing.labels_offset)
    return model


def _is_ours(path: Path, read_metadata: Callable[[Path], object]) -> bool:
    try:
        read_metadata(path)
    except MobilenetError:
        return False
    return True


# File extension -> (importer, what the format is); the error for other files lists these.
IMPORTERS: dict[str, tuple[Callable[[argparse.Namespace], MobileNet], str]] = {
    ".tflite": (_import_tflite, "TFLite flatbuffer, float or quantized (TF-slim, Coral, Keras conversions)"),
    ".keras": (_import_keras, "Keras 3 model of keras.applications MobileNet/V2/V3"),
    ".h5": (_import_keras, "Keras HDF5 model or weights (the files keras.applications downloads)"),
    **{
        ext: (_import_state_dict, "PyTorch state dict of torchvision or timm (with --from-layout and --arch)")
        for ext in _STATE_DICT_EXTENSIONS
    },
}


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    formats = sorted({what for _, what in IMPORTERS.values()})
    parser = subparsers.add_parser(
        "import",
        help="convert released weights (.tflite, .keras/.h5, torchvision/timm state dicts) into mobilenet weights",
        description="Convert released weights into a mobilenet safetensors file that `mobilenet.load` reads. "
        f"Supported ({', '.join(IMPORTERS)}): " + "; ".join(formats) + ".",
    )
    parser.add_argument("source", type=Path, metavar="SOURCE", help="the file to import, e.g. model.tflite")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="where to write .safetensors")
    parser.add_argument("--labels", type=Path, metavar="FILE", help="class names, one per line, in output order")
    parser.add_argument(
        "--from-layout", choices=("torchvision", "timm"), help="whose state dict SOURCE is (.pth/.pt/.bin/.safetensors)"
    )
    parser.add_argument(
        "--arch",
        metavar="NAME",
        help="the source's model name: mobilenet_v3_large (torchvision), mobilenetv2_100 (timm)",
    )
    parser.add_argument(
        "--width-mult", type=float, default=1.0, metavar="W", help="torchvision's width_mult (default 1.0)"
    )
    parser.add_argument(
        "--resolution", type=int, metavar="PX",
        help="Keras input size (weights-only .h5: default 224; a saved model: overrides its own)",
    )
    parser.set_defaults(func=run_import)


# Containers whose first bytes say what they are: a file named .h5 that is not HDF5 is not a Keras file.
_SIGNATURES = {".h5": b"\x89HDF\r\n\x1a\n", ".keras": b"PK\x03\x04"}


def _supported() -> str:
    return "; ".join(f"{ext}: {what}" for ext, (_, what) in IMPORTERS.items())


def importer_for(source: Path) -> Callable[[argparse.Namespace], MobileNet]:
    """The importer for a file's extension, or an error listing the supported formats."""
    entry = IMPORTERS.get(source.suffix.lower())
    if entry is None:
        raise MobilenetError(
            f"cannot import {source.name!r}: unknown format {source.suffix or '(no extension)'!r}; "
            f"supported formats are {_supported()}"
        )
    return entry[0]


def _check_signature(source: Path) -> None:
    signature = _SIGNATURES.get(source.suffix.lower())
    if signature is None:
        return
    with open(source, "rb") as handle:
        if handle.read(len(signature)) != signature:
            kind = "an HDF5" if source.suffix.lower() == ".h5" else "a Keras (zip)"
            raise MobilenetError(
                f"cannot import {source.name!r}: it is not {kind} file despite its extension; "
                f"supported formats are {_supported()}"
            )


def _check_options(args: argparse.Namespace, importer: Callable[[argparse.Namespace], MobileNet]) -> None:
    """Options that do not apply to the file's format are a mistake worth saying, not something to ignore."""
    if importer is not _import_state_dict and (args.from_layout or args.arch or args.width_mult != 1.0):
        raise MobilenetError("--from-layout, --arch and --width-mult apply to state dicts (.pth/.pt/.bin/.safetensors)")
    if importer is not _import_keras and args.resolution is not None:
        raise MobilenetError("--resolution applies to Keras files only (weights-only .h5 files have no input size)")


def run_import(args: argparse.Namespace) -> int:
    importer = importer_for(args.source)
    if not args.source.is_file():
        raise MobilenetError(f"file not found: {args.source}")
    _check_options(args, importer)
    if args.output.suffix.lower() != ".safetensors":
        raise MobilenetError(f"-o {args.output}: import writes mobilenet weights, so name it *.safetensors "
                             "(then `mobilenet export` makes ONNX, TFLite, TorchScript or pt2)")
    _check_signature(args.source)
    model = importer(args)
    damaged = non_finite_tensors(model)
    if damaged:
        raise MobilenetError(f"{args.source.name} holds NaN or infinite values in {len(damaged)} tensors "
                             f"(first: {damaged[0]}); the source weights are damaged, nothing was written")
    written = model.save(str(args.output))
    config, prep = model.config, model.preprocessing
    extra = model.weights_info.get("extra", {})
    ours = model_name(config.arch, config.width_multiplier, config.resolution)
    source = f"{extra['model']} -> {ours}" if extra.get("model", ours) != ours else ours
    print(f"{args.source.name}: {source} ({extra.get('quantization', 'float')} weights, {config.num_classes} classes)")
    print(
        f"preprocessing: {prep.resolution}px, mean {list(prep.mean)}, std {list(prep.std)}, "
        f"labels_offset {prep.labels_offset}"
    )
    print(f"wrote {written}")
    return 0

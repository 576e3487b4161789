"""`mobilenet export`: a checkpoint to ONNX, TFLite, TorchScript or pt2, checked at once in its runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

from mobilenet.errors import MobilenetError
from mobilenet.fileio import dump_json


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    from mobilenet.export.api import FORMATS

    export = subparsers.add_parser("export", help="export a checkpoint for deployment, checked against PyTorch")
    export.add_argument("checkpoint", help="weights file (ours or imported) or run folder")
    export.add_argument("--format", required=True, choices=FORMATS, help="target format")
    export.add_argument("--int8", action="store_true", help="post-training static int8 (onnx, tflite)")
    export.add_argument("--calibration", default=None, help="image folder to calibrate int8 ranges on")
    export.add_argument("--calibration-images", type=int, default=None,
                        help="how many calibration images for --int8 (default 200)")
    export.add_argument("--val", default=None, help="validation folder: check images and the int8 accuracy report")
    export.add_argument("-o", "--output", default=None, help="output file (default: beside the checkpoint)")
    export.add_argument("--json", action="store_true", help="print the export report as JSON")
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from mobilenet.export.api import default_output, export_model
    from mobilenet.export.verify import describe
    from mobilenet.weights.format import load, resolve_weights

    if args.calibration_images is not None and not args.int8:
        raise MobilenetError("--calibration-images applies to --int8 exports; add --int8 or drop it")
    calibration_images = 200 if args.calibration_images is None else args.calibration_images
    if calibration_images < 1:
        raise MobilenetError(f"--calibration-images must be >= 1, got {calibration_images}")
    source = resolve_weights(args.checkpoint)
    model = load(source)
    output = Path(args.output) if args.output else default_output(source, args.format, args.int8)
    result = export_model(
        model,
        output,
        args.format,
        int8=args.int8,
        calibration=args.calibration,
        calibration_images=calibration_images,
        validation=args.val,
    )
    if args.json:
        print(dump_json(result.to_dict()))
        return 0
    kind = "int8" if result.int8 else "fp32"
    print(f"wrote {result.path} ({args.format} {kind}, {result.size_bytes / 1e6:.2f} MB, {result.seconds:.1f} s)")
    print(f"check in {result.check.runtime}: {describe(result.check)}: passed")
    if result.accuracy is not None:
        print(result.accuracy.summary())
    print(f"labels and preprocessing: {result.sidecar}")
    return 0

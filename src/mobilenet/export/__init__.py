"""Deployment: BN folding, ONNX / TFLite / TorchScript / pt2 export, int8 quantization, runtimes, checks."""

from mobilenet.export.api import FORMATS, ExportResult, export_model
from mobilenet.export.fold import fold_batchnorm
from mobilenet.export.runtimes import Runner, load_runner

__all__ = ["FORMATS", "ExportResult", "Runner", "export_model", "fold_batchnorm", "load_runner"]

"""Data: decoding, transforms derived from ``Preprocessing``, image folders, loaders, demo dataset."""

from mobilenet.data.decode import IMAGE_EXTENSIONS, ImageDecodeError, is_image_file, load_rgb
from mobilenet.data.folder import (
    CorruptImageWarning,
    DataBundle,
    FolderScan,
    ImageFolderDataset,
    build_dataloaders,
    collate_skip_bad,
    scan_image_folder,
    stratified_split,
    worker_init_fn,
)
from mobilenet.data.synthetic import SHAPES, ShapesPlan, generate_shapes_dataset, plan_shapes_dataset
from mobilenet.data.transforms import (
    EvalTransform,
    TrainTransform,
    eval_transform,
    to_tensor_normalized,
    train_transform,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "SHAPES",
    "CorruptImageWarning",
    "DataBundle",
    "EvalTransform",
    "FolderScan",
    "ImageDecodeError",
    "ImageFolderDataset",
    "ShapesPlan",
    "TrainTransform",
    "build_dataloaders",
    "collate_skip_bad",
    "eval_transform",
    "generate_shapes_dataset",
    "is_image_file",
    "load_rgb",
    "plan_shapes_dataset",
    "scan_image_folder",
    "stratified_split",
    "to_tensor_normalized",
    "train_transform",
    "worker_init_fn",
]

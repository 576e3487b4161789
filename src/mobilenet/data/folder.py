"""Image-folder datasets (``root/<class>/<image>``), splitting and DataLoader construction."""

from __future__ import annotations

import os
import random
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from mobilenet.data.decode import IMAGE_EXTENSIONS, ImageDecodeError, is_image_file, load_rgb
from mobilenet.data.transforms import DEFAULT_TRAIN_SCALE, eval_transform, train_transform
from mobilenet.errors import MobilenetError
from mobilenet.fileio import as_path
from mobilenet.models.preprocessing import Preprocessing

Sample = tuple[Path, int]
Item = tuple[torch.Tensor, int]
Transform = Callable[[Image.Image], torch.Tensor]

_LAYOUT_HINT = "expected one subfolder per class: <root>/<class_name>/<image>"


class CorruptImageWarning(UserWarning):
    """A dataset file could not be decoded and was skipped."""


@dataclass
class FolderScan:
    class_names: list[str]
    samples: list[Sample]
    skipped_files: list[Path] = field(default_factory=list)


def scan_image_folder(root: str | PathLike[str]) -> FolderScan:
    """List ``root/<class>/**/<image>`` files; labels index the sorted class names.

    Hidden files and folders (name starting with ``.``) are ignored. ``skipped_files`` holds files that
    are present but unused: files without an image extension, and loose files directly in ``root``.
    Sub-folders inside a class folder are searched too (symlinked sub-folders are not followed).
    """
    root = as_path(root, "the dataset folder").expanduser()
    if not root.exists():
        raise MobilenetError(f"dataset folder {root} does not exist; check the path")
    if not root.is_dir():
        raise MobilenetError(f"dataset path {root} is not a folder; {_LAYOUT_HINT}")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    class_dirs = [p for p in entries if p.is_dir()]
    loose_files = [p for p in entries if not p.is_dir()]
    if not class_dirs:
        found = f" (found {len(loose_files)} files directly in it)" if loose_files else ""
        raise MobilenetError(f"dataset folder {root} has no class subfolders{found}; {_LAYOUT_HINT}")
    if len(class_dirs) < 2:
        raise MobilenetError(
            f"dataset folder {root} has only one class ({class_dirs[0].name!r}); a classifier needs at "
            "least 2 class subfolders"
        )
    samples: list[Sample] = []
    skipped = list(loose_files)
    for label, class_dir in enumerate(class_dirs):
        images, others = _scan_class_dir(class_dir)
        if not images:
            extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise MobilenetError(
                f"class folder {class_dir} has no images (extensions: {extensions}); "
                "add images or remove the folder"
            )
        samples.extend((path, label) for path in images)
        skipped.extend(others)
    return FolderScan([p.name for p in class_dirs], samples, skipped)


def _scan_class_dir(class_dir: Path) -> tuple[list[Path], list[Path]]:
    images: list[Path] = []
    others: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # prune hidden, walk in order
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            (images if is_image_file(path) else others).append(path)
    return images, others


class ImageFolderDataset(Dataset):
    """``(path, label)`` samples -> ``(tensor, label)``; an undecodable file yields ``None`` instead.

    Returning ``None`` (with one :class:`CorruptImageWarning` naming the file) rather than raising keeps a
    single bad file from killing an epoch; :func:`collate_skip_bad` drops and counts these.
    """

    def __init__(self, samples: Sequence[Sample], transform: Transform) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Item | None:
        path, label = self.samples[index]
        try:
            img = load_rgb(path)
        except ImageDecodeError as exc:
            warnings.warn(f"skipping unreadable image: {exc}", CorruptImageWarning, stacklevel=2)
            return None
        return self.transform(img), label


def collate_skip_bad(
    batch: Sequence[Item | None], sample_shape: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack the good samples; return ``(images, labels, num_skipped)``.

    An all-bad batch gives empty tensors: images of shape ``(0, *sample_shape)`` when ``sample_shape`` is
    known (``build_dataloaders`` passes it), else ``(0,)``; labels ``(0,)`` int64.
    """
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    if not good:
        shape = (0, *sample_shape) if sample_shape is not None else (0,)
        return torch.empty(shape, dtype=torch.float32), torch.empty((0,), dtype=torch.long), skipped
    images = torch.stack([image for image, _ in good])
    labels = torch.tensor([label for _, label in good], dtype=torch.long)
    return images, labels, skipped


def stratified_split(
    samples: Sequence[Sample], val_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``round(n * val_fraction)`` samples of each class for validation, seeded.

    Each class keeps at least one training sample and, when it has two or more, at least one validation
    sample. The result depends only on the set of samples and the seed, not on their order. Both lists
    come back sorted by (label, path).
    """
    if not 0.0 < val_fraction < 1.0:
        raise MobilenetError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if seed < 0:
        raise MobilenetError(f"seed must be a non-negative integer, got {seed}")
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for path, label in samples:
        by_class[label].append((Path(path), label))
    train: list[Sample] = []
    val: list[Sample] = []
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda s: str(s[0]))
        n_val = _val_count(len(members), val_fraction)
        # A per-class stream means adding or removing a class does not reshuffle the others.
        order = np.random.default_rng([seed, label]).permutation(len(members))
        held_out = set(order[:n_val].tolist())
        for i, sample in enumerate(members):
            (val if i in held_out else train).append(sample)
    return train, val


def _val_count(n: int, val_fraction: float) -> int:
    if n < 2:
        return 0
    return min(max(int(round(n * val_fraction)), 1), n - 1)


def worker_init_fn(worker_id: int) -> None:
    """Seed ``numpy`` and ``random`` in a DataLoader worker from the seed torch gave that worker."""
    seed = torch.initial_seed()
    np.random.seed(seed % 2**32)
    random.seed(seed)


@dataclass
class DataBundle:
    train_loader: DataLoader
    val_loader: DataLoader
    class_names: list[str]
    num_train: int
    num_val: int
    skipped_files: list[Path]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def build_dataloaders(
    train_dir: str | PathLike[str],
    val_dir: str | PathLike[str] | None = None,
    *,
    preprocessing: Preprocessing,
    batch_size: int,
    val_fraction: float = 0.2,
    seed: int = 0,
    num_workers: int = 0,
    train_scale: tuple[float, float] = DEFAULT_TRAIN_SCALE,
    hflip: float = 0.5,
    distributed: bool = False,
) -> DataBundle:
    """Train/val DataLoaders over image folders; each batch is ``(images, labels, num_skipped)``.

    Without ``val_dir`` the validation set is a :func:`stratified_split` of ``train_dir``. With
    ``distributed=True`` the caller must have initialised ``torch.distributed`` and must call
    ``train_loader.sampler.set_epoch(epoch)`` every epoch.
    """
    if batch_size < 1:
        raise MobilenetError(f"batch_size must be at least 1, got {batch_size}")
    if num_workers < 0:
        raise MobilenetError(f"num_workers must be 0 or more, got {num_workers}")
    train_scan = scan_image_folder(train_dir)
    skipped = list(train_scan.skipped_files)
    if val_dir is None:
        train_samples, val_samples = stratified_split(train_scan.samples, val_fraction, seed)
        if not val_samples:
            raise MobilenetError(
                f"too few images in {train_dir} to hold out a validation set (a class needs 2 images or more); "
                "add images or give a validation folder (--val on the command line, val_dir in Python)"
            )
    else:
        val_scan = scan_image_folder(val_dir)
        _check_same_classes(train_scan.class_names, val_scan.class_names, val_dir)
        train_samples, val_samples = train_scan.samples, val_scan.samples
        skipped.extend(val_scan.skipped_files)
    train_set = ImageFolderDataset(train_samples, train_transform(preprocessing, scale=train_scale, hflip=hflip))
    val_set = ImageFolderDataset(val_samples, eval_transform(preprocessing))
    collate = partial(collate_skip_bad, sample_shape=(3, preprocessing.resolution, preprocessing.resolution))
    loader_args = _loader_args(batch_size, num_workers, collate)
    return DataBundle(
        train_loader=_train_loader(train_set, seed, distributed, loader_args),
        val_loader=_val_loader(val_set, distributed, loader_args),
        class_names=train_scan.class_names,
        num_train=len(train_samples),
        num_val=len(val_samples),
        skipped_files=skipped,
    )


def _check_same_classes(train_names: list[str], val_names: list[str], val_dir: str | PathLike[str]) -> None:
    if train_names == val_names:
        return
    missing = sorted(set(train_names) - set(val_names))
    extra = sorted(set(val_names) - set(train_names))
    raise MobilenetError(
        f"validation folder {val_dir} has different classes than the training folder (missing: {missing}, "
        f"extra: {extra}); use the same class subfolder names in both"
    )


def _loader_args(batch_size: int, num_workers: int, collate: Callable) -> dict:
    return {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "collate_fn": collate,
        "drop_last": False,
        # Fresh workers each epoch take their seeds from the loader's generator, which the trainer re-seeds per
        # epoch; persistent workers would carry RNG state across epochs and break bit-exact resume.
        "persistent_workers": False,
        "worker_init_fn": worker_init_fn if num_workers > 0 else None,
    }


def _train_loader(dataset: ImageFolderDataset, seed: int, distributed: bool, args: dict) -> DataLoader:
    """Shuffle with a ``DistributedSampler`` in every case (a world of one without ``distributed``).

    One process with batch B and N processes with batch B/N then see the same global batches, epoch by epoch
    (``sampler.set_epoch``). The last incomplete batch is dropped when there is more than one batch: a batch of
    one image breaks BatchNorm at small resolutions.
    """
    world = _dist_world() if distributed else {"num_replicas": 1, "rank": 0}
    # drop_last here trims the index list to a multiple of the world size instead of padding it with repeats,
    # so every world size walks the same global batches and the same number of steps.
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True, **world)
    # The generator fixes the base seed of each worker's torch RNG.
    generator = torch.Generator().manual_seed(seed)
    per_rank = len(dataset) // world["num_replicas"]
    loader_args = dict(args, drop_last=per_rank > args["batch_size"])
    return DataLoader(dataset, sampler=sampler, generator=generator, **loader_args)


def _val_loader(dataset: ImageFolderDataset, distributed: bool, args: dict) -> DataLoader:
    # Every process evaluates the whole validation set: a DistributedSampler would pad it with duplicates.
    return DataLoader(dataset, shuffle=False, **args)


def _dist_world() -> dict[str, int]:
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        raise MobilenetError(
            "distributed=True needs torch.distributed.init_process_group() to be called first "
            "(launch with torchrun), or pass distributed=False"
        )
    return {"num_replicas": dist.get_world_size(), "rank": dist.get_rank()}

"""Real-behaviour tests for mobilenet.data: decoding, folders, loaders, transforms, synthetic data."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mobilenet.data import (
    CorruptImageWarning,
    ImageDecodeError,
    ImageFolderDataset,
    build_dataloaders,
    collate_skip_bad,
    eval_transform,
    generate_shapes_dataset,
    is_image_file,
    load_rgb,
    plan_shapes_dataset,
    scan_image_folder,
    stratified_split,
    synthetic,
    to_tensor_normalized,
    train_transform,
)
from mobilenet.data.transforms import random_resized_crop_box
from mobilenet.errors import MobilenetError
from mobilenet.models.preprocessing import Preprocessing

SMALL = {"num_classes": 4, "images_per_class": 6, "image_size": 32}
PRE = Preprocessing(resolution=24, crop_pct=0.875)


# --- helpers -----------------------------------------------------------------------------------------


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def _colour_image(
    size: tuple[int, int] = (40, 30), colour: tuple[int, int, int] = (200, 100, 50)
) -> Image.Image:
    return Image.new("RGB", size, colour)


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _noise_image(size: int = 48, seed: int = 0) -> Image.Image:
    # Noise keeps the JPEG/PNG payload large, so cutting the file really truncates pixel data.
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _make_folder(root: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        for i in range(count):
            _save(_colour_image(colour=(i * 20 % 256, 50, 100)), root / name / f"{i:03d}.png")
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- decoding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "suffix"),
    [
        (lambda: Image.new("L", (40, 30), 128), ".png"),
        (lambda: Image.new("1", (40, 30), 1), ".png"),
        (lambda: Image.new("RGBA", (40, 30), (10, 20, 30, 128)), ".png"),
        (lambda: Image.new("LA", (40, 30), (10, 128)), ".png"),
        (lambda: _colour_image().convert("P"), ".gif"),
        (lambda: Image.new("CMYK", (40, 30), (0, 128, 255, 0)), ".jpg"),
        (lambda: Image.new("CMYK", (40, 30), (0, 128, 255, 0)), ".tiff"),
        (lambda: Image.fromarray(np.full((30, 40), 40000, dtype=np.uint16)), ".png"),
        (lambda: _colour_image(), ".webp"),
        (lambda: _colour_image(), ".bmp"),
    ],
)
def test_load_rgb_converts_every_mode_to_rgb(tmp_path: Path, make, suffix: str) -> None:
    path = _save(make(), tmp_path / f"img{suffix}")
    img = load_rgb(path)
    assert img.mode == "RGB"
    assert img.size == (40, 30)


def test_transparent_pixels_are_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    pixels = np.asarray(load_rgb(_save(rgba, tmp_path / "a.png")))
    assert tuple(pixels[0, 0]) == (255, 0, 0)
    assert tuple(pixels[3, 3]) == (255, 255, 255)


def test_palette_transparency_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    img.putpixel((1, 1), 1)
    path = _save(img, tmp_path / "p.png", transparency=0)
    pixels = np.asarray(load_rgb(path))
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[1, 1]) == (0, 255, 0)


def test_16_bit_images_are_rescaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 100, 32896, 65535]], dtype=np.uint16)
    pixels = np.asarray(load_rgb(_save(Image.fromarray(values), tmp_path / "g16.png")))
    assert pixels[0, :, 0].tolist() == [0, 100, 128, 255]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(img, tmp_path / "rot.jpg", exif=exif, quality=95)
    upright = load_rgb(path)
    assert upright.size == (20, 40)
    top = np.asarray(upright)[2, 10]
    assert top[2] > 200 and top[0] < 80, "the left edge should end up on top"


def test_truncated_and_fake_files_raise_decode_error(tmp_path: Path) -> None:
    png = _truncate(_save(_noise_image(), tmp_path / "a.png"))
    jpg = _truncate(_save(_noise_image(), tmp_path / "b.jpg", quality=95))
    fake = tmp_path / "notes.jpg"
    fake.write_text("definitely not a jpeg")
    for path in (png, jpg, fake):
        with pytest.raises(ImageDecodeError, match=path.name):
            load_rgb(path)
    with pytest.raises(MobilenetError, match="does not exist"):
        load_rgb(tmp_path / "missing.png")


def test_image_extensions_are_case_insensitive() -> None:
    assert is_image_file("a.JPG") and is_image_file("b.TiFf") and is_image_file("c.webp")
    assert not is_image_file("d.txt") and not is_image_file("jpg")


# --- scanning and errors -----------------------------------------------------------------------------


def test_scan_lists_sorted_classes_and_skips_non_images(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "data", {"dog": 2, "cat": 3})
    (root / "cat" / "readme.txt").write_text("x")
    (root / "cat" / ".hidden.png").write_text("x")
    (root / ".git").mkdir()
    _save(_colour_image(), root / "dog" / "nested" / "deep.PNG")
    scan = scan_image_folder(root)
    assert scan.class_names == ["cat", "dog"]
    assert Counter(label for _, label in scan.samples) == {0: 3, 1: 3}
    assert scan.skipped_files == [root / "cat" / "readme.txt"]


def test_scan_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(MobilenetError, match="does not exist"):
        scan_image_folder(tmp_path / "nope")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(MobilenetError, match="not a folder"):
        scan_image_folder(a_file)
    flat = tmp_path / "flat"
    _save(_colour_image(), flat / "loose.png")
    with pytest.raises(MobilenetError, match="no class subfolders.*1 files"):
        scan_image_folder(flat)
    single = _make_folder(tmp_path / "single", {"only": 2})
    with pytest.raises(MobilenetError, match="only one class.*'only'.*at least 2"):
        scan_image_folder(single)
    empty = _make_folder(tmp_path / "empty", {"a": 2, "b": 1})
    (empty / "empty_class").mkdir()
    (empty / "empty_class" / "notes.txt").write_text("x")
    with pytest.raises(MobilenetError, match="empty_class has no images"):
        scan_image_folder(empty)


# --- corrupt files, collate, loaders ----------------------------------------------------------------


def _folder_with_bad_files(root: Path) -> Path:
    _make_folder(root, {"a": 3, "b": 3})
    _truncate(_save(_noise_image(), root / "a" / "trunc.png"))
    _truncate(_save(_noise_image(), root / "b" / "trunc.jpg", quality=95))
    (root / "b" / "text.jpg").write_text("hello, I am a text file")
    return root


def test_dataset_returns_none_and_warns_for_bad_files(tmp_path: Path) -> None:
    scan = scan_image_folder(_folder_with_bad_files(tmp_path / "d"))
    dataset = ImageFolderDataset(scan.samples, eval_transform(PRE))
    bad_index = next(i for i, (p, _) in enumerate(scan.samples) if p.name == "text.jpg")
    with pytest.warns(CorruptImageWarning, match="text.jpg"):
        assert dataset[bad_index] is None
    image, label = dataset[0]
    assert image.shape == (3, 24, 24) and label == 0


def test_dataloader_over_bad_files_completes_and_counts_them(tmp_path: Path) -> None:
    scan = scan_image_folder(_folder_with_bad_files(tmp_path / "d"))
    dataset = ImageFolderDataset(scan.samples, eval_transform(PRE))
    collate = partial(collate_skip_bad, sample_shape=(3, 24, 24))
    loader = DataLoader(dataset, batch_size=4, collate_fn=collate)
    seen, skipped = 0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptImageWarning)
        for images, labels, num_skipped in loader:
            assert images.shape[1:] == (3, 24, 24) and images.shape[0] == labels.shape[0]
            seen += labels.numel()
            skipped += num_skipped
    assert (seen, skipped) == (6, 3)


def test_collate_all_bad_batch_gives_empty_tensors() -> None:
    images, labels, skipped = collate_skip_bad([None, None], sample_shape=(3, 8, 8))
    assert images.shape == (0, 3, 8, 8) and labels.shape == (0,) and labels.dtype == torch.long
    assert skipped == 2
    images, labels, skipped = collate_skip_bad([None])
    assert images.shape == (0,) and skipped == 1


def test_collate_stacks_good_samples() -> None:
    batch = [(torch.zeros(3, 2, 2), 1), None, (torch.ones(3, 2, 2), 0)]
    images, labels, skipped = collate_skip_bad(batch)
    assert images.shape == (2, 3, 2, 2) and labels.tolist() == [1, 0] and skipped == 1


# --- stratified split --------------------------------------------------------------------------------


def _fake_samples(counts: dict[int, int]) -> list[tuple[Path, int]]:
    return [(Path(f"c{label}/{i:03d}.png"), label) for label, n in counts.items() for i in range(n)]


def test_stratified_split_is_deterministic_disjoint_and_complete() -> None:
    samples = _fake_samples({0: 10, 1: 20, 2: 30})
    train, val = stratified_split(samples, 0.2, seed=3)
    assert stratified_split(list(reversed(samples)), 0.2, seed=3) == (train, val)
    assert stratified_split(samples, 0.2, seed=4) != (train, val)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(samples)
    assert Counter(label for _, label in val) == {0: 2, 1: 4, 2: 6}


def test_stratified_split_keeps_a_sample_of_each_class_on_both_sides() -> None:
    train, val = stratified_split(_fake_samples({0: 1, 1: 2, 2: 3}), 0.9, seed=0)
    assert Counter(label for _, label in train) == {0: 1, 1: 1, 2: 1}
    assert Counter(label for _, label in val) == {1: 1, 2: 2}


def test_negative_seeds_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(MobilenetError, match="seed"):
        stratified_split(_fake_samples({0: 4, 1: 4}), 0.2, seed=-1)
    with pytest.raises(MobilenetError, match="seed"):
        generate_shapes_dataset(tmp_path / "s", seed=-1, **SMALL)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_stratified_split_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(MobilenetError, match="val_fraction"):
        stratified_split(_fake_samples({0: 4, 1: 4}), fraction, seed=0)


# --- transforms --------------------------------------------------------------------------------------


def test_eval_transform_shape_and_normalisation_math() -> None:
    pre = Preprocessing(resolution=16, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    out = eval_transform(pre)(_colour_image((50, 30), (200, 100, 50)))
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    expected = [(200 / 255 - 0.5) / 0.2, (100 / 255 - 0.4) / 0.25, (50 / 255 - 0.3) / 0.5]
    for channel, value in enumerate(expected):
        assert torch.allclose(out[channel], torch.full((16, 16), value), atol=1e-5)


def test_bgr_reverses_channels() -> None:
    img = _colour_image((20, 20), (200, 100, 50))
    rgb = to_tensor_normalized(img, Preprocessing(mean=(0, 0, 0), std=(1, 1, 1)))
    bgr = to_tensor_normalized(img, Preprocessing(mean=(0, 0, 0), std=(1, 1, 1), channel_order="BGR"))
    assert torch.equal(bgr, rgb.flip(0))


def test_crop_pct_controls_the_resize() -> None:
    img = Image.new("RGB", (100, 100), (0, 0, 0))
    img.paste((255, 255, 255), (25, 25, 75, 75))  # white centre, black frame 25 px wide
    pre = Preprocessing(resolution=32, mean=(0, 0, 0), std=(1, 1, 1), crop_pct=0.5)
    tight = eval_transform(pre)(img)  # resize to 64, keep the middle 32: the white square only
    full = eval_transform(pre.replace(crop_pct=1.0))(img)  # resize to 32: whole image, frame included
    assert pre.resize_size == 64
    assert tight.mean().item() > 0.95  # only the filter's blur at the edges is below 1
    assert 0.2 < full.mean().item() < 0.3  # a quarter of the area is white


def test_train_transform_is_reproducible_under_manual_seed() -> None:
    img = _noise_image(64)
    transform = train_transform(PRE)
    torch.manual_seed(7)
    first = [transform(img) for _ in range(3)]
    torch.manual_seed(7)
    second = [transform(img) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert first[0].shape == (3, 24, 24)
    assert not torch.equal(first[0], first[1])


def test_train_transform_flip_and_full_crop() -> None:
    img = _noise_image(32)
    pre = Preprocessing(resolution=16, mean=(0, 0, 0), std=(1, 1, 1))
    out = train_transform(pre, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0)(img)
    expected = to_tensor_normalized(img.resize((16, 16), Image.Resampling.BILINEAR), pre).flip(2)
    assert torch.allclose(out, expected, atol=1e-6)


def test_random_resized_crop_box_stays_inside_and_falls_back() -> None:
    torch.manual_seed(0)
    for _ in range(50):
        left, top, right, bottom = random_resized_crop_box(60, 40, (0.25, 1.0), (3 / 4, 4 / 3))
        assert 0 <= left < right <= 60 and 0 <= top < bottom <= 40
    # A 1000x10 strip cannot hold a near-square crop of 90% of its area: centered clamp-aspect fallback.
    assert random_resized_crop_box(1000, 10, (0.9, 1.0), (3 / 4, 4 / 3)) == (493, 0, 506, 10)


def test_train_transform_rejects_bad_arguments() -> None:
    with pytest.raises(MobilenetError, match="scale"):
        train_transform(PRE, scale=(0.5, 0.2))
    with pytest.raises(MobilenetError, match="hflip"):
        train_transform(PRE, hflip=2.0)


# --- build_dataloaders -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shapes_dataset(tmp_path_factory.mktemp("shapes"), **SMALL)


def test_build_dataloaders_with_val_dir(shapes_root: Path) -> None:
    bundle = build_dataloaders(shapes_root / "train", shapes_root / "val", preprocessing=PRE, batch_size=5)
    assert bundle.class_names == sorted(synthetic.SHAPES[:4])
    assert (bundle.num_train, bundle.num_val, bundle.num_classes) == (20, 4, 4)
    images, labels, skipped = next(iter(bundle.train_loader))
    assert images.shape == (5, 3, 24, 24) and labels.dtype == torch.long and skipped == 0
    assert sum(labels.numel() for _, labels, _ in bundle.val_loader) == 4


def test_build_dataloaders_split_and_reproducible_shuffle(shapes_root: Path) -> None:
    def epoch_labels(seed: int) -> list[int]:
        bundle = build_dataloaders(shapes_root / "train", preprocessing=PRE, batch_size=4, seed=seed)
        assert (bundle.num_train, bundle.num_val) == (16, 4)
        return [label for _, labels, _ in bundle.train_loader for label in labels.tolist()]

    assert epoch_labels(1) == epoch_labels(1)
    assert epoch_labels(1) != epoch_labels(2)


def test_build_dataloaders_with_workers(shapes_root: Path) -> None:
    bundle = build_dataloaders(
        shapes_root / "train", shapes_root / "val", preprocessing=PRE, batch_size=8, num_workers=2
    )
    assert not bundle.train_loader.persistent_workers  # workers restart each epoch, from that epoch's seed
    # 20 images in batches of 8: the incomplete last batch is dropped, every validation image is kept.
    assert sum(labels.numel() for _, labels, _ in bundle.train_loader) == 16
    assert sum(labels.numel() for _, labels, _ in bundle.val_loader) == 4


def test_build_dataloaders_rejects_mismatched_classes(shapes_root: Path, tmp_path: Path) -> None:
    other = _make_folder(tmp_path / "other", {"circle": 1, "zebra": 1})
    with pytest.raises(MobilenetError, match=r"different classes.*'zebra'"):
        build_dataloaders(shapes_root / "train", other, preprocessing=PRE, batch_size=2)


def test_build_dataloaders_distributed_needs_a_process_group(shapes_root: Path) -> None:
    with pytest.raises(MobilenetError, match="init_process_group"):
        build_dataloaders(shapes_root / "train", preprocessing=PRE, batch_size=2, distributed=True)


def test_build_dataloaders_distributed_world_of_one(shapes_root: Path, tmp_path: Path) -> None:
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        bundle = build_dataloaders(
            shapes_root / "train", shapes_root / "val", preprocessing=PRE, batch_size=8, distributed=True
        )
        sampler = bundle.train_loader.sampler
        assert isinstance(sampler, torch.utils.data.DistributedSampler) and sampler.shuffle
        sampler.set_epoch(1)
        assert sum(labels.numel() for _, labels, _ in bundle.train_loader) == 16  # last partial batch dropped
    finally:
        dist.destroy_process_group()


# --- synthetic dataset -------------------------------------------------------------------------------


def test_default_plan_is_big_enough() -> None:
    plan = plan_shapes_dataset()
    assert plan.num_classes >= 10 and plan.num_images >= 3000
    assert (plan.train_per_class, plan.val_per_class) == (288, 72)


def test_plan_rejects_bad_parameters() -> None:
    with pytest.raises(MobilenetError, match="num_classes"):
        plan_shapes_dataset(num_classes=99)
    with pytest.raises(MobilenetError, match="val_fraction"):
        plan_shapes_dataset(val_fraction=1.0)
    with pytest.raises(MobilenetError, match="split empty"):
        plan_shapes_dataset(images_per_class=1)


def test_synthetic_layout_counts_and_manifest(shapes_root: Path) -> None:
    for split, per_class in (("train", 5), ("val", 1)):
        scan = scan_image_folder(shapes_root / split)
        assert scan.class_names == sorted(synthetic.SHAPES[:4])
        assert Counter(label for _, label in scan.samples) == dict.fromkeys(range(4), per_class)
    img = load_rgb(shapes_root / "train" / "circle" / "00000.png")
    assert img.size == (32, 32)
    manifest = json.loads((shapes_root / "dataset.json").read_text())
    assert manifest["complete"] and manifest["class_names"] == list(synthetic.SHAPES[:4])
    assert manifest["counts"] == {"train": 20, "val": 4}
    assert manifest["params"] == {**SMALL, "seed": 0, "val_fraction": 0.2}


def test_synthetic_is_byte_identical_per_seed(shapes_root: Path, tmp_path: Path) -> None:
    again = generate_shapes_dataset(tmp_path / "again", **SMALL)
    other = generate_shapes_dataset(tmp_path / "other", seed=1, **SMALL)
    names = ["train/circle/00000.png", "train/star/00003.png", "val/square/00005.png"]
    assert [_sha(shapes_root / n) for n in names] == [_sha(again / n) for n in names]
    assert all(_sha(shapes_root / n) != _sha(other / n) for n in names)


def test_synthetic_parallel_generation_writes_the_same_files(shapes_root: Path, tmp_path: Path) -> None:
    parallel = generate_shapes_dataset(tmp_path / "parallel", workers=2, **SMALL)
    files = sorted(p.relative_to(shapes_root) for p in shapes_root.rglob("*.png"))
    assert len(files) == 24
    assert sorted(p.relative_to(parallel) for p in parallel.rglob("*.png")) == files
    assert all(_sha(shapes_root / f) == _sha(parallel / f) for f in files)


def test_synthetic_pixels_do_not_depend_on_generation_order(shapes_root: Path) -> None:
    # Class 2 (triangle), image 4 rendered alone must match the file written during the full run.
    class_index = synthetic.SHAPES.index("triangle")
    alone = synthetic.render_shape_image("triangle", 32, synthetic._image_rng(0, class_index, 4))
    assert np.array_equal(alone, np.asarray(Image.open(shapes_root / "train" / "triangle" / "00004.png")))


def test_synthetic_second_call_reuses_and_repairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = generate_shapes_dataset(tmp_path / "s", **SMALL)
    calls = Counter()
    real_render = synthetic.render_shape_image

    def counting_render(*args, **kwargs):
        calls["render"] += 1
        return real_render(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_shape_image", counting_render)
    generate_shapes_dataset(root, **SMALL)
    assert calls["render"] == 0, "a complete dataset must be reused"

    (root / "train" / "star" / "00001.png").unlink()  # partial dataset -> regenerated
    generate_shapes_dataset(root, **SMALL)
    assert calls["render"] == 24 and (root / "train" / "star" / "00001.png").is_file()

    generate_shapes_dataset(root, **{**SMALL, "num_classes": 3})  # other parameters -> replaced
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(synthetic.SHAPES[:3])


def test_synthetic_never_deletes_foreign_folders(tmp_path: Path) -> None:
    user_data = _make_folder(tmp_path / "mine" / "train", {"cat": 1, "dog": 1})
    with pytest.raises(MobilenetError, match="did not make"):
        generate_shapes_dataset(tmp_path / "mine", **SMALL)
    assert (user_data / "cat" / "000.png").is_file()

"""Keras import: our model against Keras running the same weights, with every BatchNorm randomised first.

Keras models are built with ``weights=None`` (no download), their BatchNorm statistics and affine parameters
randomised so that a wrong mapping (gamma for beta, mean for variance, a transposed kernel) shows in the logits,
saved to ``.keras`` in a tmp folder, imported, and run next to Keras on the same random pixels. Keras reads the
input it expects (V1/V2: [-1, 1]; V3: pixels in [0, 255], its Rescaling inside); ours gets the pixels through the
imported preprocessing, so the preprocessing is checked too.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras", reason="Keras import needs keras 3 and h5py (pip install 'mobilenet[keras]')")
h5py = pytest.importorskip("h5py", reason="Keras import needs h5py (pip install 'mobilenet[keras]')")

from mobilenet.cli.main import main as cli_main  # noqa: E402
from mobilenet.errors import MobilenetError  # noqa: E402
from mobilenet.models.preprocessing import INCEPTION_MEAN, INCEPTION_STD  # noqa: E402
from mobilenet.models.registry import create_model  # noqa: E402
from mobilenet.weights.format import load  # noqa: E402
from mobilenet.weights.keras_import import import_keras  # noqa: E402

TOLERANCE = 1e-4
APPS = keras.applications
# (Keras constructor, its options, input size, the model name our importer must find)
CASES = {
    "v1_0.25_224": (APPS.MobileNet, {"alpha": 0.25}, 224, "mobilenet_v1_0.25_224"),
    "v1_1.0": (APPS.MobileNet, {"alpha": 1.0}, 96, "mobilenet_v1_1.0_96"),
    "v2_0.35": (APPS.MobileNetV2, {"alpha": 0.35}, 96, "mobilenet_v2_0.35_96"),
    "v2_1.0": (APPS.MobileNetV2, {"alpha": 1.0}, 96, "mobilenet_v2_1.0_96"),
    "v3_large_1.0": (APPS.MobileNetV3Large, {"alpha": 1.0}, 96, "mobilenet_v3_large_1.0_96"),
    "v3_small_1.0": (APPS.MobileNetV3Small, {"alpha": 1.0}, 96, "mobilenet_v3_small_1.0_96"),
    "v3_small_min_1.0": (
        APPS.MobileNetV3Small,
        {"alpha": 1.0, "minimalistic": True},
        96,
        "mobilenet_v3_small_minimalistic_1.0_96",
    ),
    "v3_small_0.75": (APPS.MobileNetV3Small, {"alpha": 0.75}, 96, "mobilenet_v3_small_0.75_96"),
    # Keras keeps V3's stem at 16 channels for every alpha; ours scales it, so these need stem_channels=16.
    "v3_small_0.5": (APPS.MobileNetV3Small, {"alpha": 0.5}, 96, "mobilenet_v3_small_0.5_96"),
    "v3_large_1.5": (APPS.MobileNetV3Large, {"alpha": 1.5}, 64, "mobilenet_v3_large_1.5_64"),
}
FIXED_STEM = {"v3_small_0.5", "v3_large_1.5"}
_BUILT: dict[str, object] = {}  # each Keras model is built and randomised once per session: Keras is slow here


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP's spinning threads make each forward ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomize_batchnorm(model: object, size: int, seed: int) -> None:
    """Give every BatchNorm its own random gamma, beta, moving mean and variance, around real statistics.

    Statistics drawn blindly shrink or blow up the activations layer after layer until the logits no longer depend
    on the input and any comparison passes. So gamma and beta are drawn first, the moving statistics are set to
    those of a random batch (one training-mode call with momentum 0), then each is perturbed at random.
    """
    rng = np.random.default_rng(seed)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]  # type: ignore[attr-defined]
    for layer in norms:
        c = layer.gamma.shape[0]
        layer.set_weights([rng.uniform(0.5, 1.5, c), rng.uniform(-0.3, 0.3, c), np.zeros(c), np.ones(c)])
        layer.momentum, layer.saved_momentum = 0.0, layer.momentum  # the next training call stores batch statistics
    model(pixels_for(model, random_pixels(size, seed, batch=4)), training=True)  # type: ignore[operator]
    for layer in norms:
        gamma, beta, mean, var = layer.get_weights()
        c = gamma.shape[0]
        layer.set_weights([gamma, beta, mean + rng.normal(0, 0.2, c) * np.sqrt(var), var * rng.uniform(0.7, 1.4, c)])
        layer.momentum = layer.saved_momentum


def build_keras(case: str, seed: int = 0) -> object:
    if case not in _BUILT:
        constructor, options, size, _ = CASES[case]
        keras.utils.set_random_seed(seed)
        model = constructor(input_shape=(size, size, 3), weights=None, classifier_activation=None, **options)
        randomize_batchnorm(model, size, seed)
        _BUILT[case] = model
    return _BUILT[case]


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    """The path of a case's model saved as .keras (saved once)."""
    folder = tmp_path_factory.mktemp("keras")

    def path(case: str):
        target = folder / f"{case}.keras"
        if not target.exists():
            build_keras(case).save(str(target))  # type: ignore[attr-defined]
        return target

    return path


def pixels_for(model: object, pixels: np.ndarray) -> np.ndarray:
    """The input Keras expects: V3 rescales pixels itself, V1/V2 want preprocess_input's [-1, 1]."""
    rescales = any(isinstance(layer, keras.layers.Rescaling) for layer in model.layers)  # type: ignore[attr-defined]
    return pixels if rescales else pixels / 127.5 - 1.0


def keras_logits(model: object, pixels: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model(pixels_for(model, pixels), training=False)))  # type: ignore[operator]


def our_logits(model: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    prep = model.preprocessing  # type: ignore[attr-defined]
    mean, std = np.asarray(prep.mean, np.float32), np.asarray(prep.std, np.float32)
    x = (pixels / 255.0 - mean) / std
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32))).numpy()


def random_pixels(size: int, seed: int = 1, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("case", list(CASES))
def test_keras_file_matches_keras_logits(case: str, keras_file) -> None:
    reference = build_keras(case)
    model = import_keras(keras_file(case))
    assert model.weights_info["extra"]["model"] == CASES[case][3]
    assert model.preprocessing.mean == INCEPTION_MEAN and model.preprocessing.std == INCEPTION_STD
    assert model.config.padding == "tf_same" and model.config.bn_eps == pytest.approx(1e-3)
    assert model.config.num_classes == 1000 and model.preprocessing.labels_offset == 0
    assert model.config.stem_channels == (16 if case in FIXED_STEM else None)
    pixels = random_pixels(CASES[case][2])
    expected = keras_logits(reference, pixels)
    error = float(np.max(np.abs(our_logits(model, pixels) - expected)))
    spread = float(expected.std(axis=0).mean())
    print(f"{case}: max abs error {error:.2e} (logits std across inputs {spread:.3f})")
    assert error <= TOLERANCE
    assert spread > 100 * TOLERANCE  # the logits depend on the input, so the tolerance means something


def test_planted_mapping_bugs_show() -> None:
    """One mis-mapped BatchNorm statistic, or symmetric padding, misses the tolerance by far: the check bites."""
    reference = build_keras("v2_0.35")
    model = import_keras(reference)
    pixels = random_pixels(96)
    expected = keras_logits(reference, pixels)
    symmetric = create_model("mobilenet_v2_0.35_96", preprocessing=model.preprocessing, dropout=0.0)
    symmetric.load_state_dict(model.state_dict())
    assert np.max(np.abs(our_logits(symmetric.eval(), pixels) - expected)) > 100 * TOLERANCE
    model.features[5].expand.bn.running_var.mul_(1.5)
    assert np.max(np.abs(our_logits(model, pixels) - expected)) > 100 * TOLERANCE


def test_h5_whole_model_and_weights_only_files(tmp_path) -> None:
    """Whole-model .h5 (Keras 3 cannot rebuild V3's graph from it: the layer configs stored beside it are read
    instead) and weights-only .h5 in the layout of the files keras.applications downloads."""
    from keras.src.legacy.saving import legacy_h5_format

    case = "v3_small_1.0"
    reference = build_keras(case)
    whole, weights_only = tmp_path / "whole.h5", tmp_path / "weights.h5"
    reference.save(str(whole))  # type: ignore[attr-defined]
    with h5py.File(weights_only, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, reference)
    from_model = import_keras(whole)
    from_weights = import_keras(weights_only, resolution=96)
    with pytest.raises(MobilenetError, match="--resolution must be an integer >= 32"):
        import_keras(weights_only, resolution=0)
    assert from_model.weights_info["extra"]["model"] == CASES[case][3]
    assert from_weights.weights_info["extra"]["format"] == "keras h5 weights"
    weights = from_weights.state_dict()
    assert from_model.state_dict().keys() == weights.keys()
    for name, value in from_model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    pixels = random_pixels(96)
    for model in (from_model, from_weights):
        assert model.preprocessing.mean == INCEPTION_MEAN and model.preprocessing.std == INCEPTION_STD
        assert np.max(np.abs(our_logits(model, pixels) - keras_logits(reference, pixels))) <= TOLERANCE


def test_options_and_metadata_follow_the_keras_model(tmp_path) -> None:
    reference = build_keras("v1_0.25_224")
    model = import_keras(reference)
    assert model.config.dropout == pytest.approx(1e-3)  # Keras V1's dropout
    assert model.config.bn_momentum == pytest.approx(0.01)  # Keras' default BN momentum 0.99
    assert model.weights_info["source"].endswith("(in memory)")
    assert model.weights_info["extra"]["graph_output"] == "logits"
    saved = load(model.save(str(tmp_path / "v1.safetensors")))
    pixels = random_pixels(224, batch=1)
    np.testing.assert_array_equal(our_logits(saved, pixels), our_logits(model, pixels))


def test_not_a_mobilenet_is_refused() -> None:
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10)(x)
    with pytest.raises(MobilenetError, match="cannot map the Keras model onto a MobileNet"):
        import_keras(keras.Model(inputs, outputs, name="tiny_cnn"))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: APPS.MobileNet(input_shape=(100, 100, 3), weights=None), "multiple of 32"),
        (lambda: APPS.MobileNetV2(input_shape=(96, 96, 3), weights=None, include_top=False), "include_top=False"),
    ],
    ids=["v1_odd_feature_map", "no_top"],
)
def test_unrepresentable_keras_models_are_refused(build, message: str) -> None:
    with pytest.raises(MobilenetError, match=message):
        import_keras(build())


def test_bad_inputs_are_one_line_errors(tmp_path) -> None:
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip file")
    for source, message in [
        (tmp_path / "missing.keras", "not found"),
        (broken, "Keras could not load"),
        (42, "expected a path"),
    ]:
        with pytest.raises(MobilenetError, match=message) as caught:
            import_keras(source)
        assert "\n" not in str(caught.value)


def test_cli_imports_a_keras_file(tmp_path, keras_file, capsys) -> None:
    reference = build_keras("v2_0.35")
    source, output = keras_file("v2_0.35"), tmp_path / "v2.safetensors"
    assert cli_main(["import", str(source), "-o", str(output)]) == 0
    assert "mobilenet_v2_0.35_96" in capsys.readouterr().out
    pixels = random_pixels(96)
    assert np.max(np.abs(our_logits(load(output), pixels) - keras_logits(reference, pixels))) <= TOLERANCE

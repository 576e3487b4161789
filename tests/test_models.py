"""Model family behaviour: shapes, features, options, tracing/export, gradients and input errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import mobilenet
from mobilenet.models.layers import SamePad2d

from .conftest import calibrate_batchnorm

FAMILIES = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"]
ALPHAS = [0.25, 0.35, 0.5, 0.75, 1.0, 1.4]
RESOLUTIONS = [96, 128, 160, 192, 224, 225, 257]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_forward_shapes_over_alphas_and_resolutions(family: str, alpha: float) -> None:
    model = mobilenet.create_model(f"{family}_{alpha}_224", num_classes=7).eval()
    with torch.no_grad():
        for resolution in RESOLUTIONS:
            out = model(torch.randn(1, 3, resolution, resolution))
            assert out.shape == (1, 7), (family, alpha, resolution)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["mobilenet_v1_0.5_160", "mobilenet_v2_1.0_224", "mobilenet_v3_large_1.0_224",
                                  "mobilenet_v3_small_minimalistic_1.0_224"])
@pytest.mark.parametrize("resolution", [224, 225])
def test_features_only_strides_and_channels(name: str, resolution: int) -> None:
    model = mobilenet.create_model(name, features_only=True).eval()
    info = model.feature_info
    assert [f.reduction for f in info] == [2, 4, 8, 16, 32]
    with torch.no_grad():
        features = model(torch.randn(2, 3, resolution, resolution))
    assert len(features) == 5
    for feature, meta in zip(features, info):
        expected = math.ceil(resolution / meta.reduction)
        assert feature.shape == (2, meta.num_chs, expected, expected)
    assert not hasattr(model.classifier, "weight")


def test_feature_channels_match_paper_tables() -> None:
    channels = {
        "mobilenet_v1_1.0_224": [64, 128, 256, 512, 1024],
        "mobilenet_v2_1.0_224": [16, 24, 32, 96, 1280],
        "mobilenet_v3_large_1.0_224": [16, 24, 40, 112, 960],
        "mobilenet_v3_small_1.0_224": [16, 16, 24, 48, 576],
    }
    for name, expected in channels.items():
        assert [f.num_chs for f in mobilenet.create_model(name).feature_info] == expected, name


def test_forward_intermediates_agree_with_forward() -> None:
    model = calibrate_batchnorm(mobilenet.create_model("mobilenet_v2_0.5_128"))
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        assert torch.allclose(model.forward_head(final), model(x))
        assert torch.equal(intermediates[-1], model.forward_features(x))


def test_keras_style_include_top_pooling_and_classes() -> None:
    x = torch.randn(2, 1, 96, 96)
    no_top = mobilenet.create_model("mobilenet_v3_small_1.0_224", include_top=False, pooling=None, in_chans=1)
    assert no_top.eval()(x).shape == (2, 576, 3, 3)
    pooled = mobilenet.create_model("mobilenet_v3_small_1.0_224", include_top=False, pooling="max", in_chans=1)
    assert pooled.eval()(x).shape == (2, 576)
    headless = mobilenet.create_model("mobilenet_v3_small_1.0_224", num_classes=0, in_chans=1)
    assert headless.eval()(x).shape == (2, 1024)  # V3's pre-logits layer stays, as in timm
    v2 = mobilenet.create_model("mobilenet_v2_0.35_96", num_classes=0)
    assert v2.eval()(torch.randn(1, 3, 96, 96)).shape == (1, 1280)  # not shrunk for alpha < 1


def test_options_reach_the_layers() -> None:
    model = mobilenet.create_model("mobilenet_v2_1.0_224", dropout=0.3, bn_eps=1e-5, bn_momentum=0.1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bn.eps == 1e-5 and bn.momentum == 0.1 for bn in bns)
    assert model.dropout.p == 0.3
    assert mobilenet.create_model("mobilenet_v1_1.0_224").dropout.p == 0.001


def test_v3_head_width_is_kept_for_alpha_below_one_and_widened_above() -> None:
    assert mobilenet.create_model("mobilenet_v3_large_0.75_224").head_hidden_size == 1280
    assert mobilenet.create_model("mobilenet_v3_large_1.25_224").head_hidden_size == 1600
    assert mobilenet.create_model("mobilenet_v2_1.4_224").num_features == 1792


def test_fixed_stem_width_keeps_the_first_block_unexpanded_and_survives_save(tmp_path) -> None:
    """Keras' V3 (every alpha) and timm's (below 0.75) keep a 16-channel stem; ours scales it unless told."""
    assert mobilenet.create_model("mobilenet_v3_small_0.5_224").features[0].conv.out_channels == 8
    model = mobilenet.create_model("mobilenet_v3_small_0.5_224", stem_channels=16, num_classes=10)
    first = model.features[1]
    assert model.features[0].conv.out_channels == 16 and isinstance(first.expand, torch.nn.Identity)
    assert first.depthwise.conv.in_channels == 16 and first.project.conv.out_channels == 8
    loaded = mobilenet.load(model.save(tmp_path / "fixed_stem.safetensors"))
    assert loaded.config.stem_channels == 16
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_minimalistic_has_no_se_no_hardswish_and_only_3x3() -> None:
    model = mobilenet.create_model("mobilenet_v3_large_minimalistic_1.0_224")
    kinds = {type(m).__name__ for m in model.modules()}
    assert "SqueezeExcite" not in kinds and "Hardswish" not in kinds
    kernels = {m.kernel_size for m in model.modules() if isinstance(m, torch.nn.Conv2d)}
    assert kernels <= {(1, 1), (3, 3)}


def test_tf_same_padding_matches_tensorflow_formula() -> None:
    """TF SAME for stride 2: total = (ceil(n/s)-1)*s + k - n, extra pixel at the bottom/right."""
    pad = SamePad2d(kernel=3, stride=2)
    x = torch.randn(1, 1, 224, 225)
    padded = pad(x)
    assert padded.shape[-2:] == (225, 227)  # even 224: (0, 1); odd 225: (1, 1)
    assert torch.equal(padded[..., :224, 1:226], x)
    assert SamePad2d(kernel=5, stride=2)._pad(224) == (1, 2)

    torch.manual_seed(0)
    tf = calibrate_batchnorm(mobilenet.create_model("mobilenet_v1_0.25_128", padding="tf_same"))
    sym = mobilenet.create_model("mobilenet_v1_0.25_128").eval()
    sym.load_state_dict(tf.state_dict())
    x = torch.randn(1, 3, 128, 128)
    stem_tf = tf.features[0].conv(F.pad(x, (0, 1, 0, 1)))
    with torch.no_grad():
        assert torch.allclose(tf.features[0].conv(tf.features[0].pad(x)), stem_tf)
        # the one-pixel shift changes the result
        assert (tf.forward_features(x) - sym.forward_features(x)).abs().max() > 1e-2


def _example(name: str, resolution: int = 96) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = calibrate_batchnorm(mobilenet.create_model(name, num_classes=10), resolution)
    return model, torch.randn(2, 3, resolution, resolution)


EXPORT_MODELS = ["mobilenet_v1_0.25_224", "mobilenet_v2_0.35_224", "mobilenet_v3_large_0.75_224",
                 "mobilenet_v3_small_minimalistic_1.0_224"]


@pytest.mark.parametrize("name", EXPORT_MODELS)
@pytest.mark.parametrize("padding", ["symmetric", "tf_same"])
def test_jit_trace_round_trip(name: str, padding: str, tmp_path) -> None:
    torch.manual_seed(0)
    model = calibrate_batchnorm(mobilenet.create_model(name, num_classes=10, padding=padding))
    x = torch.randn(2, 3, 96, 96)
    traced = torch.jit.trace(model, x)
    path = tmp_path / "model.pt"
    traced.save(str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", EXPORT_MODELS)
def test_torch_export_round_trip(name: str, tmp_path) -> None:
    model, x = _example(name)
    exported = torch.export.export(model, (x,))
    path = tmp_path / "model.pt2"
    torch.export.save(exported, str(path))
    loaded = torch.export.load(str(path)).module()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-6)


def test_torch_compile_matches_eager() -> None:
    model, x = _example("mobilenet_v3_small_1.0_224", resolution=64)
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name", EXPORT_MODELS)
def test_channels_last_matches_contiguous(name: str) -> None:
    model, x = _example(name)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name", ["mobilenet_v1_0.25_224", "mobilenet_v2_0.35_224", "mobilenet_v3_large_0.75_224",
                                  "mobilenet_v3_small_1.0_224", "mobilenet_v1_conv_0.25_224"])
def test_gradients_reach_every_parameter_in_train_mode(name: str) -> None:
    torch.manual_seed(0)
    model = mobilenet.create_model(name, num_classes=5, dropout=0.0).train()
    x = torch.randn(4, 3, 64, 64)
    loss = F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert param.grad.abs().sum() > 0, param_name


def test_batchnorm_statistics_update_only_in_train_mode() -> None:
    model = mobilenet.create_model("mobilenet_v1_0.25_128")
    bn = model.features[0].bn
    before = bn.running_mean.clone()
    model.eval()(torch.randn(2, 3, 64, 64))
    assert torch.equal(bn.running_mean, before)
    model.train()(torch.randn(2, 3, 64, 64))
    assert not torch.equal(bn.running_mean, before)


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        ({"width_multiplier": 0}, "width_multiplier (alpha) must be a number > 0"),
        ({"alpha": -0.5}, "width_multiplier (alpha) must be a number > 0"),
        ({"resolution": 31}, "resolution must be an integer >= 32"),
        ({"resolution": 224.5}, "resolution must be an integer >= 32"),
        ({"num_classes": -1}, "num_classes must be an integer >= 0"),
        ({"pooling": "median"}, "pooling must be"),
        ({"colour": "red"}, "unknown model option(s) ['colour']"),
        ({"stem_channels": 0}, "stem_channels must be a positive integer or None"),
    ],
)
def test_bad_options_raise_value_error(overrides: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        mobilenet.create_model("mobilenet_v2_1.0_224", **overrides)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_name_lists_closest_names() -> None:
    with pytest.raises(ValueError, match="closest: mobilenet_v3_large_1.0_224"):
        mobilenet.create_model("mobilenet_v3_larg_1.0_224")


def test_list_models_and_names() -> None:
    names = mobilenet.list_models()
    assert len(names) == 46
    assert "mobilenet_v1_0.75_192" in names and "mobilenet_v3_small_minimalistic_1.0_224" in names
    assert mobilenet.list_models("mobilenet_v2_1.?_224") == ["mobilenet_v2_1.0_224", "mobilenet_v2_1.4_224",
                                                              "mobilenet_v2_1.3_224"]
    assert mobilenet.create_model("mobilenet_v1_0.6_100").config.resolution == 100  # any alpha and size


def test_save_and_load_round_trip(tmp_path) -> None:
    model, x = _example("mobilenet_v3_small_0.75_224")
    model.class_names = [f"class {i}" for i in range(10)]
    path = model.save(tmp_path / "weights.safetensors")
    loaded = mobilenet.load(path)
    assert loaded.class_names == model.class_names
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic writer cleaned up


def test_load_rejects_files_that_are_not_ours(tmp_path) -> None:
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not mobilenet weights"):
        mobilenet.load(foreign)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a safetensors file"):
        mobilenet.load(junk)

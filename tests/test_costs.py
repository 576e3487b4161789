"""The papers' cost tables, reproduced by the one cost counter (Howard 2017, Sandler 2018, Howard 2019)."""

from __future__ import annotations

import math

import pytest

from mobilenet.profiling.cost import LayerType, cost_of

# (name, exact PyTorch parameter count, mult-adds in millions rounded to 0.1M)
PAPER_FIGURES = [
    # V1, Table 6 (569 / 325 / 149 / 41) and Table 7 (418 / 290 / 186)
    ("mobilenet_v1_1.0_224", 4_231_976, 568.7),
    ("mobilenet_v1_0.75_224", 2_585_560, 325.4),
    ("mobilenet_v1_0.5_224", 1_331_592, 149.5),
    ("mobilenet_v1_0.25_224", 470_072, 41.0),
    ("mobilenet_v1_1.0_192", 4_231_976, 418.1),
    ("mobilenet_v1_1.0_160", 4_231_976, 290.7),
    ("mobilenet_v1_1.0_128", 4_231_976, 186.4),
    # V2, TF-slim table (300 / 582 / 59; 221 / 154 / 99 / 56)
    ("mobilenet_v2_1.0_224", 3_504_872, 300.8),
    ("mobilenet_v2_1.4_224", 6_108_776, 582.2),
    ("mobilenet_v2_0.35_224", 1_677_128, 59.3),
    ("mobilenet_v2_1.0_192", 3_504_872, 221.3),
    ("mobilenet_v2_1.0_160", 3_504_872, 154.1),
    ("mobilenet_v2_1.0_128", 3_504_872, 99.1),
    ("mobilenet_v2_1.0_96", 3_504_872, 56.3),
    # V3 as released (SE counted in mult-adds)
    ("mobilenet_v3_large_1.0_224", 5_483_032, 216.6),
    ("mobilenet_v3_small_1.0_224", 2_542_856, 56.5),
    ("mobilenet_v3_large_0.75_224", 3_993_528, None),
    ("mobilenet_v3_small_0.75_224", 2_041_872, None),
    ("mobilenet_v3_large_minimalistic_1.0_224", 3_924_288, None),
    ("mobilenet_v3_small_minimalistic_1.0_224", 2_044_736, None),
]


@pytest.mark.parametrize("name,params,mult_adds_m", PAPER_FIGURES, ids=[f[0] for f in PAPER_FIGURES])
def test_paper_figures(name: str, params: int, mult_adds_m: float | None) -> None:
    report = cost_of(name)
    assert report.params == params
    if mult_adds_m is not None:
        assert round(report.mult_adds / 1e6, 1) == mult_adds_m


def test_cost_counter_matches_a_real_model_and_pytorch_param_count() -> None:
    import mobilenet

    model = mobilenet.create_model("mobilenet_v3_small_0.75_224")
    from mobilenet.profiling.cost import cost_of_model

    real = cost_of_model(model)
    on_meta = cost_of("mobilenet_v3_small_0.75_224")
    assert (real.params, real.mult_adds) == (on_meta.params, on_meta.mult_adds)
    # Every parameter sits in a layer the hooks saw: the per-layer rows add up to PyTorch's own count.
    assert sum(layer.params for layer in real.layers) == real.params
    assert real.params == 2_041_872  # papers.md: 2.04M with the 1024 head every release uses


# V1 Table 1 rows: (kind, kernel, in, out, stride) at alpha 1; the closed-form reference for figures 4 and 5.
_V1_ROWS = [("conv", 3, 32, 2)] + [
    ("dws", 3, c, s)
    for c, s in [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
]


def v1_mult_adds_formula(alpha: float, resolution: int, classes: int = 1000) -> int:
    """Paper eq. (6)/(7): D_K^2 * aM * rD_F^2 + aM * aN * rD_F^2 per separable layer, plus the stem and FC."""
    size, in_ch, total = resolution, 3, 0
    for kind, k, out, stride in _V1_ROWS:
        out_ch = int(out * alpha)
        size = math.ceil(size / stride)  # SAME padding
        if kind == "conv":
            total += k * k * in_ch * out_ch * size * size
        else:
            total += k * k * in_ch * size * size + in_ch * out_ch * size * size
        in_ch = out_ch
    return total + in_ch * classes


@pytest.mark.parametrize("alpha", [1.0, 0.75, 0.5, 0.25])
@pytest.mark.parametrize("resolution", [224, 192, 160, 128])
def test_v1_width_resolution_grid_follows_paper_formula(alpha: float, resolution: int) -> None:
    """Figures 4 and 5 plot all 16 pairs; each must equal the paper's closed-form cost."""
    report = cost_of(f"mobilenet_v1_{alpha}_{resolution}")
    assert report.mult_adds == v1_mult_adds_formula(alpha, resolution)


def test_v1_tf_slim_per_layer_docstring() -> None:
    """TF-slim's mobilenet_v1.py docstring: 75% MobileNet at 128, base network 106,002,432 MACs."""
    report = cost_of("mobilenet_v1_0.75_128")
    base = sum(layer.mult_adds for layer in report.layers if layer.layer_type is not LayerType.FULLY_CONNECTED)
    assert base == 106_002_432
    stem = report.layers[0]
    assert (stem.params, stem.mult_adds) == (648, 2_654_208)


def test_v1_table2_breakdown() -> None:
    """Table 2, parameters without BatchNorm and FC bias; the stem's 1.91% is printed as 1.19% (digit swap)."""
    shares = {s.layer_type: s for s in cost_of("mobilenet_v1_1.0_224").breakdown(False, False)}
    expected = {
        LayerType.CONV_1X1: (94.86, 74.59),
        LayerType.DEPTHWISE: (3.06, 1.06),
        LayerType.FULL_CONV: (1.91, 0.02),
        LayerType.FULLY_CONNECTED: (0.18, 24.33),
    }
    assert set(shares) == set(expected)
    for kind, (mult_adds_pct, params_pct) in expected.items():
        assert round(shares[kind].mult_adds_pct, 2) == mult_adds_pct, kind
        assert round(shares[kind].params_pct, 2) == params_pct, kind


def test_v1_baselines_tables_4_and_5() -> None:
    conv = cost_of("mobilenet_v1_conv_1.0_224")
    assert round(conv.params / 1e6, 1) == 29.3
    # Table 4 prints 4866: ours is 4867.3 with the FC layer, 4866.3 without it (see README).
    assert round((conv.mult_adds - 1_024_000) / 1e6) == 4866
    shallow = cost_of("mobilenet_v1_shallow_1.0_224")
    assert round(shallow.params / 1e6, 1) == 2.9
    assert round(shallow.mult_adds / 1e6) == 307


def test_v1_table3_single_layer_reduction() -> None:
    """Table 3: one 14x14x512 separable layer costs 52.3M; as a full conv 462M."""
    dws = {layer.name: layer for layer in cost_of("mobilenet_v1_1.0_224").layers}
    conv = {layer.name: layer for layer in cost_of("mobilenet_v1_conv_1.0_224").layers}
    # features.7 is the first of the five 14x14x512 -> 512 layers.
    separable = dws["features.7.depthwise.conv"].mult_adds + dws["features.7.pointwise.conv"].mult_adds
    assert dws["features.7.depthwise.conv"].input_shape == (512, 14, 14)
    assert round(separable / 1e6, 1) == 52.3
    assert round(conv["features.7.conv"].mult_adds / 1e6) == 462
    assert round(conv["features.7.conv"].params / 1e6, 2) == 2.36


def test_v3_squeeze_excite_is_counted_separately() -> None:
    report = cost_of("mobilenet_v3_large_1.0_224")
    se = sum(layer.mult_adds for layer in report.layers if layer.layer_type is LayerType.SQUEEZE_EXCITE)
    assert round((report.mult_adds - se) / 1e6, 1) == 215.1  # papers.md 3.11: "MACs w/o SE"
    minimal = cost_of("mobilenet_v3_large_minimalistic_1.0_224")
    assert not any(layer.layer_type is LayerType.SQUEEZE_EXCITE for layer in minimal.layers)


def test_cost_follows_resolution_override_and_classes() -> None:
    assert cost_of("mobilenet_v1_1.0_224", resolution=160).mult_adds == cost_of("mobilenet_v1_1.0_160").mult_adds
    ten = cost_of("mobilenet_v2_1.0_224", num_classes=10)
    assert ten.params == 3_504_872 - 990 * 1281

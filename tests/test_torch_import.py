"""torchvision and timm state dicts into our model, without either library.

The test builds its own reference networks with the module structure (hence the state-dict keys and shapes) of
torchvision's ``mobilenet_v2``/``mobilenet_v3_*`` and timm's ``mobilenetv1_*``/``mobilenetv2_*``/``mobilenetv3_*``,
written from those libraries' configuration tables (torchvision's inverted-residual settings, timm's ``arch_def``
strings), not from our specs. Their ``state_dict()`` is the key/shape listing of each layout. Every converted
tensor must be one of the source's tensors, bit for bit, and the reference networks and ours must compute the same
logits from the same weights.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import pytest
import torch
from torch import nn

from mobilenet.cli.main import main as cli_main
from mobilenet.errors import MobilenetError
from mobilenet.models.preprocessing import IMAGENET_MEAN, INCEPTION_MEAN
from mobilenet.weights.format import load
from mobilenet.weights.torch_import import (
    convert_timm_state_dict,
    convert_torchvision_state_dict,
    model_from_state_dict,
    read_state_dict,
    timm_arch,
    torchvision_arch,
)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP's spinning threads make each forward far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_div(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


# ----------------------------------------------------------------------------------------------------------
# torchvision's layout
# ----------------------------------------------------------------------------------------------------------


def tv_cna(cin: int, cout: int, k: int, s: int, act: type[nn.Module] | None, eps: float, groups: int = 1):
    """torchvision's Conv2dNormActivation: Sequential(conv, BN[, act]), padding (k - 1) // 2."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=eps),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class TvResidualV2(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = int(round(inp * t))
        layers: list[nn.Module] = [tv_cna(inp, hidden, 1, 1, nn.ReLU6, 1e-5)] if t != 1 else []
        layers += [
            tv_cna(hidden, hidden, 3, stride, nn.ReLU6, 1e-5, groups=hidden),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and inp == oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class TvV2(nn.Module):
    SETTING = [
        [1, 16, 1, 1],
        [6, 24, 2, 2],
        [6, 32, 3, 2],
        [6, 64, 4, 2],
        [6, 96, 3, 1],
        [6, 160, 3, 2],
        [6, 320, 1, 1],
    ]

    def __init__(self, width: float = 1.0, classes: int = 1000) -> None:
        super().__init__()
        inp, last = make_div(32 * width), make_div(1280 * max(1.0, width))
        features: list[nn.Module] = [tv_cna(3, inp, 3, 2, nn.ReLU6, 1e-5)]
        for t, c, n, s in self.SETTING:
            out = make_div(c * width)
            for i in range(n):
                features.append(TvResidualV2(inp, out, s if i == 0 else 1, t))
                inp = out
        features.append(tv_cna(inp, last, 1, 1, nn.ReLU6, 1e-5))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


class TvSqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * scale


class TvResidualV3(nn.Module):
    def __init__(self, inp: int, k: int, exp: int, out: int, se: bool, act: str, stride: int) -> None:
        super().__init__()
        activation = nn.Hardswish if act == "HS" else nn.ReLU
        layers: list[nn.Module] = [tv_cna(inp, exp, 1, 1, activation, 1e-3)] if exp != inp else []
        layers.append(tv_cna(exp, exp, k, stride, activation, 1e-3, groups=exp))
        if se:
            layers.append(TvSqueezeExcitation(exp, make_div(exp // 4)))
        layers.append(tv_cna(exp, out, 1, 1, None, 1e-3))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and inp == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class TvV3(nn.Module):
    # (input, kernel, expanded, out, SE, activation, stride), torchvision's bneck_conf rows
    LARGE = [
        (16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
        (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
        (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
        (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
        (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1),
    ]  # fmt: skip
    SMALL = [
        (16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
        (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
        (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
        (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1),
    ]  # fmt: skip

    def __init__(self, size: str, width: float = 1.0, classes: int = 1000) -> None:
        super().__init__()
        rows, head = (self.LARGE, 1280) if size == "large" else (self.SMALL, 1024)
        scaled = [
            (make_div(i * width), k, make_div(e * width), make_div(o * width), se, a, s)
            for i, k, e, o, se, a, s in rows
        ]
        features: list[nn.Module] = [tv_cna(3, scaled[0][0], 3, 2, nn.Hardswish, 1e-3)]
        features += [TvResidualV3(*row) for row in scaled]
        last = scaled[-1][3]
        features.append(tv_cna(last, 6 * last, 1, 1, nn.Hardswish, 1e-3))
        self.features = nn.Sequential(*features)
        head = make_div(head * width)
        self.classifier = nn.Sequential(
            nn.Linear(6 * last, head), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(head, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


# ----------------------------------------------------------------------------------------------------------
# timm's layout, from its arch_def strings
# ----------------------------------------------------------------------------------------------------------

TIMM_DEFS = {
    "v1": [["dsa_r1_k3_s1_c64"], ["dsa_r2_k3_s2_c128"], ["dsa_r2_k3_s2_c256"], ["dsa_r6_k3_s2_c512"],
           ["dsa_r2_k3_s2_c1024"]],
    "v2": [["ds_r1_k3_s1_c16"], ["ir_r2_k3_s2_e6_c24"], ["ir_r3_k3_s2_e6_c32"], ["ir_r4_k3_s2_e6_c64"],
           ["ir_r3_k3_s1_e6_c96"], ["ir_r3_k3_s2_e6_c160"], ["ir_r1_k3_s1_e6_c320"]],
    "large": [["ds_r1_k3_s1_e1_c16_nre"], ["ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"],
              ["ir_r3_k5_s2_e3_c40_se0.25_nre"], ["ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"],
              ["ir_r2_k3_s1_e6_c112_se0.25"], ["ir_r3_k5_s2_e6_c160_se0.25"], ["cn_r1_k1_s1_c960"]],
    "small": [["ds_r1_k3_s2_e1_c16_se0.25_nre"], ["ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"],
              ["ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"], ["ir_r2_k5_s1_e3_c48_se0.25"],
              ["ir_r3_k5_s2_e6_c96_se0.25"], ["cn_r1_k1_s1_c576"]],
}  # fmt: skip


def decode(block: str) -> dict[str, object]:
    """'ir_r2_k3_s2_e6_c24_se0.25_nre' -> {'type': 'ir', 'r': 2, 'k': 3, 's': 2, 'e': 6.0, 'c': 24, ...}."""
    kind, *options = block.split("_")
    decoded: dict[str, object] = {"type": kind, "e": 1.0, "se": 0.0, "relu": False}
    for option in options:
        if option == "nre":
            decoded["relu"] = True
        elif option.startswith("se"):
            decoded["se"] = float(option[2:])
        else:
            key, value = re.match(r"([a-z])(.*)", option).groups()  # type: ignore[union-attr]
            decoded[key] = float(value) if key == "e" else int(value)
    return decoded


class TimmSE(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce, self.conv_expand = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = nn.functional.hardsigmoid(self.conv_expand(torch.relu(self.conv_reduce(x.mean((2, 3), keepdim=True)))))
        return x * gate


class TimmBlock(nn.Module):
    """timm's DepthwiseSeparableConv ('ds', 'dsa'), InvertedResidual ('ir') and ConvBnAct ('cn') blocks."""

    def __init__(self, spec: dict, cin: int, cout: int, stride: int, act: Callable, se: float) -> None:
        super().__init__()
        self.kind, self.act = spec["type"], act
        k = int(spec["k"])  # type: ignore[arg-type]
        self.skip = stride == 1 and cin == cout and self.kind in ("ds", "ir")  # 'dsa' (V1) is noskip
        if self.kind == "cn":
            self.conv, self.bn1 = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)
            return
        mid = cin if self.kind in ("ds", "dsa") else make_div(cin * float(spec["e"]))  # type: ignore[arg-type]
        if self.kind == "ir":
            self.conv_pw, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        dw_bn = "bn1" if self.kind in ("ds", "dsa") else "bn2"
        self.conv_dw = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
        setattr(self, dw_bn, nn.BatchNorm2d(mid))
        self.se = TimmSE(mid, make_div(mid * se)) if se else nn.Identity()
        if self.kind == "ir":
            self.conv_pwl, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        else:
            self.conv_pw, self.bn2 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "cn":
            return self.act(self.bn1(self.conv(x)))
        if self.kind == "ir":
            y = self.act(self.bn2(self.conv_dw(self.act(self.bn1(self.conv_pw(x))))))
            y = self.bn3(self.conv_pwl(self.se(y)))
        else:
            y = self.bn2(self.conv_pw(self.se(self.act(self.bn1(self.conv_dw(x))))))
            y = self.act(y) if self.kind == "dsa" else y  # 'dsa': activation after the pointwise conv
        return x + y if self.skip else y


class TimmNet(nn.Module):
    def __init__(self, family: str, multiplier: float = 1.0, classes: int = 1000) -> None:
        super().__init__()
        v3 = family in ("large", "small")
        default_act = nn.Hardswish() if v3 else nn.ReLU6()
        stem = 16 if v3 and multiplier < 0.75 else make_div((16 if v3 else 32) * multiplier)  # timm's fix_stem
        self.conv_stem, self.bn1, self.act = nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), default_act
        stages, cin = [], stem
        for stage in TIMM_DEFS[family]:
            blocks = []
            for text in stage:
                spec = decode(text)
                cout = make_div(int(spec["c"]) * multiplier)  # type: ignore[call-overload]
                act = nn.ReLU() if spec["relu"] else default_act
                for repeat in range(int(spec["r"])):  # type: ignore[call-overload]
                    stride = int(spec["s"]) if repeat == 0 else 1  # type: ignore[call-overload]
                    blocks.append(TimmBlock(spec, cin, cout, stride, act, float(spec["se"])))  # type: ignore[arg-type]
                    cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.family = family
        if family == "v2":
            head = max(1280, make_div(1280 * multiplier))
            self.conv_head, self.bn2 = nn.Conv2d(cin, head, 1, bias=False), nn.BatchNorm2d(head)
        elif v3:
            head = 1280 if family == "large" else 1024
            self.conv_head = nn.Conv2d(cin, head, 1, bias=True)  # MobileNetV3's "efficient head": after pooling
        else:
            head = cin
        self.classifier = nn.Linear(head, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act(self.bn1(self.conv_stem(x))))
        if self.family == "v2":
            x = self.act(self.bn2(self.conv_head(x)))
        x = x.mean((2, 3), keepdim=True)
        if self.family in ("large", "small"):
            x = self.act(self.conv_head(x))
        return self.classifier(x.flatten(1))


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------


def randomize(model: nn.Module, seed: int = 0, resolution: int = 64) -> nn.Module:
    """Random weights, random BN affine parameters, BN statistics from a random batch then perturbed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(module.num_features, generator=generator) * 0.6 - 0.3)
                module.reset_running_stats()
                module.momentum = None
        model.train()
        model(torch.randn(4, 3, resolution, resolution, generator=generator))
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_var.mul_(torch.rand(module.num_features, generator=generator) * 0.7 + 0.7)
                module.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (1,), generator=generator)))
    return model.eval()


def scrambled(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """The model's state dict with every tensor random, so that no two tensors are equal."""
    generator = torch.Generator().manual_seed(seed)
    return {
        key: torch.randn(t.shape, generator=generator)
        if t.is_floating_point()
        else torch.randint(1, 2**40, t.shape, generator=generator)
        for key, t in model.state_dict().items()
    }


def fingerprint(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()


def assert_bijection(source: dict[str, torch.Tensor], converted: dict[str, torch.Tensor]) -> None:
    """Every source tensor lands in exactly one of ours, unchanged (a 1x1 conv only loses its 1x1 dims)."""
    wanted = {fingerprint(t.float() if t.is_floating_point() else t): key for key, t in source.items()}
    got = [fingerprint(t) for t in converted.values()]
    assert len(got) == len(set(got)) == len(converted)
    assert set(got) == set(wanted), sorted(wanted[f] for f in set(wanted) - set(got))[:5]


# (source layout, source name, reference factory, our model name)
TORCHVISION = {
    "mobilenet_v2": (lambda: TvV2(1.0), "mobilenet_v2_1.0_224"),
    "mobilenet_v3_large": (lambda: TvV3("large"), "mobilenet_v3_large_1.0_224"),
    "mobilenet_v3_small": (lambda: TvV3("small"), "mobilenet_v3_small_1.0_224"),
}
TIMM = {
    "mobilenetv1_100": (lambda: TimmNet("v1", 1.0), "mobilenet_v1_1.0_224"),
    "mobilenetv1_050": (lambda: TimmNet("v1", 0.5), "mobilenet_v1_0.5_224"),
    "mobilenetv2_100": (lambda: TimmNet("v2", 1.0), "mobilenet_v2_1.0_224"),
    "mobilenetv2_035": (lambda: TimmNet("v2", 0.35), "mobilenet_v2_0.35_224"),
    "mobilenetv2_140": (lambda: TimmNet("v2", 1.4), "mobilenet_v2_1.4_224"),
    "mobilenetv3_large_100": (lambda: TimmNet("large", 1.0), "mobilenet_v3_large_1.0_224"),
    "mobilenetv3_large_075": (lambda: TimmNet("large", 0.75), "mobilenet_v3_large_0.75_224"),
    "mobilenetv3_small_100": (lambda: TimmNet("small", 1.0), "mobilenet_v3_small_1.0_224"),
    "mobilenetv3_small_075": (lambda: TimmNet("small", 0.75), "mobilenet_v3_small_0.75_224"),
    "mobilenetv3_small_050": (lambda: TimmNet("small", 0.5), "mobilenet_v3_small_0.5_224"),  # fixed 16-wide stem
}


# ----------------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_layout_round_trips(name: str) -> None:
    factory, ours = TORCHVISION[name]
    state = scrambled(factory())
    converted = convert_torchvision_state_dict(state, name)
    assert_bijection(state, converted)
    model = model_from_state_dict(state, "torchvision", name)
    assert model.weights_info["extra"]["model"] == name
    config = model.config
    assert (config.arch, config.width_multiplier, config.padding) == (ours.rsplit("_", 2)[0], 1.0, "symmetric")
    assert config.bn_eps == (1e-5 if name == "mobilenet_v2" else 1e-3)
    assert model.preprocessing.mean == IMAGENET_MEAN and model.preprocessing.interpolation == "bilinear"
    assert model.preprocessing.crop_pct == 0.875


@pytest.mark.parametrize("name", list(TIMM))
def test_timm_layout_round_trips(name: str) -> None:
    factory, ours = TIMM[name]
    state = scrambled(factory())
    assert_bijection(state, convert_timm_state_dict(state, name))
    model = model_from_state_dict(state, "timm", name)
    arch, alpha, _ = ours.rsplit("_", 2)
    assert (model.config.arch, model.config.width_multiplier) == (arch, float(alpha))
    assert model.config.stem_channels == (16 if arch.startswith("mobilenet_v3") and float(alpha) < 0.75 else None)
    assert model.config.bn_eps == 1e-5 and model.preprocessing.interpolation == "bicubic"
    assert model.preprocessing.mean == (INCEPTION_MEAN if arch == "mobilenet_v1" else IMAGENET_MEAN)


@pytest.mark.parametrize(
    ("layout", "name", "reference"),
    [
        ("torchvision", "mobilenet_v2", lambda: TvV2(0.5, classes=10)),
        ("torchvision", "mobilenet_v3_small", lambda: TvV3("small", classes=10)),
        ("timm", "mobilenetv1_100", lambda: TimmNet("v1", 1.0, classes=10)),
        ("timm", "mobilenetv2_100", lambda: TimmNet("v2", 1.0, classes=10)),
        ("timm", "mobilenetv3_large_100", lambda: TimmNet("large", 1.0, classes=10)),
        ("timm", "mobilenetv3_small_075", lambda: TimmNet("small", 0.75, classes=10)),
        ("timm", "mobilenetv3_large_050", lambda: TimmNet("large", 0.5, classes=10)),
    ],
)
def test_same_logits_as_the_reference_network(layout: str, name: str, reference: Callable[[], nn.Module]) -> None:
    source = randomize(reference())
    width = 0.5 if name == "mobilenet_v2" else 1.0  # torchvision names carry no width: it is an option
    model = model_from_state_dict(source.state_dict(), layout, name, width_mult=width)
    assert model.config.num_classes == 10
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = source(x), model(x)
    assert expected.std(0).mean() > 1e-2  # the logits depend on the input: the comparison means something
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_wrapped_and_prefixed_checkpoints_load(tmp_path) -> None:
    state = TvV2(0.5).state_dict()
    wrapped = {"epoch": torch.tensor(3), "state_dict": {f"module.{k}": v for k, v in state.items()}}
    path = tmp_path / "checkpoint.pth"
    torch.save(wrapped, path)
    loaded = read_state_dict(path)
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[name], value) for name, value in state.items())
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # pre-0.4.1 checkpoints
    from_old = model_from_state_dict(old, "torchvision", "mobilenet_v2", width_mult=0.5)
    from_full = model_from_state_dict(state, "torchvision", "mobilenet_v2", width_mult=0.5)
    full_state = from_full.state_dict()
    for name, value in from_old.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(value, full_state[name]), name


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: convert_torchvision_state_dict(TvV2().state_dict(), "mobilenet_v3_large"), "wrong --arch"),
        (lambda: convert_timm_state_dict(TimmNet("v2").state_dict(), "mobilenetv2_050"), "cannot load exactly"),
        (lambda: convert_timm_state_dict(TimmNet("large").state_dict(), "mobilenetv3_small_100"), "blocks"),
        (lambda: convert_torchvision_state_dict({**TvV2().state_dict(), "extra.weight": torch.zeros(1)},
                                                "mobilenet_v2"), "no place"),
        (lambda: torchvision_arch("mobilenet_v3_large", 0.75), "narrows its 1280-wide head"),
        (lambda: timm_arch("mobilenetv1_035"), "rounds the"),
        (lambda: timm_arch("mobilenetv2_110d"), "unsupported timm MobileNet"),
        (lambda: torchvision_arch("mobilenet_v1"), "unknown torchvision"),
        (lambda: convert_timm_state_dict([1, 2], "mobilenetv2_100"), "expected a state dict"),
    ],
    ids=["wrong_arch", "wrong_width", "wrong_v3_size", "extra_key", "tv_v3_narrow", "timm_v1_rounding",
         "timm_deeper", "tv_unknown", "not_a_mapping"],
)  # fmt: skip
def test_weights_that_cannot_load_exactly_are_refused(call: Callable[[], object], message: str) -> None:
    with pytest.raises(MobilenetError, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)


def test_tf_ports_use_tf_padding_and_inception_range() -> None:
    source = timm_arch("tf_mobilenetv3_large_100")
    assert (source.padding, source.bn_eps, source.preprocessing.mean) == ("tf_same", 1e-3, INCEPTION_MEAN)
    model = model_from_state_dict(TimmNet("large").state_dict(), "timm", "tf_mobilenetv3_large_100")
    assert model.config.padding == "tf_same"


def test_cli_imports_state_dicts(tmp_path, capsys) -> None:
    source = randomize(TimmNet("v1", 0.5))
    pth, st = tmp_path / "timm_v1.pth", tmp_path / "timm_v1.safetensors"
    torch.save(source.state_dict(), pth)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(st))
    x = torch.randn(1, 3, 64, 64)
    for file in (pth, st):
        out = tmp_path / f"{file.stem}_{file.suffix[1:]}_ours.safetensors"
        code = cli_main(["import", str(file), "-o", str(out), "--from-layout", "timm", "--arch", "mobilenetv1_050"])
        assert code == 0
        with torch.no_grad():
            torch.testing.assert_close(load(out)(x), source(x), atol=1e-5, rtol=1e-5)
    assert "mobilenet_v1_0.5_224" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--from-layout"),
        (["--from-layout", "timm"], "--arch"),
        (["--from-layout", "timm", "--arch", "mobilenetv2_100"], "blocks"),
        (["--from-layout", "caffe", "--arch", "x"], "invalid choice"),
    ],
)
def test_cli_bad_state_dict_arguments_are_one_line_errors(tmp_path, capsys, extra: list[str], message: str) -> None:
    pth = tmp_path / "v1.pth"
    torch.save(TimmNet("v1", 0.5).state_dict(), pth)
    try:
        code = cli_main(["import", str(pth), "-o", str(tmp_path / "out.safetensors"), *extra])
    except SystemExit as exit_:  # argparse refuses a bad choice itself
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err

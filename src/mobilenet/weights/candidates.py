"""Which of our models a foreign MobileNet is: candidate widths, and the search that tries each one.

Shared by the TFLite and Keras importers. A foreign graph names no width multiplier, so the candidates come from
the widths it has: the stem's, and the widest layer before the head. A model is built (on the meta device) for
each candidate and the importer's matcher walks the foreign layers against it; the first that fits everywhere
is the answer, and when none does, the one that got furthest explains why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mobilenet.errors import MobilenetError
from mobilenet.models.builder import WidthScaler
from mobilenet.models.registry import build_on_meta, config_from_name, format_alpha, model_name
from mobilenet.models.specs import ARCHITECTURES, ArchSpec

RELEASED_ALPHAS = (0.25, 0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


@dataclass(frozen=True)
class Candidate:
    """A width multiplier to try, with the model options it needs (a fixed stem width)."""

    alpha: str
    options: dict[str, Any] = field(default_factory=dict)


def width_candidates(spec: ArchSpec, stem: int | None, last_widths: Sequence[int]) -> list[Candidate]:
    """Width multipliers implied by the stem and by the widest narrowing layer, then the released ones.

    Only candidates that give the stem's width are kept, since building a model per candidate is the slow
    part. A V3 whose stem does not follow its width (Keras keeps 16 channels for every alpha, timm below 0.75)
    is tried with ``stem_channels`` fixed to the stem's width. If nothing gives that width, the first guesses
    stay so that the error can show where the closest one differs.
    """
    narrowing = [row.out_channels for row in spec.layers if row.narrows]
    from_body: list[float] = []
    for width in last_widths:
        # int(c * alpha) truncates: c + 0.5 keeps the float product from landing just under an integer
        from_body += [width / narrowing[-1], (width + 0.5) / narrowing[-1]]
    from_stem = [stem / spec.layers[0].out_channels] if stem else []
    alphas = _distinct_alphas([*from_stem, *from_body, *RELEASED_ALPHAS])
    scaled_stem = {a: WidthScaler(spec, float(a))(spec.layers[0].out_channels) for a in alphas}
    fitting = [Candidate(a) for a in alphas if scaled_stem[a] == stem]
    if stem and spec.family.startswith("mobilenet_v3"):
        fixed = [a for a in _distinct_alphas(from_body) if scaled_stem[a] != stem]
        fitting += [Candidate(a, {"stem_channels": stem}) for a in fixed]
    return fitting or [Candidate(a) for a in alphas[:2]]


def _distinct_alphas(values: Sequence[float]) -> list[str]:
    alphas: list[str] = []
    for alpha in values:
        text = format_alpha(alpha)
        if 0 < alpha <= 2 and text not in alphas:
            alphas.append(text)
    return alphas


@dataclass
class SearchResult:
    name: str  # "" when nothing fits
    options: dict[str, Any]
    matcher: Any  # the importer's matcher that fitted, holding the converted state; None when nothing fits
    closest: tuple[int, str, str] | None  # (progress, name, reason) of the candidate that got furthest


def search_fitting_model(
    archs: list[str],
    candidates_for: Callable[[ArchSpec], list[Candidate]],
    resolution: int,
    classes: int,
    make_matcher: Callable[[Any], Any],
    mismatch_type: type[Exception],
) -> SearchResult:
    """Try each (architecture, candidate) in order; return the first whose matcher fits every layer."""
    closest: tuple[int, str, str] | None = None
    for arch in archs:
        for candidate in candidates_for(ARCHITECTURES[arch]):
            name = model_name(arch, float(candidate.alpha), resolution)
            try:
                config = config_from_name(name, padding="tf_same", num_classes=classes, **candidate.options)
            except MobilenetError:  # a width the registry refuses is simply not a fit
                continue
            matcher = make_matcher(build_on_meta(config))
            try:
                matcher.match()
            except mismatch_type as mismatch:
                progress = int(getattr(mismatch, "progress", 0))
                label = name + "".join(f" ({k}={v})" for k, v in candidate.options.items())
                if closest is None or progress > closest[0]:
                    closest = (progress, label, str(mismatch))
                continue
            return SearchResult(name, dict(candidate.options), matcher, closest)
    return SearchResult("", {}, None, closest)

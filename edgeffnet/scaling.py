"""Compound scaling: from a model-spec string to the scaled stage table.

The baseline network (the paper's Table 1) and the published presets are data; the two scaling rules
(`round_channels`, `round_layers`) are pure functions; everything else follows from them.

Spec grammar (also printed by `edgeffnet info --help`)::

    SPEC   := [BASE] ("," KEY "=" VALUE)*
    BASE   := b0 .. b7 | lite0 .. lite4          (default b0; "efficientnet-b3" etc. also accepted)
    KEY    := phi | alpha | beta | gamma | only | w | d | r | res | dropout

    b2                       a published preset
    phi=1.5                  compound scaling of B0: d=alpha^phi, w=beta^phi, r=gamma^phi
    lite0,phi=-1             the same rule from the Lite baseline (negative phi: smaller than the baseline)
    phi=2,alpha=1.3,beta=1.05,gamma=1.1     custom coefficients (alpha*beta^2*gamma^2 is shown)
    phi=3,only=depth         spend the whole (alpha*beta^2*gamma^2)^phi FLOPS budget on one dimension
    b0,d=4  b0,w=2  b0,r=2   single-dimension multipliers (the paper's Figure 3 / Table 3 experiments)
    b3,res=512               a preset at another input resolution (pixels)

Values given explicitly (w, d, r, res, dropout) override what the base and phi produce.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from .errors import UserError

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # the paper's grid-searched coefficients


@dataclass(frozen=True)
class Stage:
    """One row of the stage table: a run of identical MBConv blocks (the first may stride)."""

    expand_ratio: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    layers: int
    resolution: int = 0  # input resolution of the stage, filled in by scaling

    @property
    def operator(self) -> str:
        return f"MBConv{self.expand_ratio}, k{self.kernel}x{self.kernel}"


# EfficientNet-B0, the paper's Table 1 (stages 2..8; stage 1 is the stem, stage 9 the head).
BASELINE_STAGES = (
    Stage(1, 3, 1, 32, 16, 1),
    Stage(6, 3, 2, 16, 24, 2),
    Stage(6, 5, 2, 24, 40, 2),
    Stage(6, 3, 2, 40, 80, 3),
    Stage(6, 5, 1, 80, 112, 3),
    Stage(6, 5, 2, 112, 192, 4),
    Stage(6, 3, 1, 192, 320, 1),
)
STEM_CHANNELS, HEAD_CHANNELS, BASE_RESOLUTION = 32, 1280, 224


@dataclass(frozen=True)
class Family:
    """What distinguishes a family built from the same baseline table."""

    name: str
    activation: str  # "silu" or "relu6"
    se_ratio: float  # squeeze-excitation width relative to a block's input channels; 0 = no SE
    fixed_stem_head: bool  # Lite keeps stem/head channels and the first/last stage depth unscaled
    presets: dict[str, tuple[float, float, int, float]]  # name -> (width, depth, resolution, dropout)


FAMILIES = {
    "efficientnet": Family(
        "efficientnet", "silu", 0.25, False,
        {
            "b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
            "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
            "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5),
        },
    ),
    "lite": Family(
        "lite", "relu6", 0.0, True,
        {
            "lite0": (1.0, 1.0, 224, 0.2), "lite1": (1.0, 1.1, 240, 0.2), "lite2": (1.1, 1.2, 260, 0.3),
            "lite3": (1.2, 1.4, 280, 0.3), "lite4": (1.4, 1.8, 300, 0.3),
        },
    ),
}
PRESETS = {name: fam for fam in FAMILIES.values() for name in fam.presets}
BASELINES = {"efficientnet": "b0", "lite": "lite0"}


def round_channels(channels: float, divisor: int = 8) -> int:
    """Round to a multiple of `divisor`, never below 90% of the scaled value."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


def round_layers(layers: float) -> int:
    """Layer counts round up: a scaled stage never loses depth to rounding."""
    return int(math.ceil(layers))


def round_resolution(pixels: float, multiple: int = 8) -> int:
    # Multiples of 8 keep every feature map a whole number of vector lanes / tensor-core tiles.
    return max(multiple, int(round(pixels / multiple)) * multiple)


@dataclass(frozen=True)
class ModelSpec:
    """A point of the scaling family, fully resolved: what the builder needs and what `info` prints."""

    name: str
    family: str
    width: float
    depth: float
    resolution: int
    dropout: float
    stem_channels: int
    head_channels: int
    stages: tuple[Stage, ...]
    activation: str
    se_ratio: float
    phi: float | None = None
    alpha: float = ALPHA
    beta: float = BETA
    gamma: float = GAMMA
    only: str | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def r(self) -> float:
        return self.resolution / BASE_RESOLUTION

    @property
    def flops_base(self) -> float:
        """alpha*beta^2*gamma^2: the FLOPS multiplier per unit of phi (the paper aims for 2)."""
        return self.alpha * self.beta**2 * self.gamma**2

    @property
    def nominal_phi(self) -> float | None:
        """phi as given, or the preset's index (B3 is phi=3 in the paper's naming)."""
        if self.phi is not None:
            return self.phi
        digits = re.sub(r"\D", "", self.name)
        return float(digits) if self.name in PRESETS else None

    @property
    def blocks(self) -> int:
        return sum(s.layers for s in self.stages)


def scale(family: Family, width: float, depth: float, resolution: int) -> tuple[int, int, tuple[Stage, ...]]:
    """Apply the two rounding rules to the baseline table: (stem channels, head channels, stages)."""
    fixed = family.fixed_stem_head
    stem = STEM_CHANNELS if fixed else round_channels(STEM_CHANNELS * width)
    head = HEAD_CHANNELS if fixed else round_channels(HEAD_CHANNELS * width)
    stages = []
    res = _conv_out(resolution, 2)  # after the stride-2 stem
    last = len(BASELINE_STAGES) - 1
    for i, st in enumerate(BASELINE_STAGES):
        layers = st.layers if fixed and i in (0, last) else round_layers(st.layers * depth)
        stages.append(
            replace(
                st,
                in_channels=stem if i == 0 else round_channels(st.in_channels * width),
                out_channels=round_channels(st.out_channels * width),
                layers=layers,
                resolution=res,
            )
        )
        res = _conv_out(res, st.stride)
    return stem, head, tuple(stages)


def _conv_out(size: int, stride: int) -> int:
    return -(-size // stride)  # "same"-style ceil; equals floor((n+2p-k)/s)+1 for k odd, p=k//2


SPEC_FORMS = "b0..b7, lite0..lite4, 'b0,phi=1.5', 'phi=2,only=depth', 'b0,w=2', 'b0,d=3', 'b0,r=1.5', 'b3,res=512'"
_KEYS = {"phi", "alpha", "beta", "gamma", "only", "w", "d", "r", "res", "dropout"}
_ALIASES = {"width": "w", "depth": "d", "resolution": "res"}
_ONLY = {"depth", "width", "resolution"}


def _bad(text: str, why: str) -> UserError:
    return UserError(f"bad model spec '{text}': {why}; valid forms: {SPEC_FORMS}")


def preset_name(token: str) -> str | None:
    t = token.strip().lower().replace("_", "-")
    t = t.removeprefix("efficientnet-")
    return t if t in PRESETS else None


def parse_spec(text: str) -> ModelSpec:
    """Parse a model-spec string (see the module docstring) into a resolved ModelSpec."""
    if isinstance(text, ModelSpec):
        return text
    if not isinstance(text, str) or not text.strip():
        raise _bad(str(text), "empty spec")
    tokens = [t.strip() for t in text.split(",")]
    base = "b0"
    if "=" not in tokens[0]:
        base = preset_name(tokens[0]) or ""
        if not base:
            raise _bad(text, f"unknown model '{tokens[0]}'")
        tokens = tokens[1:]
    values: dict[str, str] = {}
    for tok in tokens:
        key, sep, val = tok.partition("=")
        key = _ALIASES.get(key.strip().lower(), key.strip().lower())
        if not sep or key not in _KEYS or not val.strip():
            raise _bad(text, f"'{tok}' is not KEY=VALUE with KEY one of {', '.join(sorted(_KEYS))}")
        if key in values:
            raise _bad(text, f"'{key}' given twice")
        values[key] = val.strip().lower()
    return _resolve(text, base, values)


def _number(text: str, values: dict[str, str], key: str, positive: bool = True) -> float | None:
    if key not in values:
        return None
    try:
        v = float(values[key])
    except ValueError:
        raise _bad(text, f"{key}={values[key]} is not a number") from None
    if not math.isfinite(v) or (positive and v <= 0):
        raise _bad(text, f"{key}={values[key]} must be a positive number")
    return v


def _resolve(text: str, base: str, values: dict[str, str]) -> ModelSpec:
    family = PRESETS[base]
    width, depth, resolution, dropout = family.presets[base]
    phi = _number(text, values, "phi", positive=False)
    alpha = _number(text, values, "alpha") or ALPHA
    beta = _number(text, values, "beta") or BETA
    gamma = _number(text, values, "gamma") or GAMMA
    only = values.get("only")
    warnings: list[str] = []

    if phi is None and ({"alpha", "beta", "gamma", "only"} & values.keys()):
        raise _bad(text, "alpha/beta/gamma/only need phi=")
    if only is not None and only not in _ONLY:
        raise _bad(text, f"only={only} must be one of depth, width, resolution")
    if phi is not None:
        if base != BASELINES[family.name]:
            raise _bad(text, f"phi scales the family baseline; write '{BASELINES[family.name]},phi=...'")
        if abs(phi) > 12:
            raise _bad(text, f"phi={phi:g} is outside -12..12")
        budget = alpha * beta**2 * gamma**2
        if abs(budget - 2.0) > 0.1:
            warnings.append(
                f"alpha*beta^2*gamma^2 = {budget:.3f}, far from 2: FLOPS will grow by {budget:.3f}^phi, not 2^phi"
            )
        if only is None:
            depth, width, r = alpha**phi, beta**phi, gamma**phi
        else:  # the whole budget on one dimension: FLOPS ~ d * w^2 * r^2
            total = budget**phi
            depth, width, r = (
                (total, 1.0, 1.0) if only == "depth"
                else (1.0, math.sqrt(total), 1.0) if only == "width"
                else (1.0, 1.0, math.sqrt(total))
            )
        resolution = round_resolution(BASE_RESOLUTION * r)
        dropout = min(0.5, 0.2 + 0.05 * max(phi, 0.0))  # the presets' trend; inert at inference

    width = _number(text, values, "w") or width
    depth = _number(text, values, "d") or depth
    r_mult = _number(text, values, "r")
    if r_mult is not None:
        resolution = round_resolution(BASE_RESOLUTION * r_mult)
    res = _number(text, values, "res")
    if res is not None:
        if res != int(res):
            raise _bad(text, f"res={values['res']} must be a whole number of pixels")
        resolution = int(res)
    if not 32 <= resolution <= 4096:
        raise _bad(text, f"resolution {resolution} is outside 32..4096 pixels")
    if not (0.05 <= width <= 16 and 0.05 <= depth <= 32):
        raise _bad(text, f"w={width:g}, d={depth:g} are outside w 0.05..16, d 0.05..32")
    d = _number(text, values, "dropout", positive=False)
    if d is not None:
        if not 0 <= d < 1:
            raise _bad(text, f"dropout={d:g} must be in [0, 1)")
        dropout = d

    stem, head, stages = scale(family, width, depth, resolution)
    name = base if not values else ",".join([base] + [f"{k}={values[k]}" for k in sorted(values)])
    return ModelSpec(
        name=name, family=family.name, width=width, depth=depth, resolution=resolution, dropout=dropout,
        stem_channels=stem, head_channels=head, stages=stages, activation=family.activation,
        se_ratio=family.se_ratio, phi=phi, alpha=alpha, beta=beta, gamma=gamma, only=only,
        warnings=tuple(warnings),
    )


def with_resolution(spec: ModelSpec, resolution: int) -> ModelSpec:
    """The same network run at another input size (weights are resolution-independent)."""
    if resolution == spec.resolution:
        return spec
    if not 32 <= resolution <= 4096:
        raise UserError(f"resolution {resolution} is outside 32..4096 pixels")
    stem, head, stages = scale(FAMILIES[spec.family], spec.width, spec.depth, resolution)
    return replace(spec, resolution=resolution, stages=stages)

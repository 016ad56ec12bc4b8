"""Compound scaling: from a model-spec string to the scaled stage table.

The baseline network (the paper's Table 1) and the published presets are data; the two scaling rules
(`round_channels`, `round_layers`) are pure functions; everything else follows from them.

Spec grammar (also printed by `edgeffnet info --help`)::

    SPEC   := [BASE] ("," KEY "=" VALUE)*
    BASE   := b0 .. b7 | lite0 .. lite4 | mobilenetv1 | mobilenetv2 | resnet50
              (default b0; "efficientnet-b3", "mobilenet_v2", "resnet-50" also accepted)
    KEY    := phi | alpha | beta | gamma | only | w | d | r | res | dropout

    b2                       a published preset
    phi=1.5                  compound scaling of B0: d=alpha^phi, w=beta^phi, r=gamma^phi
    lite0,phi=-1             the same rule from the Lite baseline (negative phi: smaller than the baseline)
    phi=2,alpha=1.3,beta=1.05,gamma=1.1     custom coefficients (alpha*beta^2*gamma^2 is shown)
    phi=3,only=depth         spend the whole (alpha*beta^2*gamma^2)^phi FLOPS budget on one dimension
    b0,d=4  b0,w=2  b0,r=2   single-dimension multipliers (the paper's Figure 3 / Table 3 experiments)
    b3,res=512               a preset at another input resolution (pixels)
    mobilenetv1,d=1.4,w=1.2,r=1.3   the paper's Table 3: other baselines, the same rules and grammar
    resnet50,phi=2           compound scaling of ResNet-50 with alpha, beta, gamma (1.2, 1.1, 1.15)

Values given explicitly (w, d, r, res, dropout) override what the base and phi produce.
Bounds: phi -12..12, alpha/beta/gamma 0.1..10, w 0.05..16, d 0.05..32, res 32..4096 pixels, dropout
[0, 1); numbers are plain ASCII decimals (1.5, -1, 2e-1), a spec at most 256 characters.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field, replace

from edgeffnet.core.errors import UserError

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # the paper's grid-searched coefficients


@dataclass(frozen=True)
class Stage:
    """One row of the stage table: a run of identical blocks (the first may stride and change width).

    `block` names the block: "mbconv" (inverted residual: 1x1 expand to in x expand_ratio, depthwise
    kxk, optional squeeze-excitation, linear 1x1 project, skip when shapes match), "dsconv" (MobileNetV1:
    depthwise kxk then 1x1, both activated, no skip) or "bottleneck" (ResNet v1.5: 1x1 down to
    out / expand_ratio, kxk that strides, 1x1 up to out, projection shortcut when shapes change, the
    activation after the sum).
    """

    expand_ratio: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    layers: int
    resolution: int = 0  # input resolution of the stage, filled in by scaling
    block: str = "mbconv"

    @property
    def operator(self) -> str:
        if self.block == "dsconv":
            return f"DSConv, k{self.kernel}x{self.kernel}"
        if self.block == "bottleneck":
            return f"Bottleneck{self.expand_ratio}, k{self.kernel}x{self.kernel}"
        return f"MBConv{self.expand_ratio}, k{self.kernel}x{self.kernel}"

    @property
    def mid_channels(self) -> int:
        """The bottleneck's inner width (ResNet's "planes"); the expanded width of an MBConv."""
        if self.block == "bottleneck":
            return self.out_channels // self.expand_ratio
        return self.in_channels * self.expand_ratio


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

# The paper's Table 3 baselines, as stage tables for the same builder.
# MobileNetV1 (Howard et al. 2017, Table 1): 13 depthwise-separable layers, no head conv (as timm's
# mobilenetv1_100: ReLU6, the classifier reads the last 1024 channels).
MOBILENETV1_STAGES = (
    Stage(1, 3, 1, 32, 64, 1, block="dsconv"),
    Stage(1, 3, 2, 64, 128, 2, block="dsconv"),
    Stage(1, 3, 2, 128, 256, 2, block="dsconv"),
    Stage(1, 3, 2, 256, 512, 6, block="dsconv"),
    Stage(1, 3, 2, 512, 1024, 2, block="dsconv"),
)
# MobileNetV2 (Sandler et al. 2018, Table 2): t, c, n, s with 3x3 depthwise kernels.
MOBILENETV2_STAGES = (
    Stage(1, 3, 1, 32, 16, 1),
    Stage(6, 3, 2, 16, 24, 2),
    Stage(6, 3, 2, 24, 32, 3),
    Stage(6, 3, 2, 32, 64, 4),
    Stage(6, 3, 1, 64, 96, 3),
    Stage(6, 3, 2, 96, 160, 3),
    Stage(6, 3, 1, 160, 320, 1),
)
# ResNet-50 (He et al. 2016, Table 1; stride on the 3x3 as torchvision's v1.5): conv2_x .. conv5_x.
RESNET50_STAGES = (
    Stage(4, 3, 1, 64, 256, 3, block="bottleneck"),
    Stage(4, 3, 2, 256, 512, 4, block="bottleneck"),
    Stage(4, 3, 2, 512, 1024, 6, block="bottleneck"),
    Stage(4, 3, 2, 1024, 2048, 3, block="bottleneck"),
)


@dataclass(frozen=True)
class Family:
    """What distinguishes a family: its baseline table, stem, head and block details, and its presets."""

    name: str
    activation: str  # "silu", "relu6" or "relu"
    se_ratio: float  # squeeze-excitation width relative to a block's input channels; 0 = no SE
    fixed_stem_head: bool  # Lite keeps stem/head channels and the first/last stage depth unscaled
    presets: dict[str, tuple[float, float, int, float]]  # name -> (width, depth, resolution, dropout)
    stages: tuple[Stage, ...] = BASELINE_STAGES
    stem_channels: int = STEM_CHANNELS
    stem_kernel: int = 3
    stem_pool: bool = False  # ResNet: a 3x3 stride-2 max-pool after the stem convolution
    head_channels: int = HEAD_CHANNELS  # the 1x1 head conv before pooling; 0: none, the classifier reads the last stage
    head_floor: bool = False  # MobileNetV2: the head is never narrower than its baseline (w < 1 keeps 1280)


FAMILIES = {
    "efficientnet": Family(
        "efficientnet",
        "silu",
        0.25,
        False,
        {
            "b0": (1.0, 1.0, 224, 0.2),
            "b1": (1.0, 1.1, 240, 0.2),
            "b2": (1.1, 1.2, 260, 0.3),
            "b3": (1.2, 1.4, 300, 0.3),
            "b4": (1.4, 1.8, 380, 0.4),
            "b5": (1.6, 2.2, 456, 0.4),
            "b6": (1.8, 2.6, 528, 0.5),
            "b7": (2.0, 3.1, 600, 0.5),
        },
    ),
    "lite": Family(
        "lite",
        "relu6",
        0.0,
        True,
        {
            "lite0": (1.0, 1.0, 224, 0.2),
            "lite1": (1.0, 1.1, 240, 0.2),
            "lite2": (1.1, 1.2, 260, 0.3),
            "lite3": (1.2, 1.4, 280, 0.3),
            "lite4": (1.4, 1.8, 300, 0.3),
        },
    ),
    # Table 3. w scales every channel count (stem, blocks, head) with the rounding rule below; d scales
    # every stage's block count (rounded up); r the input size. Dropout as the reference implementations.
    "mobilenetv1": Family(
        "mobilenetv1",
        "relu6",
        0.0,
        False,
        {"mobilenetv1": (1.0, 1.0, 224, 0.0)},
        stages=MOBILENETV1_STAGES,
        head_channels=0,
    ),
    "mobilenetv2": Family(
        "mobilenetv2",
        "relu6",
        0.0,
        False,
        {"mobilenetv2": (1.0, 1.0, 224, 0.2)},
        stages=MOBILENETV2_STAGES,
        head_floor=True,
    ),
    "resnet": Family(
        "resnet",
        "relu",
        0.0,
        False,
        {"resnet50": (1.0, 1.0, 224, 0.0)},
        stages=RESNET50_STAGES,
        stem_channels=64,
        stem_kernel=7,
        stem_pool=True,
        head_channels=0,
    ),
}
PRESETS = {name: fam for fam in FAMILIES.values() for name in fam.presets}
BASELINES = {
    "efficientnet": "b0",
    "lite": "lite0",
    "mobilenetv1": "mobilenetv1",
    "mobilenetv2": "mobilenetv2",
    "resnet": "resnet50",
}
EFFICIENTNET_FAMILIES = ("efficientnet", "lite")  # the compound-scaled presets `edgeffnet info` lists


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
    stem_kernel: int = 3
    stem_pool: bool = False
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
        if self.name not in PRESETS:
            return None
        return float(list(PRESETS[self.name].presets).index(self.name))  # b3 -> 3, lite2 -> 2, resnet50 -> 0

    @property
    def blocks(self) -> int:
        return sum(s.layers for s in self.stages)

    @property
    def features_channels(self) -> int:
        """Channels of the final feature map: what global pooling, the classifier and a CAM read."""
        return self.head_channels or self.stages[-1].out_channels

    @property
    def output_stride(self) -> int:
        """Input pixels per cell of the final feature map."""
        return 2 * (2 if self.stem_pool else 1) * math.prod(st.stride for st in self.stages)


def network_key(spec: ModelSpec) -> str:
    """What makes two specs the same network after rounding (channels, layers, pixels): equal keys are
    built and measured once."""
    parts = [
        spec.family,
        spec.resolution,
        spec.stem_channels,
        spec.head_channels,
        spec.activation,
        spec.se_ratio,
        [(s.expand_ratio, s.kernel, s.stride, s.in_channels, s.out_channels, s.layers) for s in spec.stages],
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def scale(family: Family, width: float, depth: float, resolution: int) -> tuple[int, int, tuple[Stage, ...]]:
    """Apply the two rounding rules to the family's baseline table: (stem channels, head channels, stages).

    Every channel count is `round_channels(baseline x width)`; a bottleneck rounds its inner width and
    keeps out = inner x expansion, so the 4:1 ratio of ResNet survives any w. Every stage's block count
    is `round_layers(baseline x depth)`; the extra blocks repeat the stage's non-strided block.
    """
    fixed = family.fixed_stem_head
    stem = family.stem_channels if fixed else round_channels(family.stem_channels * width)
    head = family.head_channels
    if head and not fixed:
        head = round_channels(head * (max(width, 1.0) if family.head_floor else width))
    stages = []
    res = _conv_out(resolution, 2)  # after the stride-2 stem
    if family.stem_pool:
        res = _conv_out(res, 2)
    last = len(family.stages) - 1
    cin = stem
    for i, st in enumerate(family.stages):
        layers = st.layers if fixed and i in (0, last) else round_layers(st.layers * depth)
        if st.block == "bottleneck":
            out = round_channels(st.mid_channels * width) * st.expand_ratio
        else:
            out = round_channels(st.out_channels * width)
        stages.append(replace(st, in_channels=cin, out_channels=out, layers=layers, resolution=res))
        cin = out
        res = _conv_out(res, st.stride)
    return stem, head, tuple(stages)


def _conv_out(size: int, stride: int) -> int:
    return -(-size // stride)  # "same"-style ceil; equals floor((n+2p-k)/s)+1 for k odd, p=k//2


SPEC_FORMS = "b0..b7, lite0..lite4, mobilenetv1, mobilenetv2, resnet50, 'b0,phi=1.5', 'phi=2,only=depth', 'b0,w=2', 'b0,d=3', 'b0,r=1.5', 'b3,res=512'"
_KEYS = {"phi", "alpha", "beta", "gamma", "only", "w", "d", "r", "res", "dropout"}
_ALIASES = {"width": "w", "depth": "d", "resolution": "res"}
_ONLY = {"depth", "width", "resolution"}


SPEC_MAX_CHARS = 256  # longer is a paste accident: no valid spec comes near it
COEFFICIENT_RANGE = (0.1, 10.0)  # alpha, beta, gamma: wide, yet any power of them with |phi| <= 12 stays finite
# Plain ASCII decimals only: float() would also take "nan", "1_0" and full-width digits, none of which a
# person means in a spec.
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _shown(text: str) -> str:
    return text if len(text) <= 60 else f"{text[:40]}...{text[-12:]} ({len(text)} characters)"


def _bad(text: str, why: str) -> UserError:
    return UserError(f"bad model spec '{_shown(text)}': {why}; valid forms: {SPEC_FORMS}")


def preset_name(token: str) -> str | None:
    t = token.strip().lower().replace("_", "-")
    t = t.removeprefix("efficientnet-")
    if t in PRESETS:
        return t
    t = t.replace("-", "")  # mobilenet_v2, mobilenet-v1, resnet-50
    return t if t in PRESETS and t in BASELINES.values() else None


def parse_spec(text: str) -> ModelSpec:
    """Parse a model-spec string (see the module docstring) into a resolved ModelSpec."""
    if isinstance(text, ModelSpec):
        return text
    if not isinstance(text, str) or not text.strip():
        raise _bad(str(text), "empty spec")
    if len(text) > SPEC_MAX_CHARS:
        raise _bad(text, f"longer than {SPEC_MAX_CHARS} characters")
    tokens = [t.strip() for t in text.split(",")]
    base = "b0"
    if "=" not in tokens[0]:
        base = preset_name(tokens[0]) or ""
        if not base:
            from edgeffnet.core.suggest import did_you_mean

            raise _bad(text, f"unknown model '{_shown(tokens[0])}'{did_you_mean(tokens[0], PRESETS)}")
        tokens = tokens[1:]
    values: dict[str, str] = {}
    for tok in tokens:
        key, sep, val = tok.partition("=")
        key = _ALIASES.get(key.strip().lower(), key.strip().lower())
        if not sep or key not in _KEYS or not val.strip():
            raise _bad(text, f"'{_shown(tok)}' is not KEY=VALUE with KEY one of {', '.join(sorted(_KEYS))}")
        if key in values:
            raise _bad(text, f"'{key}' given twice")
        values[key] = val.strip().lower()
    return _resolve(text, base, values)


def _number(text: str, values: dict[str, str], key: str, positive: bool = True) -> float | None:
    if key not in values:
        return None
    if not _DECIMAL.fullmatch(values[key]):
        raise _bad(text, f"{key}={_shown(values[key])} is not a plain decimal number (such as 1.5, -1 or 2e-1)")
    v = float(values[key])
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
    for name, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not COEFFICIENT_RANGE[0] <= v <= COEFFICIENT_RANGE[1]:
            raise _bad(text, f"{name}={v:g} is outside {COEFFICIENT_RANGE[0]:g}..{COEFFICIENT_RANGE[1]:g}")
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
                (total, 1.0, 1.0)
                if only == "depth"
                else (1.0, math.sqrt(total), 1.0)
                if only == "width"
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
        name=name,
        family=family.name,
        width=width,
        depth=depth,
        resolution=resolution,
        dropout=dropout,
        stem_channels=stem,
        head_channels=head,
        stages=stages,
        activation=family.activation,
        se_ratio=family.se_ratio,
        phi=phi,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        only=only,
        stem_kernel=family.stem_kernel,
        stem_pool=family.stem_pool,
        warnings=tuple(warnings),
    )


@dataclass(frozen=True)
class Table3Row:
    """A row of the paper's Table 3 ("Scaling up MobileNets and ResNet") and the spec that builds it."""

    label: str
    spec: str
    paper_flops: float  # billions, as printed (the paper's "FLOPS" are multiply-adds)
    note: str = ""


# Compound rows: MobileNetV1's coefficients are the paper's. For MobileNetV2 and ResNet-50 the paper prints
# none; ResNet-50 takes EfficientNet's (1.2, 1.1, 1.15) at phi=2, MobileNetV2 a small grid search's
# (alpha 1.35, beta 1.05, gamma 1.16: alpha*beta^2*gamma^2 = 2.003) at phi=2, the pair nearest 1.3B among
# alpha 1.1..1.4 x beta 1.05..1.2 (EfficientNet's own give 1.49B: MobileNetV2's one-block stages round up).
# The paper's ResNet-50 depth and width rows: depth only adds identity blocks (no stem, no projection
# shortcuts), so 4x the blocks of a 4.1B network cannot reach 16.2B; width 2 quadruples nearly every layer
# and cannot stay at 14.7B. Each count lands on the other row's figure: the two FLOPS look transposed.
_TRANSPOSED = "the paper's ResNet-50 depth and width FLOPS look transposed"
TABLE3 = (
    Table3Row("Baseline MobileNetV1", "mobilenetv1", 0.6),
    Table3Row("Scale MobileNetV1 by width (w=2)", "mobilenetv1,w=2", 2.2),
    Table3Row("Scale MobileNetV1 by resolution (r=2)", "mobilenetv1,r=2", 2.2),
    Table3Row("compound scale (d=1.4, w=1.2, r=1.3)", "mobilenetv1,d=1.4,w=1.2,r=1.3", 2.3),
    Table3Row("Baseline MobileNetV2", "mobilenetv2", 0.3),
    Table3Row("Scale MobileNetV2 by depth (d=4)", "mobilenetv2,d=4", 1.2),
    Table3Row("Scale MobileNetV2 by width (w=2)", "mobilenetv2,w=2", 1.1),
    Table3Row("Scale MobileNetV2 by resolution (r=2)", "mobilenetv2,r=2", 1.2),
    Table3Row("MobileNetV2 compound scale", "mobilenetv2,phi=2,alpha=1.35,beta=1.05,gamma=1.16", 1.3),
    Table3Row("Baseline ResNet-50", "resnet50", 4.1),
    Table3Row("Scale ResNet-50 by depth (d=4)", "resnet50,d=4", 16.2, _TRANSPOSED),
    Table3Row("Scale ResNet-50 by width (w=2)", "resnet50,w=2", 14.7, _TRANSPOSED),
    Table3Row("Scale ResNet-50 by resolution (r=2)", "resnet50,r=2", 16.4),
    Table3Row("ResNet-50 compound scale", "resnet50,phi=2", 16.7),
)


def table3_specs() -> list[str]:
    """The specs of Table 3's rows, in the paper's order (what `edgeffnet sweep --table3` adds)."""
    return [parse_spec(row.spec).name for row in TABLE3]


def with_resolution(spec: ModelSpec, resolution: int) -> ModelSpec:
    """The same network run at another input size (weights are resolution-independent)."""
    if resolution == spec.resolution:
        return spec
    if not 32 <= resolution <= 4096:
        raise UserError(f"resolution {resolution} is outside 32..4096 pixels")
    stem, head, stages = scale(FAMILIES[spec.family], spec.width, spec.depth, resolution)
    return replace(spec, resolution=resolution, stages=stages)

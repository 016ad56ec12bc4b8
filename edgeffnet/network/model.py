"""One builder for every spec: a ModelSpec in, an eval-ready torch.nn.Module out.

EfficientNet, Lite, MobileNetV1/V2 and ResNet-50 differ only in their stage tables (scaling.py); the
builder loops over the rows and picks the block each row names. Module names (stem, stages.S.B.{expand,
dw,se,project} for MBConv and depthwise-separable blocks, stages.S.B.{reduce,spatial,restore,shortcut}
for bottlenecks, head, classifier) are edgeffnet's own checkpoint layout; `weights.py` maps the other
layouts onto them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from edgeffnet.specs.scaling import EFFICIENTNET_FAMILIES, ModelSpec, Stage


@dataclass(frozen=True)
class Numerics:
    """How the source framework computed: it travels with the weights, not the architecture.

    TF-trained weights (efficientnet_pytorch ports, the Lite models) need TF "SAME" padding and BN
    epsilon 1e-3; torchvision/timm native weights use symmetric padding and epsilon 1e-5.
    """

    padding: str = "symmetric"  # or "same"
    bn_eps: float = 1e-5


TORCH_NUMERICS = Numerics("symmetric", 1e-5)
TF_NUMERICS = Numerics("same", 1e-3)


_ACTIVATIONS = {"silu": nn.SiLU, "relu6": nn.ReLU6, "relu": nn.ReLU}


def _activation(name: str) -> nn.Module:
    return _ACTIVATIONS[name]()


class SamePad(nn.Module):
    """TF "SAME" padding: pad so the output is ceil(input/stride), putting the odd pixel at the end."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # int(): a traced export bakes the pads as constants (a bundle's height and width are fixed). Traced
        # as Shape arithmetic they survive a --dynamic-batch export, and onnxsim then drops the pads.
        h, w = int(x.shape[-2]), int(x.shape[-1])
        ph = max((math.ceil(h / self.stride) - 1) * self.stride + self.kernel - h, 0)
        pw = max((math.ceil(w / self.stride) - 1) * self.stride + self.kernel - w, 0)
        if ph == 0 and pw == 0:
            return x
        return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


class ConvBN(nn.Sequential):
    """Conv (no bias) + BatchNorm (+ activation): the unit every stage is made of."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int, act: str | None, num: Numerics):
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if num.padding == "same" and (kernel > 1 or stride > 1):
            # Stride-1 SAME padding is symmetric for odd kernels; only strided convs need the pad op.
            if stride > 1:
                layers["pad"] = SamePad(kernel, stride)
            pad = 0 if stride > 1 else kernel // 2
        else:
            pad = kernel // 2
        layers["conv"] = nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False)
        layers["bn"] = nn.BatchNorm2d(cout, eps=num.bn_eps)
        if act:
            layers["act"] = _activation(act)
        super().__init__(layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int, act: str):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = _activation(act)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, squeeze-excitation, 1x1 project, skip if shapes match."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, spec: ModelSpec, num: Numerics):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBN(cin, mid, 1, 1, 1, spec.activation, num) if expand != 1 else None
        self.dw = ConvBN(mid, mid, kernel, stride, mid, spec.activation, num)
        self.se = SqueezeExcite(mid, max(1, int(cin * spec.se_ratio)), spec.activation) if spec.se_ratio else None
        self.project = ConvBN(mid, cout, 1, 1, 1, None, num)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.dw(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class DepthwiseSeparable(nn.Module):
    """MobileNetV1's layer: depthwise kxk and pointwise 1x1, each activated, no skip."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, spec: ModelSpec, num: Numerics):
        super().__init__()
        self.dw = ConvBN(cin, cin, kernel, stride, cin, spec.activation, num)
        self.project = ConvBN(cin, cout, 1, 1, 1, spec.activation, num)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.dw(x))


class Bottleneck(nn.Module):
    """ResNet's bottleneck (v1.5: the 3x3 strides): 1x1 reduce, kxk, 1x1 restore, plus the shortcut, then
    the activation. The shortcut is a strided 1x1 projection where the shape changes, else identity."""

    def __init__(self, cin: int, cout: int, mid: int, kernel: int, stride: int, spec: ModelSpec, num: Numerics):
        super().__init__()
        self.reduce = ConvBN(cin, mid, 1, 1, 1, spec.activation, num)
        self.spatial = ConvBN(mid, mid, kernel, stride, 1, spec.activation, num)
        self.restore = ConvBN(mid, cout, 1, 1, 1, None, num)
        self.shortcut = ConvBN(cin, cout, 1, stride, 1, None, num) if stride != 1 or cin != cout else None
        self.act = _activation(spec.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.restore(self.spatial(self.reduce(x)))
        return self.act(y + (self.shortcut(x) if self.shortcut is not None else x))


def _block(st: Stage, first: bool, spec: ModelSpec, num: Numerics) -> nn.Module:
    cin, stride = (st.in_channels, st.stride) if first else (st.out_channels, 1)
    if st.block == "dsconv":
        return DepthwiseSeparable(cin, st.out_channels, st.kernel, stride, spec, num)
    if st.block == "bottleneck":
        return Bottleneck(cin, st.out_channels, st.mid_channels, st.kernel, stride, spec, num)
    return MBConv(cin, st.out_channels, st.expand_ratio, st.kernel, stride, spec, num)


def _stage(st: Stage, spec: ModelSpec, num: Numerics) -> nn.Sequential:
    return nn.Sequential(*(_block(st, i == 0, spec, num) for i in range(st.layers)))


class EfficientNet(nn.Module):
    """The network of any spec (the name is historical: MobileNets and ResNet-50 are specs too)."""

    def __init__(self, spec: ModelSpec, num_classes: int = 1000, numerics: Numerics = TORCH_NUMERICS):
        super().__init__()
        self.spec, self.numerics = spec, numerics
        self.stem = ConvBN(3, spec.stem_channels, spec.stem_kernel, 2, 1, spec.activation, numerics)
        if spec.stem_pool:
            self.stem.add_module("pool", nn.MaxPool2d(3, 2, 1))
        self.stages = nn.Sequential(*(_stage(st, spec, numerics) for st in spec.stages))
        self.head = (
            ConvBN(spec.stages[-1].out_channels, spec.head_channels, 1, 1, 1, spec.activation, numerics)
            if spec.head_channels
            else None
        )
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(spec.features_channels, num_classes)

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map (N, C, h, w): global average pooling and the classifier read it."""
        x = self.stages(self.stem(x))
        return self.head(x) if self.head is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)
        return self.classifier(self.dropout(x))


def build(spec: ModelSpec, num_classes: int = 1000, numerics: Numerics = TORCH_NUMERICS) -> EfficientNet:
    return EfficientNet(spec, num_classes, numerics).eval()


# Random EfficientNet and Lite weights: the scale of each residual branch's last BatchNorm (see randomise).
RESIDUAL_GAMMA = 0.05


def randomise(model: EfficientNet, seed: int, images: torch.Tensor) -> EfficientNet:
    """Seeded random weights whose activations keep a trained network's scale on real images.

    With BatchNorm at identity statistics a random 20-60 layer network's signal vanishes (B0's logits
    come out near 1e-14); with statistics from noise it explodes on photos (logits ~1e3), because
    photos are spatially correlated and noise is not. Either makes parity checks meaningless and INT8
    ranges absurd. So, like a data-dependent init, BatchNorm statistics are estimated on `images`
    (normalised photos of the model's input size).
    """
    gen = torch.Generator().manual_seed(seed)
    # Depthwise kernels of one sign guard Table 3's families (not EfficientNet and Lite) against a deep
    # random network amplifying FP32 rounding past the 1e-4 parity tolerance. A zero-mean 3x3 kernel nearly
    # cancels on a smooth (photo) input; BatchNorm then rescales that channel by its small output, which
    # amplifies rounding noise (white, not smooth) layer after layer: in MobileNetV1 d=1.4, w=1.2, r=1.3
    # (40 convs, no skip) FP32 against FP64 reached 8.8e-5 with zero-mean kernels, 6e-6 without. In
    # EfficientNet (squeeze-excitation, SiLU) one-sign kernels make the stream's mean run away on photos
    # other than the statistics images: B1's INT8 graph then had cosine 0.0 with its FP32.
    table3_family = model.spec.family not in EFFICIENTNET_FAMILIES
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_out), generator=gen)
                if table3_family and m.groups > 1:
                    m.weight.abs_()
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                m.weight.uniform_(-bound, bound, generator=gen)
                m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
                m.momentum = None  # cumulative average: one pass gives the batch's exact statistics
        # A residual block adds a unit-variance branch to its stream, so a deep random network's stream
        # grows block after block and its sensitivity to perturbations with it. Rounding: FP32 against
        # FP64 in PyTorch alone reached 1.1e-4 on ResNet-50's logits at 64 px and 3.2e-4 on MobileNetV2
        # d=4 (61 residual blocks), past the whole FP32 tolerance. Quantization: the INT8 graph of random
        # B1 (96 px, percentile ranges) had mean cosine 0.51 with its FP32, where a trained network's
        # stays near 1. The branch's last BatchNorm scale (the gamma Goyal et al. zero-initialise) keeps
        # the blocks near the identity, as training leaves them. Table 3's families take 1/sqrt(residual
        # blocks), as Fixup scales it: 5e-6 for ResNet-50, 1.6e-6 for MobileNetV2 d=4. EfficientNet and
        # Lite need it smaller for INT8: B0 at 96 px, mean cosine of INT8 with FP32 0.91 at 1/sqrt(9),
        # 0.935 at 0.15, 0.94 at RESIDUAL_GAMMA.
        residual = [
            m.restore.bn if isinstance(m, Bottleneck) else m.project.bn
            for m in model.modules()
            if isinstance(m, Bottleneck) or (isinstance(m, MBConv) and m.residual)
        ]
        gamma = 1.0 / math.sqrt(max(len(residual), 1)) if table3_family else RESIDUAL_GAMMA
        for bn in residual:
            bn.weight.fill_(gamma)
        model.train()
        model(images)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
    return model.eval()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@lru_cache(maxsize=256)  # specs are frozen; a sweep or `info` asks for the same baselines again and again
def count_macs(spec: ModelSpec, num_classes: int = 1000) -> int:
    """Multiply-accumulates of Conv2d and Linear layers for one image at the spec's resolution.

    Walks a meta-device copy (shapes only, no memory) in registration order, which is forward order for
    these networks, tracking the feature-map size: no forward pass, so B7 costs milliseconds. Squeeze-
    excitation convs work on the pooled 1x1 map; a bottleneck's shortcut on the map its strided 3x3 made.
    """
    with torch.device("meta"):
        model = EfficientNet(spec, num_classes)
    size, total = spec.resolution, 0
    se_convs = {id(c) for m in model.modules() if isinstance(m, SqueezeExcite) for c in (m.reduce, m.expand)}
    shortcuts = {id(m.shortcut.conv) for m in model.modules() if isinstance(m, Bottleneck) and m.shortcut is not None}
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            if id(m) in se_convs:
                spatial = 1
            elif id(m) in shortcuts:
                spatial = size * size
            else:
                size = -(-size // m.stride[0])  # "same" output size; SamePad and k//2 padding agree
                spatial = size * size
            total += spatial * m.out_channels * (m.in_channels // m.groups) * k
        elif isinstance(m, nn.MaxPool2d):
            size = -(-size // m.stride)  # 3x3, stride 2, padding 1
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
    return total

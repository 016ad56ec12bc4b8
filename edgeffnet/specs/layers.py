"""The layers of a spec, counted from the stage table alone: no torch, no graph, no build.

Every layer the network computes, in forward order, with where it sits (stage, block, role), its shape
and its cost: multiply-accumulates, the weights it reads and the activations it reads and writes. From
these follow the bytes it moves at a precision and its arithmetic intensity, which is what a roofline
and a latency model need. Names are the PyTorch module paths of `model.py` (`stages.2.1.dw`), which the
ONNX export keeps inside its node names, so a graph's nodes map back to these layers.

Roles: stem, expand (1x1 up), depthwise (kxk, one filter per channel), se (squeeze-excitation: pool,
two 1x1 convs, the channel-wise scale), project (1x1 down, linear), residual (the skip's add), head
(the last 1x1 conv), pool (global average pooling), classifier; ResNet's bottleneck adds reduce,
spatial, restore and shortcut. The MACs of Conv2d and Linear layers sum to `model.count_macs`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgeffnet.specs.scaling import ModelSpec, Stage

# Bytes per element of activations and weights at a bundle's precision. INT8 graphs keep int8 weights and
# int8 activations between quantized layers (what the Q/DQ graph asks the runtime for).
ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}

ROLES = (
    "stem",
    "expand",
    "depthwise",
    "se",
    "project",
    "residual",
    "head",
    "pool",
    "classifier",
    "reduce",
    "spatial",
    "restore",
    "shortcut",
)


@dataclass(frozen=True)
class Layer:
    name: str  # the PyTorch module path: stem, stages.S.B.expand, stages.S.B.se.reduce, head, classifier
    role: str
    op: str  # conv | dwconv | linear | avgpool | maxpool | mul | add
    stage: int | None  # index into spec.stages; None for stem, head, pool, classifier
    block: int | None
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    in_size: int  # input height (= width) in pixels of the feature map
    out_size: int
    macs: int  # multiply-accumulates (0 for pooling and element-wise layers)
    weights: int  # parameters read (weights and biases)
    in_elements: int  # activation elements read (one image)
    out_elements: int

    @property
    def ops(self) -> int:
        """Arithmetic operations: two per MAC; one per element read for pooling and element-wise work."""
        return 2 * self.macs if self.macs else self.in_elements

    def bytes_moved(self, precision: str) -> int:
        """Bytes read and written at `precision`, each tensor touched once (a lower bound a cache meets)."""
        size = ELEMENT_BYTES[precision]
        return (self.in_elements + self.out_elements + self.weights) * size

    def intensity(self, precision: str) -> float:
        """Operations per byte moved: the x axis of a roofline."""
        return self.ops / max(1, self.bytes_moved(precision))

    def to_dict(self, precision: str | None = None) -> dict:
        d = asdict(self)
        if precision:
            d.update(ops=self.ops, bytes=self.bytes_moved(precision), intensity=round(self.intensity(precision), 4))
        return d


def _out(size: int, stride: int) -> int:
    return -(-size // stride)  # "same" output size: SamePad and k//2 padding agree


def _conv(
    name: str,
    role: str,
    stage: int | None,
    block: int | None,
    cin: int,
    cout: int,
    kernel: int,
    stride: int,
    size: int,
    groups: int = 1,
    bias: bool = False,
) -> Layer:
    out = _out(size, stride)
    per_out = (cin // groups) * kernel * kernel
    op = "dwconv" if groups > 1 and groups == cin else "conv"
    # A conv's BatchNorm folds into its weights and bias at export, so it reads cout bias values either way.
    weights = cout * per_out + cout
    return Layer(
        name,
        role,
        op,
        stage,
        block,
        cin,
        cout,
        kernel,
        stride,
        size,
        out,
        out * out * cout * per_out,
        weights,
        cin * size * size,
        cout * out * out,
    )


def _mbconv(layers: list[Layer], spec: ModelSpec, s: int, b: int, cin: int, st: Stage, stride: int, size: int) -> int:
    prefix = f"stages.{s}.{b}"
    mid = cin * st.expand_ratio
    if st.expand_ratio != 1:
        layers.append(_conv(f"{prefix}.expand", "expand", s, b, cin, mid, 1, 1, size))
    dw = _conv(f"{prefix}.dw", "depthwise", s, b, mid, mid, st.kernel, stride, size, groups=mid)
    layers.append(dw)
    out = dw.out_size
    if spec.se_ratio:
        squeeze = max(1, int(cin * spec.se_ratio))
        plane = mid * out * out
        layers.append(Layer(f"{prefix}.se.pool", "se", "avgpool", s, b, mid, mid, out, 1, out, 1, 0, 0, plane, mid))
        layers.append(_conv(f"{prefix}.se.reduce", "se", s, b, mid, squeeze, 1, 1, 1, bias=True))
        layers.append(_conv(f"{prefix}.se.expand", "se", s, b, squeeze, mid, 1, 1, 1, bias=True))
        layers.append(
            Layer(f"{prefix}.se.scale", "se", "mul", s, b, mid, mid, 1, 1, out, out, 0, 0, plane + mid, plane)
        )
    layers.append(_conv(f"{prefix}.project", "project", s, b, mid, st.out_channels, 1, 1, out))
    if stride == 1 and cin == st.out_channels:
        plane = cin * out * out
        layers.append(
            Layer(f"{prefix}.residual", "residual", "add", s, b, cin, cin, 1, 1, out, out, 0, 0, 2 * plane, plane)
        )
    return out


def _dsconv(layers: list[Layer], s: int, b: int, cin: int, st: Stage, stride: int, size: int) -> int:
    dw = _conv(f"stages.{s}.{b}.dw", "depthwise", s, b, cin, cin, st.kernel, stride, size, groups=cin)
    layers.append(dw)
    layers.append(_conv(f"stages.{s}.{b}.project", "project", s, b, cin, st.out_channels, 1, 1, dw.out_size))
    return dw.out_size


def _bottleneck(layers: list[Layer], s: int, b: int, cin: int, st: Stage, stride: int, size: int) -> int:
    prefix, mid, cout = f"stages.{s}.{b}", st.mid_channels, st.out_channels
    layers.append(_conv(f"{prefix}.reduce", "reduce", s, b, cin, mid, 1, 1, size))
    spatial = _conv(f"{prefix}.spatial", "spatial", s, b, mid, mid, st.kernel, stride, size)
    layers.append(spatial)
    out = spatial.out_size
    layers.append(_conv(f"{prefix}.restore", "restore", s, b, mid, cout, 1, 1, out))
    if stride != 1 or cin != cout:
        layers.append(_conv(f"{prefix}.shortcut", "shortcut", s, b, cin, cout, 1, stride, size))
    plane = cout * out * out
    layers.append(
        Layer(f"{prefix}.residual", "residual", "add", s, b, cout, cout, 1, 1, out, out, 0, 0, 2 * plane, plane)
    )
    return out


def spec_layers(spec: ModelSpec, num_classes: int = 1000) -> list[Layer]:
    """Every layer of `spec` for one image, in forward order."""
    layers: list[Layer] = []
    stem = _conv("stem", "stem", None, None, 3, spec.stem_channels, spec.stem_kernel, 2, spec.resolution)
    layers.append(stem)
    size = stem.out_size
    if spec.stem_pool:
        out = _out(size, 2)
        c = spec.stem_channels
        layers.append(
            Layer(
                "stem.pool", "stem", "maxpool", None, None, c, c, 3, 2, size, out, 0, 0, c * size * size, c * out * out
            )
        )
        size = out
    for s, st in enumerate(spec.stages):
        for b in range(st.layers):
            cin, stride = (st.in_channels, st.stride) if b == 0 else (st.out_channels, 1)
            if st.block == "dsconv":
                size = _dsconv(layers, s, b, cin, st, stride, size)
            elif st.block == "bottleneck":
                size = _bottleneck(layers, s, b, cin, st, stride, size)
            else:
                size = _mbconv(layers, spec, s, b, cin, st, stride, size)
    channels = spec.stages[-1].out_channels
    if spec.head_channels:
        layers.append(_conv("head", "head", None, None, channels, spec.head_channels, 1, 1, size))
        channels = spec.head_channels
    layers.append(
        Layer(
            "pool",
            "pool",
            "avgpool",
            None,
            None,
            channels,
            channels,
            size,
            1,
            size,
            1,
            0,
            0,
            channels * size * size,
            channels,
        )
    )
    layers.append(
        Layer(
            "classifier",
            "classifier",
            "linear",
            None,
            None,
            channels,
            num_classes,
            1,
            1,
            1,
            1,
            channels * num_classes,
            channels * num_classes + num_classes,
            channels,
            num_classes,
        )
    )
    return layers


def totals_by_role(layers: list[Layer], precision: str = "fp32") -> dict[str, dict[str, float]]:
    """Per role: layer count, MACs and bytes moved, in the order roles first appear."""
    out: dict[str, dict[str, float]] = {}
    for layer in layers:
        t = out.setdefault(layer.role, {"layers": 0, "macs": 0, "bytes": 0})
        t["layers"] += 1
        t["macs"] += layer.macs
        t["bytes"] += layer.bytes_moved(precision)
    return out

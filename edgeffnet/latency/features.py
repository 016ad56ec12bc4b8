"""What the latency model reads from a network: per layer group, its MACs, bytes moved and layer count.

A group is a role of `layers.ROLES`, with depthwise layers split by kernel and stride (a 5x5 stride-2
depthwise conv runs other kernels than a 3x3 stride-1 one, and at other speeds per MAC). Counting needs
only the spec: no build, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable

from edgeffnet.specs.layers import Layer, spec_layers
from edgeffnet.specs.scaling import parse_spec

# One layer's numbers, per group: (GMACs, MB moved, 1). Scaled so the fitted coefficients read as
# ms per GMAC, ms per MB and ms per layer.
TERMS = ("ms_per_gmac", "ms_per_mb", "ms_per_layer")


def group_of(layer: Layer) -> str:
    if layer.role == "depthwise":
        return f"depthwise.k{layer.kernel}.s{layer.stride}"
    return layer.role


def layer_terms(layer: Layer, precision: str) -> tuple[float, float, float]:
    return layer.macs / 1e9, layer.bytes_moved(precision) / 1e6, 1.0


def add_terms(into: dict[str, list[float]], layers: Iterable[Layer], precision: str) -> dict[str, list[float]]:
    """Sums of each group's terms over `layers`, added into `into` (group -> [GMACs, MB, layers])."""
    for layer in layers:
        t = into.setdefault(group_of(layer), [0.0, 0.0, 0.0])
        for i, v in enumerate(layer_terms(layer, precision)):
            t[i] += v
    return into


def network_layers(spec: str, num_classes: int = 1000) -> list[Layer]:
    return spec_layers(parse_spec(spec), num_classes)


def network_terms(spec: str, precision: str, num_classes: int = 1000) -> dict[str, list[float]]:
    """A whole network's terms per group: what a whole-network latency is fitted against."""
    return add_terms({}, network_layers(spec, num_classes), precision)

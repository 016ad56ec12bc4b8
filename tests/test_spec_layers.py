"""The layer list counted from a spec alone agrees with the PyTorch model it describes."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from edgeffnet.network.model import EfficientNet, count_macs
from edgeffnet.specs.layers import ROLES, spec_layers, totals_by_role
from edgeffnet.specs.scaling import parse_spec

SPECS = [
    "b0",
    "b3",
    "lite0",
    "lite2,res=96",
    "phi=-2",
    "phi=2,only=width",
    "mobilenetv1,d=1.4,w=1.2,r=1.3",
    "mobilenetv2",
    "resnet50",
    "resnet50,w=0.5,res=64",
]


@pytest.mark.parametrize("text", SPECS)
def test_macs_sum_to_the_models_count(text):
    spec = parse_spec(text)
    layers = spec_layers(spec, 1000)
    assert sum(layer.macs for layer in layers) == count_macs(spec, 1000)


@pytest.mark.parametrize("text", ["b0,res=64", "lite0,res=64", "mobilenetv1,res=64", "resnet50,w=0.25,res=64"])
def test_each_conv_matches_the_module_of_its_name_and_the_shapes_flow(text):
    spec = parse_spec(text)
    model = EfficientNet(spec, 10).eval()
    modules = dict(model.named_modules())
    sizes = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o, n=n: sizes.__setitem__(n, (i[0].shape, o.shape)))
        for n, m in modules.items()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, spec.resolution, spec.resolution))
    for h in hooks:
        h.remove()
    convs = [layer for layer in spec_layers(spec, 10) if layer.op in ("conv", "dwconv", "linear")]
    assert len(convs) == len(sizes)
    for layer in convs:
        name = layer.name if layer.op == "linear" or layer.role == "se" else f"{layer.name}.conv"
        module = modules[name]
        (cin_shape, out_shape) = sizes[name]
        weights = sum(p.numel() for p in module.parameters())
        assert weights == layer.weights - (0 if layer.op == "linear" or layer.role == "se" else layer.out_channels)
        assert cin_shape[1] == layer.in_channels and out_shape[1] == layer.out_channels
        if layer.op != "linear":
            assert (cin_shape[-1], out_shape[-1]) == (layer.in_size, layer.out_size), name


def test_roles_and_bytes_follow_precision():
    layers = spec_layers(parse_spec("b0"))
    roles = totals_by_role(layers)
    assert set(roles) <= set(ROLES)
    assert {"stem", "expand", "depthwise", "se", "project", "residual", "head", "pool", "classifier"} == set(roles)
    assert roles["depthwise"]["layers"] == 16  # one per MBConv block of B0
    dw = next(layer for layer in layers if layer.role == "depthwise")
    assert dw.bytes_moved("fp32") == 4 * dw.bytes_moved("int8") == 2 * dw.bytes_moved("fp16")
    # A depthwise conv does far fewer operations per byte than a 1x1 conv of the same block.
    expand = next(layer for layer in layers if layer.role == "expand")
    assert dw.intensity("fp32") < expand.intensity("fp32")


def test_counting_imports_no_torch():
    code = (
        "import sys; import edgeffnet.specs.layers as l, edgeffnet.specs.scaling as s; l.spec_layers(s.parse_spec('b7'));"
        "assert 'torch' not in sys.modules and 'onnx' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

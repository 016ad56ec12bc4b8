"""The layer table a build writes (layers.json): every layer with its ONNX nodes, read without torch or onnx."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest
from profile_bundles import SPEC, build

from edgeffnet.bundle import LAYER_TABLE, Bundle
from edgeffnet.core.untrusted import UntrustedFileError
from edgeffnet.specs import layer_table
from edgeffnet.specs.layers import spec_layers
from edgeffnet.specs.scaling import parse_spec


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("layers")
    return {p: build(root, p) for p in ("fp32", "int8")}


@pytest.mark.parametrize(
    "name,layer",
    [
        ("/stem/conv/Conv", "stem"),
        ("/stages/stages.1/stages.1.0/dw/conv/Conv", "stages.1.0.dw"),
        ("/stages/stages.1/stages.1.0/dw/conv/Conv/WithoutBiases", "stages.1.0.dw"),  # OpenVINO's derived name
        ("/stages/stages.0/stages.0.0/se/act/Mul", "stages.0.0.se.reduce"),
        ("/stages/stages.0/stages.0.0/se/GlobalAveragePool", "stages.0.0.se.pool"),
        ("/stages/stages.0/stages.0.0/se/Mul_output_0_DequantizeLinear", "stages.0.0.se.scale"),
        ("/stages/stages.1/stages.1.1/Add", "stages.1.1.residual"),
        ("InsertedPrecisionFreeCast_/stem/conv/Conv_output_0_nchwc", "stem"),  # ONNX Runtime's rename
        ("/GlobalAveragePool", "pool"),
        ("/classifier/Gemm", "classifier"),
        ("/head/act/Mul", "head"),
        ("input_DequantizeLinear", None),
        ("stages.0.0.se.reduce.weight_QuantizeLinear", None),
        ("Multiply_12", None),
    ],
)
def test_node_names_map_to_layers(name, layer):
    assert layer_table.layer_of(name) == layer


def _graph_nodes(path):
    return [n for n in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("precision,graph", [("fp32", "model.sim.onnx"), ("int8", "model.int8.onnx")])
def test_every_layer_and_every_compute_node_is_in_the_table(bundles, precision, graph):
    b = Bundle.open(bundles[precision])
    assert LAYER_TABLE in b.manifest.files and "layers" in b.manifest.stages
    t = b.layer_table()
    spec = parse_spec(SPEC)
    assert [r["name"] for r in t["layers"]] == [layer.name for layer in spec_layers(spec, t["num_classes"])]
    assert (t["spec"], t["precision"], t["resolution"], t["graph"]) == (SPEC, precision, 64, graph)
    nodes = _graph_nodes(b.path / graph)
    listed = [n for r in t["layers"] for n in r["onnx_nodes"]]
    compute = [n.name for n in nodes if n.op_type not in layer_table.OVERHEAD_OPS]
    assert set(compute) <= set(listed) and not t["unassigned_nodes"]
    assert all(r["onnx_nodes"] for r in t["layers"]), "a layer of the spec has no node in the graph"
    qdq = [n.name for n in nodes if n.op_type in layer_table.QDQ_OPS]
    assert sorted(t["overhead_nodes"]) == sorted(qdq) and (precision == "fp32") == (not qdq)
    by_name = {r["name"]: r for r in t["layers"]}
    size = 1 if precision == "int8" else 4
    head = by_name["head"]
    assert head["bytes"] == (head["in_elements"] + head["out_elements"] + head["weights"]) * size
    assert head["intensity"] == pytest.approx(head["ops"] / head["bytes"], rel=1e-3)


def test_the_table_reads_on_a_device_side_install(bundles):
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None; sys.modules['onnxsim'] = None\n"
        "from edgeffnet.bundle import Bundle\n"
        "from edgeffnet.measure import profile\n"
        f"t = Bundle.open({str(bundles['int8'])!r}).layer_table()\n"
        "print(len(t['layers']), sum(len(r['onnx_nodes']) for r in t['layers']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    layers, nodes = map(int, out.stdout.split())
    assert layers == len(spec_layers(parse_spec(SPEC))) and nodes > layers


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda d: d.update(format="edgeffnet-layers/0"), "format"),
        (lambda d: d["layers"][0].update(role="attention"), "role"),
        (lambda d: d["layers"][1].update(macs=-5), "negative"),
        (lambda d: d["layers"][2].update(onnx_nodes=[3]), "onnx_nodes"),
        (lambda d: d["layers"][0].pop("bytes"), "bytes"),
    ],
)
def test_a_damaged_table_is_one_clear_error(bundles, tmp_path, damage, message):
    d = json.loads((bundles["fp32"] / LAYER_TABLE).read_text())
    damage(d)
    path = tmp_path / LAYER_TABLE
    path.write_text(json.dumps(d))
    with pytest.raises(UntrustedFileError, match=message):
        layer_table.read(path)

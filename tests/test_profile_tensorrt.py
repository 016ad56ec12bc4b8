"""TensorRT's per-layer profile, parsed without TensorRT: engine layer names (fused, tagged, Myelin regions,
reformats), trtexec's --exportProfile/--exportLayerInfo files, the IProfiler's collected times, and their
mapping onto a layer table."""

from __future__ import annotations

import json

import pytest

from edgeffnet.backends.tensorrt import profile as trt_profile
from edgeffnet.core.untrusted import UntrustedFileError
from edgeffnet.measure import profile
from edgeffnet.specs import layer_table
from edgeffnet.specs.scaling import parse_spec

STEM = "/stem/conv/Conv + /stem/act/Sigmoid + /stem/act/Mul"
DW = "/stages/stages.0/stages.0.0/dw/conv/Conv + /stages/stages.0/stages.0.0/dw/act/Mul"
MYELIN = "{ForeignNode[/stages/stages.0/stages.0.0/se/GlobalAveragePool.../stages/stages.0/stages.0.0/se/Mul]}"
REFORMAT = f"Reformatting CopyNode for Input Tensor 0 to {STEM}"
TAGGED = "conv_17 [ONNX Layer: /head/conv/Conv] + act [ONNX Layer: /head/act/Mul]"


def test_engine_layer_names_give_the_onnx_nodes_they_fused():
    assert trt_profile.original_names(STEM) == ["/stem/conv/Conv", "/stem/act/Sigmoid", "/stem/act/Mul"]
    assert trt_profile.original_names(MYELIN) == [
        "/stages/stages.0/stages.0.0/se/GlobalAveragePool",
        "/stages/stages.0/stages.0.0/se/Mul",
    ]
    assert trt_profile.original_names(TAGGED) == ["/head/conv/Conv", "/head/act/Mul"]
    assert [
        trt_profile.precision_of(f)
        for f in (
            "Thirty-two wide channel vectorized row major Int8 format",
            "Row major linear FP16 format",
            "Half",
            "Float",
            "Row major linear FP32",
            "N/A due to dynamic shapes",
        )
    ] == ["i8", "f16", "f16", "f32", "f32", ""]


def _write_trtexec(tmp_path, count=200):
    prof = [
        {"count": count},
        {"name": REFORMAT, "timeMs": 2.0, "averageMs": 0.01, "medianMs": 0.01, "percentage": 2.0},
        {"name": STEM, "timeMs": 40.0, "averageMs": 0.2, "medianMs": 0.19, "percentage": 40.0},
        {"name": DW, "timeMs": 30.0, "averageMs": 0.15, "medianMs": 0.15, "percentage": 30.0},
        {"name": MYELIN, "timeMs": 20.0, "averageMs": 0.1, "medianMs": 0.1, "percentage": 20.0},
    ]
    info = {
        "Layers": [
            {
                "Name": REFORMAT,
                "LayerType": "Reformat",
                "Inputs": [{"Name": "input", "Format/Datatype": "Row major linear FP32"}],
                "Outputs": [
                    {"Name": "r", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}
                ],
            },
            {
                "Name": STEM,
                "LayerType": "CaskConvolution",
                "TacticName": "sm80_xmma_fprop_implicit_gemm_i8",
                "Inputs": [
                    {
                        "Name": "r",
                        "Dimensions": [1, 3, 64, 64],
                        "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format",
                    }
                ],
                "Outputs": [],
            },
            {
                "Name": DW,
                "LayerType": "CaskConvolution",
                "TacticName": "dw_fp16",
                "Inputs": [{"Name": "s", "Format/Datatype": "Row major linear FP16 format"}],
                "Outputs": [],
            },
            {"Name": MYELIN, "LayerType": "Myelin", "Inputs": [{"Name": "d", "Format/Datatype": "Half"}]},
        ],
        "Bindings": ["input", "logits"],
    }
    (tmp_path / "profile.json").write_text(json.dumps(prof))
    (tmp_path / "layers.json").write_text(json.dumps(info))
    return tmp_path / "profile.json", tmp_path / "layers.json"


def _table():
    spec = parse_spec("b0,res=64")
    return layer_table.make(spec, 1000, "int8", [])


def test_trtexec_files_map_onto_the_layer_table(tmp_path):
    runs, count = trt_profile.read_trtexec(*_write_trtexec(tmp_path))
    assert count == 200 and len(runs) == 1 and len(runs[0]) == 4
    p = profile.analyse(_table(), runs, "int8", "tensorrt", [0.5])
    rows = {r["name"]: r for r in p["layers"]}
    assert rows["stem"]["time_ms"] == pytest.approx(0.19) and rows["stem"]["precision"] == "i8"
    assert rows["stem"]["exec_type"] == "sm80_xmma_fprop_implicit_gemm_i8"
    # the depthwise layer of an "INT8" engine that ran in FP16 is named; the SE region has no MACs to claim
    assert rows["stages.0.0.dw"]["precision"] == "f16" and p["ran_wider"] == ["stages.0.0.dw"]
    assert rows["stages.0.0.se.pool"]["fused"] == ["stages.0.0.se.scale"]
    overhead = [r for r in p["layers"] if r["role"] == "overhead"]
    assert [r["name"] for r in overhead] == [REFORMAT] and p["mapped_fraction"] == pytest.approx(1.0)
    assert p["by_role"]["stem"] == pytest.approx(0.19) and p["by_role"]["se"] == pytest.approx(0.1)
    assert p["profiled_sum_ms"] == pytest.approx(0.01 + 0.19 + 0.15 + 0.1)


def test_averages_are_read_where_a_profile_has_no_medians(tmp_path):
    path, _ = _write_trtexec(tmp_path)
    doc = json.loads(path.read_text())
    for entry in doc[1:]:
        del entry["medianMs"]
    path.write_text(json.dumps(doc))
    runs, _ = trt_profile.read_trtexec(path)
    assert [r["time_ms"] for r in runs[0]] == [0.01, 0.2, 0.15, 0.1]
    assert all(r["precision"] == "" for r in runs[0])  # no layer info: the precision is not known


@pytest.mark.parametrize(
    "doc,message",
    [
        ([{"name": STEM, "averageMs": 0.1}], "count"),
        ({"count": 3}, "list"),
        ([{"count": 3}, {"name": STEM}], "averageMs"),
        ([{"count": 3}, {"name": STEM, "averageMs": "fast"}], "averageMs"),
    ],
)
def test_a_damaged_trtexec_profile_is_one_clear_error(tmp_path, doc, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UntrustedFileError, match=message):
        trt_profile.read_trtexec(path)


def test_the_iprofiler_collects_layer_times_per_inference():
    class FakeTrt:  # the part of the tensorrt module layer_times uses
        class IProfiler:
            def __init__(self):
                pass

    profiler = trt_profile.layer_times(FakeTrt)
    for name, ms in ((REFORMAT, 0.01), (STEM, 0.2), (DW, 0.1)):
        profiler.report_layer_time(name, ms)
    formats = trt_profile.layer_formats({"Layers": [STEM, DW, {"Name": REFORMAT, "LayerType": "Reformat"}]})
    got = trt_profile.rows(profiler.times, formats)
    assert [r["type"] for r in got] == ["Reformat", "", ""] and got[1]["original_names"][0] == "/stem/conv/Conv"
    assert sum(r["time_ms"] for r in got) == pytest.approx(0.31)

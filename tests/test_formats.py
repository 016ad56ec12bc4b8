"""Issue 23 (4): the versioned files edgeffnet reads back go through one loader (edgeffnet.core.formats).
Each of the five kinds (bundle manifest, bench record, layer table, latency model, eval result) is read
back as written; a file of another kind, of a version this edgeffnet does not read, too big, or not a
regular file is refused in one line naming the file, what it found and what to do. No build: the files
are written from dicts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import assert_refused as refused
from test_report import record

from edgeffnet.bundle import MANIFEST_FORMAT, Manifest, read_manifest
from edgeffnet.core import formats
from edgeffnet.core.errors import UserError
from edgeffnet.core.layout import MANIFEST
from edgeffnet.latency.features import TERMS
from edgeffnet.latency.model import LATENCY_MODEL, LatencyModel
from edgeffnet.measure import eval_result, evaluate, records
from edgeffnet.specs import layer_table
from edgeffnet.specs.scaling import parse_spec

SPEC = "b0,res=64"


def _manifest() -> dict:
    """The least a manifest holds that the bundle side reads (a 64-pixel b0 for the CPU)."""
    return MANIFEST_FORMAT.stamp() | {
        "edgeffnet": "0.1.0",
        "created": "2026-01-01T00:00:00",
        "spec": {"spec": SPEC, "resolution": 64},
        "params": 5_288_548,
        "macs": 32_000_000,
        "flops": 64_000_000,
        "num_classes": 1000,
        "target": {
            "name": "cpu",
            "backend": "openvino",
            "device": "CPU",
            "description": "x86 CPU",
            "peak": {},
            "memory": {},
            "options": {},
        },
        "precision": "fp32",
        "input": {"batch": 1, "dynamic_batch": False, "shape": [1, 3, 64, 64]},
        "weights": {"source": "random", "random_init": True},
        "preprocess": {"resize": 73, "crop": 64, "interpolation": "bicubic", "mean": [0, 0, 0], "std": [1, 1, 1]},
        "stages": {},
        "files": ["model.sim.onnx"],
    }


def _eval(_tmp: Path) -> dict:
    return eval_result.tagged(
        "edgeffnet eval",
        {"images": 4, "images_total": 4, "partial": False, "reference": {"name": "FP32"}, "artifacts": []},
    )


GROUPS = {"conv": dict.fromkeys(TERMS, 0.1)}


def _write(tmp_path: Path, kind: str, d: dict) -> Path:
    """Where the kind's reader finds it: a manifest in a bundle folder, the others as files."""
    path = tmp_path / "b" / MANIFEST if kind == "manifest" else tmp_path / f"{kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d))
    return path


# kind -> (a file of it as a dict, its reader from the path, whether what was read is what was written, its Format)
KINDS = {
    "manifest": (
        lambda _tmp: _manifest(),
        lambda p: read_manifest(p.parent),
        lambda got, d: {k: got[k] for k in d} == d,  # and the defaults of what it leaves out
        MANIFEST_FORMAT,
    ),
    "bench record": (
        lambda tmp: record(tmp, "b0"),  # test_report's record: a bundle folder under tmp, no build
        records.read,
        lambda got, d: got.to_dict() == d and got.format == records.RECORD_FORMAT,
        records.BENCH_RECORD,
    ),
    "layer table": (
        lambda _tmp: layer_table.make(parse_spec(SPEC), 1000, "fp32", [("/stem/conv/Conv", "Conv")]),
        layer_table.read,
        lambda got, d: got == d and got["layers"][0]["onnx_nodes"] == ["/stem/conv/Conv"],
        layer_table.LAYER_TABLE,
    ),
    "latency model": (
        lambda _tmp: LatencyModel("fp32", {"target": "cpu"}, 0.5, GROUPS, created="2026-01-01T00:00:00").to_dict(),
        LatencyModel.load,
        lambda got, d: got.groups == GROUPS and got.constant_ms == 0.5 and got.to_dict() == d,
        LATENCY_MODEL,
    ),
    "eval result": (_eval, eval_result.read, lambda got, d: got == d, eval_result.EVAL_RESULT),
}


def _refusal(read, path: Path, *fragments: str) -> str:
    with pytest.raises(UserError) as e:
        read(path)
    line = str(e.value)
    assert "\n" not in line and len(line) < 500, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_reads_back_what_was_written(tmp_path, kind):
    make, read, same, fmt = KINDS[kind]
    d = make(tmp_path)
    assert fmt.version_of(d) == fmt.version and list(d)[: len(fmt.stamp())] == list(fmt.stamp())
    path = _write(tmp_path, kind, d)
    assert same(read(path), d)
    assert formats.load(fmt, path)[1] == fmt.version  # the loader itself, on the file
    assert formats.load(fmt, json.loads(path.read_text()))[0] == d  # and on a dict already parsed


# A tag of another kind, and a version no edgeffnet wrote, per kind: (change, what the refusal says it found)
OTHER_KIND = {
    "manifest": ({"bundle_format": "one"}, "has bundle format one"),
    "bench record": ({"record": "edgeffnet-bench2"}, "is not an edgeffnet bench record"),
    "layer table": ({"format": "edgeffnet-latency-model/1"}, "has format 'edgeffnet-latency-model/1'"),
    "latency model": ({"format": "edgeffnet-layers/1"}, "has format 'edgeffnet-layers/1'"),
    "eval result": ({"format": "edgeffnet-bench/1"}, "has format 'edgeffnet-bench/1'"),
}
LATER_VERSION = {
    "manifest": ({"bundle_format": 2}, "has bundle format 2; this edgeffnet reads bundle format 1"),
    "bench record": ({"format": "2.0"}, "has bench record format 2.0; this edgeffnet reads bench record formats 1, 2"),
    "layer table": ({"format": "edgeffnet-layers/x"}, "this edgeffnet reads edgeffnet-layers/1"),
    "latency model": ({"format": "edgeffnet-latency-model/99"}, "this edgeffnet reads edgeffnet-latency-model/1"),
    "eval result": (
        {"format": "edgeffnet-eval/2"},
        "has format 'edgeffnet-eval/2'; this edgeffnet reads edgeffnet-eval/1",
    ),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("table", [OTHER_KIND, LATER_VERSION], ids=["another kind", "a later version"])
def test_another_kind_or_version_is_one_line_naming_file_found_and_remedy(tmp_path, kind, table):
    make, read, _, fmt = KINDS[kind]
    change, found = table[kind]
    path = _write(tmp_path, kind, make(tmp_path) | change)
    if kind == "bench record" and table is OTHER_KIND:
        assert read(path) is None  # a scan passes a JSON file of another kind over
        read = lambda p: records.Record.from_dict(json.loads(p.read_text()), f"'{p}'")  # noqa: E731
    line = _refusal(read, path, str(path), found)
    if kind != "bench record" or table is LATER_VERSION:
        assert line.endswith(fmt.remedy)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("file", ["17 MB", "a FIFO", "a link to /dev/zero"])
def test_a_file_too_big_or_not_regular_is_one_line(tmp_path, kind, file):
    _, read, _, fmt = KINDS[kind]
    path = _write(tmp_path, kind, {})
    path.unlink()
    if file == "17 MB":
        path.write_text(json.dumps(fmt.stamp() | {"pad": "x" * (fmt.cap + 1)}))
        _refusal(read, path, str(path), f"over the {fmt.cap:,}-byte limit")
    else:
        os.mkfifo(path) if file == "a FIFO" else path.symlink_to("/dev/zero")
        _refusal(read, path, str(path), "not a regular file")


def test_a_file_cut_short_says_what_it_lacks(tmp_path):
    d = _manifest()
    del d["input"]
    with pytest.raises(UserError, match="lacks input; this edgeffnet reads bundle format 1: rebuild the bundle"):
        Manifest.from_dict(d)
    del d["bundle_format"]
    with pytest.raises(UserError, match="has no 'bundle_format'; this edgeffnet reads bundle format 1: rebuild"):
        Manifest.from_dict(d)
    table = layer_table.make(parse_spec(SPEC), 1000, "fp32", [])
    del table["format"]
    with pytest.raises(UserError, match="has no 'format'; this edgeffnet reads edgeffnet-layers/1: rebuild"):
        formats.load(layer_table.LAYER_TABLE, table)


def test_an_untagged_eval_result_from_before_the_tag_is_still_read(tmp_path):
    old = {k: v for k, v in _eval(tmp_path).items() if k != "format"}
    path = _write(tmp_path, "eval", old)
    assert eval_result.read(path)["kind"] == "edgeffnet eval"
    path.write_text(json.dumps({k: v for k, v in old.items() if k != "kind"}))  # nothing says it is one
    _refusal(eval_result.read, path, str(path), "no edgeffnet eval result", "evaluate again with edgeffnet eval")
    path.write_text(json.dumps(old | {"images": "all"}))
    _refusal(eval_result.read, path, "'images' is str, not int")


def test_eval_writes_its_result_tagged(tmp_path):
    dest = tmp_path / "eval" / "val.json"
    assert evaluate.save_result(dest, {"partial": False, "images": 3}) == (dest, None)
    written = json.loads(dest.read_text())
    assert written["format"] == "edgeffnet-eval/1" and eval_result.read(dest)["images"] == 3


def test_report_on_a_record_of_a_later_format_is_one_line(cli, tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record(tmp_path, "b0") | {"format": 9}))
    refused(
        cli("report", path, "-o", tmp_path / "out"),
        str(path),
        "has bench record format 9; this edgeffnet reads bench record formats 1, 2: measure again with edgeffnet bench",
    )
    assert not (tmp_path / "out").exists()

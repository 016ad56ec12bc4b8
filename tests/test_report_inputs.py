"""Issue 22: `report` on records and eval results from elsewhere. A damaged record found in a directory is
skipped and counted and the rest of the report is written; a record file named on purpose, or one that
cannot be read safely, is one line; text from records is inert in report.md and in the plots; the file set
is written whole or not at all; a partial eval figure is marked.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import assert_refused as refused
from test_report import record, save_all

from edgeffnet.measure import records, report


@pytest.fixture
def measured(tmp_path) -> Path:
    save_all(tmp_path, [record(tmp_path, s, p) for s in ("b0", "b1", "lite0") for p in ("fp32", "int8")])
    return tmp_path / "bundles"


def _bad_record(tmp_path: Path, name: str, change) -> Path:
    d = record(tmp_path, "b2")
    change(d)
    path = tmp_path / "bundles" / "hostile" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d))
    return path


DAMAGED = {  # a record that passes for one at first sight, with one field of the wrong type or value
    "spec a number": lambda d: d["model"].update(spec=7),
    "family a list": lambda d: d["model"].update(family=["a"]),
    "resolution text": lambda d: d["model"].update(resolution="224"),
    "node a list": lambda d: d.update(node=[1, 2]),
    "node without a hostname": lambda d: d.update(node={"target": "x"}),
    "cpu a string": lambda d: d["device"].update(cpu="fast"),
    "batch text": lambda d: d.update(batch="1"),
    "interrupted a string": lambda d: d.update(interrupted="no"),
    "negative p50": lambda d: d["stats"].update(p50_ms=-1),
    "mode sideways": lambda d: d.update(mode="sideways"),
    "samples a dict": lambda d: d.update(samples_ms={"a": 1}),
    "throughput text": lambda d: d.update(throughput_ips="lots"),
    "fidelity a list": lambda d: d.update(fidelity=[0.5]),
    "int8 fidelity lacking views": lambda d: d.update(
        precision="int8", fidelity={"top1_agreement": 0.5, "cosine_mean": 0.9}
    ),
}


def test_damaged_records_in_a_directory_are_skipped_and_counted(cli, measured, tmp_path):
    for name, change in DAMAGED.items():
        _bad_record(tmp_path, re.sub(r"\W+", "-", name), change)
    hostile = measured / "hostile"
    (hostile / "zero.json").symlink_to("/dev/zero")
    os.mkfifo(hostile / "fifo.json")
    (hostile / "deep.json").write_text("[" * 50_000 + "]" * 50_000)
    (hostile / "nan.json").write_text('{"record": "edgeffnet-bench", "p50": NaN}')
    (hostile / "dir.json").mkdir()
    (hostile / "manifest.json").write_text(json.dumps({"bundle_format": 1}))  # not a record: silently passed over
    out = tmp_path / "report"
    r = cli("report", measured, "-o", out)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r
    skipped = len(DAMAGED) + 4  # zero, fifo, deep, nan (a directory named *.json is no file: passed over)
    assert f"warning: {skipped} damaged bench record(s) skipped" in r.stderr
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert sorted({(x["model"], x["precision"]) for x in rows}) == sorted(
        (s, p) for s in ("b0", "b1", "lite0") for p in ("fp32", "int8")
    )
    assert f"{skipped} damaged bench record(s) skipped" in (out / "report.md").read_text()


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_a_damaged_record_named_on_purpose_is_one_line(cli, tmp_path, name):
    path = _bad_record(tmp_path, "r", DAMAGED[name])
    out = tmp_path / "report"
    refused(cli("report", path, "-o", out), str(path))
    assert not out.exists()


@pytest.mark.parametrize(
    "kind,why",
    [
        ("link to /dev/zero", "not a regular file"),
        ("fifo", "not a regular file"),
        ("nested 10000 deep", "nests deeper than 64"),
        ("17 MB", "over the 16,777,216-byte limit"),
        ("a JSON list", "not an edgeffnet bench record"),
    ],
)
def test_a_record_file_that_cannot_be_read_safely_is_one_line(cli, tmp_path, kind, why):
    path = tmp_path / "r.json"
    if kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "nested 10000 deep":
        path.write_text('{"a":' * 10_000 + "1" + "}" * 10_000)
    elif kind == "17 MB":
        path.write_text(json.dumps({"record": "edgeffnet-bench", "pad": "x" * (17 << 20)}))
    elif kind == "a JSON list":
        path.write_text("[1, 2]")
    refused(cli("report", path, "-o", tmp_path / "out"), why)
    assert not (tmp_path / "out").exists()


def test_only_damaged_records_is_one_line_that_says_so(cli, tmp_path):
    _bad_record(tmp_path, "a", DAMAGED["spec a number"])
    line = refused(
        cli("report", tmp_path / "bundles", "-o", tmp_path / "out"), "no bench records", "1 damaged record(s) skipped"
    )
    assert len(line) < 500


# -- text from records is inert -----------------------------------------------------------------------------

HOSTILE_TEXT = [
    "b0|x`code`",
    "<script>alert(1)</script>",
    "[click](http://example.com/x)",
    "a\nb\r\nc",
    "![img](http://e/x.png)",
    "$\\frac{1}{0}$",
    "$x^{$",
    "\\$ $$ ${",
    "|||",
]


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_record_text_is_inert_in_markdown_and_plots(tmp_path, text):
    recs = [record(tmp_path, s, p) for s in ("b0", "b1") for p in ("fp32", "int8")]
    for r in recs:
        r["model"]["spec"] = f"{r['model']['spec']} {text}"
        r["model"]["family"] = text
        r["tools"] = {"openvino": text}
        r["node"] = {"node_id": text, "target": text, "hostname": text}
    report.write(recs, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    for line in md.splitlines():
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line)[1:-1]  # unescaped pipes only: every row has its header's cells
            header = next(h for h in md.split("\n\n") if h.startswith("|") and line in h).splitlines()[0]
            assert len(cells) == header.count("|") - 1, line
    table = "\n".join(line for line in md.splitlines() if line.startswith(("|", ">")))
    assert not re.search(r"(?<!\\)<script", table) and not re.search(r"(?<!\\)\]\(", table) and "\r" not in md
    assert "&lt;script&gt;" in (tmp_path / "out" / "report.html").read_text() or "<" not in text
    from PIL import Image

    with Image.open(tmp_path / "out" / "latency_vs_flops.png") as png:
        assert png.size[0] > 100


# -- the set is written whole --------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_a_report_failing_halfway_leaves_the_previous_set_as_it_was(tmp_path, monkeypatch, failure):
    first = [record(tmp_path, s) for s in ("b0", "b1")]
    out = tmp_path / "out"
    report.write(first, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def fail(*a, **k):
        raise failure

    # the set's writer makes the tables after report.json, report.csv and the plots are written
    monkeypatch.setattr(report.files, "tables", fail)
    with pytest.raises(type(failure)):
        report.write(first + [record(tmp_path, "b2")], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging directory left either


def test_a_plot_the_new_set_lacks_goes_with_the_old_set(tmp_path):
    out = tmp_path / "out"
    report.write([record(tmp_path, "b0"), record(tmp_path, "b0", mode="throughput")], out)
    assert (out / "throughput_vs_flops.png").exists()
    rep = report.write([record(tmp_path, "b0")], out)
    assert not (out / "throughput_vs_flops.png").exists()
    assert sorted(Path(f).name for f in rep["files"]) == sorted(p.name for p in out.iterdir())


# -- eval results as the report reads them ---------------------------------------------------------------------


def _eval(bundle: Path, name: str, result: dict) -> None:
    (bundle / "eval").mkdir(exist_ok=True)
    (bundle / "eval" / name).write_text(json.dumps(result))


RESULT = {
    "kind": "edgeffnet eval",
    "images": 4,
    "images_total": 10,
    "partial": True,
    "reference": {"name": "FP32", "top1": {"accuracy": 0.75}},
    "artifacts": [
        {"name": "openvino", "top1": {"accuracy": 0.5}, "top1_drop": {"difference": 0.25, "interval": [0.1, 0.4]}}
    ],
}


def test_a_partial_eval_figure_is_marked(tmp_path):
    rec = record(tmp_path, "lite0", "int8")
    _eval(Path(rec["bundle"]), "val.json", RESULT)
    assert (
        report.rows([rec])[0]["fidelity"] == "top-1 drop 25.00 pt [10.00, 40.00], top-1 50.0% (partial: 4 of 10 images)"
    )


def test_a_kept_partial_beside_a_complete_result_is_not_reported(tmp_path):
    rec = record(tmp_path, "lite0", "int8")
    complete = RESULT | {
        "images": 10,
        "partial": False,
        "artifacts": [{"name": "openvino", "top1": 0.7, "top1_drop": {"difference": 0.05}}],
    }
    _eval(Path(rec["bundle"]), "val.json", complete)
    _eval(Path(rec["bundle"]), "val.partial.json", RESULT)
    assert report.rows([rec])[0]["fidelity"] == "top-1 drop 5.00 pt, top-1 70.0%"


@pytest.mark.parametrize(
    "bad",
    [
        {"artifacts": [{"top1_drop": {"difference": 0.1, "interval": ["a", None]}}]},
        {"artifacts": [{"top1_drop": {"difference": "0.1"}}]},
        {"artifacts": "many"},
        {"artifacts": [[1]], "reference": []},
    ],
)
def test_a_damaged_eval_result_is_left_out_not_fatal(tmp_path, bad):
    rec = record(tmp_path, "lite0", "int8")
    _eval(Path(rec["bundle"]), "val.json", bad)
    (Path(rec["bundle"]) / "eval" / "zero.json").symlink_to("/dev/zero")
    row = report.rows([rec])[0]
    assert "partial" not in row["fidelity"] and "Traceback" not in row["fidelity"]


def test_records_load_still_returns_none_for_anything_unreadable(tmp_path):
    (tmp_path / "z.json").symlink_to("/dev/zero")
    assert records.load(tmp_path / "z.json") is None and records.load(tmp_path / "missing.json") is None

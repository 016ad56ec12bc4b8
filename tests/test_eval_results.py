"""Issue 22: `eval` never loses or corrupts a result. An interrupted re-run does not replace a complete
eval/NAME.json with a partial one (it is kept beside it as NAME.partial.json); two data folders of one
name get a file each; a result that cannot be saved is a non-zero exit.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import assert_refused as refused
from hostile_cli import build_bundle, copy_bundle, png

from edgeffnet.measure import console
from edgeffnet.measure import evaluate as ev


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval-results")
    return build_bundle(root / "b0-64", root / "cache")


def _data(folder: Path, count: int = 6) -> Path:
    for i in range(count):
        png(folder / ("n01440764" if i % 2 else "n02123159") / f"{i}.png", seed=i)
    return folder


def _interrupt_after(batches: int, monkeypatch) -> None:
    """Ctrl-C after `batches` batches, as the progress bar would see it."""

    @contextmanager
    def bar(_console, _label):
        seen = [0]

        def tick(_fraction):
            seen[0] += 1
            if seen[0] >= batches:
                raise KeyboardInterrupt

        yield tick

    monkeypatch.setattr(console, "progress_bar", bar)


def test_an_interrupted_rerun_never_replaces_a_complete_result(cli, built, tmp_path, monkeypatch):
    b = copy_bundle(built, tmp_path)
    data = _data(tmp_path / "val")
    r = cli("eval", b, "--data", data, "--batch", "2")
    assert r.returncode == 0, r
    complete = (b / "eval" / "val.json").read_bytes()
    assert json.loads(complete)["partial"] is False

    _interrupt_after(1, monkeypatch)
    r = cli("eval", b, "--data", data, "--batch", "2")
    assert r.returncode == 130 and "Traceback" not in r.stderr, r
    assert (b / "eval" / "val.json").read_bytes() == complete
    kept = json.loads((b / "eval" / "val.partial.json").read_text())
    assert (
        kept["partial"] and kept["images"] == 2 and f"kept the complete result in {b / 'eval' / 'val.json'}" in r.stderr
    )

    monkeypatch.undo()
    assert (
        cli("eval", b, "--data", data, "--batch", "2").returncode == 0
    )  # a complete re-run supersedes the partial one
    assert sorted(p.name for p in (b / "eval").iterdir()) == ["val.json"]


def test_a_more_complete_partial_replaces_a_less_complete_one(tmp_path):
    dest = tmp_path / "eval" / "val.json"
    base = {"partial": True, "images_total": 10}
    assert ev.save_result(dest, base | {"images": 4}) == (dest, None)
    assert ev.save_result(dest, base | {"images": 6}) == (dest, None)
    where, note = ev.save_result(dest, base | {"images": 2})
    assert where.name == "val.partial.json" and "partial result of 6 images" in note
    assert json.loads(dest.read_text())["images"] == 6
    assert ev.save_result(dest, {"partial": False, "images": 10}) == (dest, None)
    assert not where.exists()


@pytest.mark.parametrize("held", ["{not json", "[1, 2]", '{"images": "all", "partial": false}'])
def test_a_damaged_saved_result_is_replaced_by_a_partial_one(tmp_path, held):
    dest = tmp_path / "eval" / "val.json"
    dest.parent.mkdir()
    dest.write_text(held)
    assert ev.save_result(dest, {"partial": True, "images": 1}) == (dest, None)


def test_two_data_folders_of_one_name_keep_a_result_each(cli, built, tmp_path):
    b = copy_bundle(built, tmp_path)
    first, second = _data(tmp_path / "a" / "val", 4), _data(tmp_path / "b" / "val", 2)
    assert cli("eval", b, "--data", first).returncode == 0
    assert cli("eval", b, "--data", second).returncode == 0
    assert cli("eval", b, "--data", first).returncode == 0  # the first folder's file again, not the second's
    results = {p.name: json.loads(p.read_text()) for p in (b / "eval").iterdir()}
    assert len(results) == 2 and results["val.json"]["images"] == 4
    (other,) = [r for n, r in results.items() if n != "val.json"]
    assert other["images"] == 2 and other["data"]["resolved"] == str(second.resolve())


@pytest.mark.parametrize("blocker", ["a file named eval", "eval/val.json a directory"])
def test_eval_exits_non_zero_when_its_result_cannot_be_saved(cli, built, tmp_path, blocker):
    b = copy_bundle(built, tmp_path)
    if blocker == "a file named eval":
        (b / "eval").write_text("mine")
    else:
        (b / "eval" / "val.json").mkdir(parents=True)
    r = cli("eval", b, "--data", _data(tmp_path / "val", 2))
    refused(r, "could not save the result", stdout_ok=True)
    assert "FP32 ONNX" in r.stdout  # the table was shown: it is all that is left
    assert (b / "eval").is_file() if blocker == "a file named eval" else (b / "eval" / "val.json").is_dir()

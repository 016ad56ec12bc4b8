"""`latency fit --cluster` on a loopback Ray cluster: a head and two devices of the cpu target, each with a
cache of its own. Both devices build, time and fit four tiny networks on themselves; each keeps its data
and model in its own cache, and the head keeps a copy by device key; a rerun measures nothing new; a
target without a device and the options that make no sense with --cluster are refused in one line.
One cluster for the module: CPU is scarce."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from conftest import assert_refused
from farm_fixtures import loopback_farm

from edgeffnet.core.errors import UserError
from edgeffnet.farm import latency_fit
from edgeffnet.latency import device, store
from edgeffnet.latency.model import LatencyModel
from edgeffnet.search import harness
from edgeffnet.search import latency_collect as collect

pytestmark = [pytest.mark.farm, pytest.mark.slow]

# The smallest networks of both families (tests/test_latency_collect.py keeps collection cheap the same way).
SPECS = ("b0,phi=-4,res=64", "lite0,phi=-4,res=64", "b0,phi=-4,res=80", "lite0,phi=-4,res=96")
QUICK = harness.BenchSettings(iterations=10, seconds=0.1, warmup=0.05)
REFERENCE = "b0,phi=-4,res=64"
TINY = functools.partial(collect.Collection, settings=QUICK, reference=REFERENCE, only=SPECS)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("farm-latency")
    with loopback_farm(root / "cache-head") as started:
        started.root = root
        for name in ("a", "b"):
            started.add("cpu", cache=root / f"cache-{name}")
        yield started


def _rows(cache: Path, key: str) -> list[dict]:
    return store.read(cache / "latency" / key / "fp32" / "measurements.jsonl")[0]


def test_each_device_collects_fits_and_the_head_keeps_a_copy_by_key(lab):
    result = latency_fit.collect(TINY(target="cpu", precision="fp32"), lab.address, per_network_timeout=600)
    devices = result["devices"]
    assert not result["interrupted"] and len(devices) == 2
    assert all("error" not in d for d in devices), devices
    assert {d["node_id"] for d in devices} == {n.node_id for n in lab.devices["cpu"]}
    for d in devices:
        assert d["summary"]["measured"] == len(SPECS) and d["summary"]["skipped"] == 0
        assert d["kept"]["kept"] == "kept" or "newer model" in d["kept"]["kept"]
        assert "held-out RMSE" in latency_fit.line(d) and d["kept"]["key"] in latency_fit.line(d)

    # Each device collected on itself, into its own cache, under the key of the identity it evaluated.
    key = devices[0]["kept"]["key"]
    assert key.startswith("cpu-")
    for name in ("a", "b"):
        rows = _rows(lab.root / f"cache-{name}", key)
        assert sorted(r["spec"] for r in rows) == sorted(SPECS)
        assert all(r["reference"]["spec"] == REFERENCE for r in rows)
        assert (lab.root / f"cache-{name}" / "latency" / key / "fp32" / "model.json").is_file()

    # The loopback devices are this machine: one key, their data merged (each row once), the newest model kept.
    assert {d["kept"]["key"] for d in devices} == {key} == {device.key(device.identity("cpu"))}
    head = lab.root / "cache-head" / "latency" / key / "fp32"
    assert len(_rows(lab.root / "cache-head", key)) == 2 * len(SPECS)
    model = LatencyModel.load(head / "model.json", here=device.identity("cpu"), precision="fp32")
    newest = max(
        json.loads((lab.root / f"cache-{n}" / "latency" / key / "fp32" / "model.json").read_text())["created"]
        for n in ("a", "b")
    )
    assert model.data["networks"] == len(SPECS) and model.created == newest


def test_a_rerun_measures_nothing_new_and_prints_a_line_per_device(lab, cli, monkeypatch):
    # The command line, with the tiny design in place of the default one (the class the devices unpickle
    # is the real one: only its arguments differ).
    monkeypatch.setattr(collect, "Collection", TINY)
    monkeypatch.setenv("EDGEFFNET_CACHE", str(lab.root / "cache-head"))
    done = cli("latency", "fit", "--target", "cpu", "--precision", "fp32", "--cluster", lab.address)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2, done.stdout
    ids = {n.node_id[:8] for n in lab.devices["cpu"]}
    assert {ln.split("@")[0] for ln in lines} == ids
    assert all(f"0 measured, {len(SPECS)} skipped, 0 failed; held-out RMSE" in ln for ln in lines), lines
    key = device.key(device.identity("cpu"))
    assert len(_rows(lab.root / "cache-head", key)) == 2 * len(SPECS)  # nothing taken twice
    for name in ("a", "b"):
        assert len(_rows(lab.root / f"cache-{name}", key)) == len(SPECS)

    # The head's copy is a model file like any other: predict with it.
    model = lab.root / "cache-head" / "latency" / key / "fp32" / "model.json"
    done = cli("latency", "predict", "b0,phi=-3.5,res=72", "--target", "cpu", "--latency-model", str(model), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["predictions"][0]["predicted_p50_ms"] > 0


def test_a_target_without_a_device_is_refused_before_anything_runs(lab):
    with pytest.raises(UserError, match="no device in the cluster at .* advertises jetson-nano .*cpu \\(2\\)"):
        latency_fit.collect(TINY(target="jetson-nano", precision=None), lab.address)


@pytest.mark.parametrize(
    "args, says",
    [
        (("--refit", "--cluster", "127.0.0.1:9"), "--refit"),
        (("-o", "{tmp}/model.json", "--cluster", "127.0.0.1:9"), "-o writes one model"),
        (("--task-timeout", "5"), "--task-timeout applies only with --cluster"),
    ],
)
def test_options_that_make_no_sense_with_or_without_cluster_are_refused(cli, tmp_path, args, says):
    args = [a.format(tmp=tmp_path) for a in args]
    assert_refused(cli("latency", "fit", "--target", "cpu", *args), says)
    assert not (tmp_path / "model.json").exists()


def test_the_head_merges_rows_once_and_keeps_the_newest_model_of_a_key(cache):
    """What the head does with the results of two alike devices, apart from Ray: no builds."""
    from latency_truth import Truth

    from edgeffnet.latency.design import design
    from edgeffnet.latency.model import fit

    here = device.identity("cpu")
    rows = Truth(seed=3).rows(design(8))
    older, newer = fit(rows[:6], "fp32", here), fit(rows, "fp32", here)
    older.created, newer.created = "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"

    def sent(model, rows):
        return {"node": {"name": "n1"}, "identity": here, "model": model.to_dict(), "rows": rows}

    first = latency_fit.keep(sent(newer, rows), "cpu", "fp32")
    assert first["kept"] == "kept" and first["added"] == 8 and first["key"] == device.key(here)
    late = latency_fit.keep(sent(older, rows[:6] + ["not a row", {"spec": "b0"}]), "cpu", "fp32")
    assert late["added"] == 0 and late["bad_rows"] == 2 and "a newer model of this key was kept" in late["kept"]
    assert LatencyModel.load(device.model_path(here, "fp32")).created == newer.created
    assert len(store.read(device.data_path(here, "fp32"))[0]) == 8

    forged = sent(newer, rows) | {"identity": here | {"target": "../../elsewhere"}}
    with pytest.raises(UserError, match="identity for another target"):
        latency_fit.keep(forged, "cpu", "fp32")
    broken = sent(newer, []) | {"model": newer.to_dict() | {"constant_ms": -1.0}}
    assert "its model was refused" in latency_fit.keep(broken, "cpu", "fp32")["kept"]
    assert not list(device.folder(here, "fp32").glob(".model.*"))  # no temporary file left behind

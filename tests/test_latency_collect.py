"""Collecting a device's latency model: resumable (an interrupted collection measures only the rest),
and, for real on this CPU, a handful of tiny networks built, timed against a reference and fitted."""

from __future__ import annotations

from pathlib import Path

from latency_truth import Truth

from edgeffnet.latency import device, store
from edgeffnet.latency.model import fit
from edgeffnet.search import harness
from edgeffnet.search import latency_collect as collect


def test_an_interrupted_collection_measures_only_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFFNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(harness, "build_bundle", lambda spec, target, precision, dest: Path(dest))
    truth = Truth(seed=8)
    measured: list[str] = []

    def pretend(spec, c, workdir, reference, stop_after=None):
        if stop_after is not None and len(measured) == stop_after:
            raise KeyboardInterrupt  # Ctrl-C while the next network is built
        measured.append(spec)
        row = truth.rows([spec], noise=0.01)[0]
        return row | {
            "settings": c.settings.to_dict() | collect.TIMING,
            "reference": {"spec": c.reference, "p50_ms": 5.0},
        }

    c = collect.Collection(target="cpu", precision="fp32", networks=8)
    first = collect.run(c, measure=lambda *a: pretend(*a, stop_after=3))
    assert first["interrupted"] and first["measured"] == 3 == len(measured)
    data = device.data_path(device.identity("cpu"), "fp32")
    assert len(store.read(data)[0]) == 3  # each network kept as it completed

    again = collect.run(c, measure=pretend)
    assert not again["interrupted"] and again["skipped"] == 3 and again["measured"] == 5
    assert measured == c.specs()  # each designed network measured once, in design order
    assert collect.run(c, measure=pretend)["measured"] == 0  # all there: nothing to do

    longer = collect.Collection(
        target="cpu", precision="fp32", networks=8, settings=harness.BenchSettings(iterations=7)
    )
    assert collect.run(longer, measure=pretend)["measured"] == 8  # other bench settings: measured again


def test_the_design_spreads_over_the_grid_and_both_families():
    specs = collect.Collection(target="cpu", precision="fp32").specs()
    assert len(specs) == len(set(specs)) == 48 and specs == collect.Collection("cpu", "fp32").specs()
    from edgeffnet.specs.scaling import parse_spec

    parsed = [parse_spec(s) for s in specs]
    assert {p.family for p in parsed} == {"efficientnet", "lite"}
    phis = sorted(p.phi for p in parsed)
    assert phis[0] < -3.5 and phis[-1] > 0.5
    assert max(p.alpha for p in parsed) > 1.7 and max(p.gamma for p in parsed) > 1.3
    assert len({p.resolution for p in parsed}) > 15


SMALL = (
    "b0,phi=-4,res=64",
    "lite0,phi=-3,res=64",
    "b0,phi=-3,alpha=1.5,beta=1.05,gamma=1.1,res=96",
    "lite0,phi=-4,res=96",
    "b0,phi=-4,alpha=1.1,beta=1.2,gamma=1.1,res=80",
)
HELD_OUT = "lite0,phi=-3.5,res=80"


def test_real_collection_of_tiny_networks_fits_and_predicts_loosely(tmp_path, monkeypatch):
    """Real builds and timings (fp32, tiny). On a shared machine the checks are loose: a model comes out,
    every coefficient a cost, and a network it never saw predicted within 2x of its paired measurement."""
    monkeypatch.setenv("EDGEFFNET_CACHE", str(tmp_path / "cache"))
    quick = harness.BenchSettings(iterations=20, seconds=0.3, warmup=0.1)
    c = collect.Collection(target="cpu", precision="fp32", settings=quick, reference="b0,phi=-4,res=64", only=SMALL)
    result = collect.run(c)
    assert result["measured"] == len(SMALL) and not result["failed"]
    here = device.identity("cpu")
    rows, _ = store.read(device.data_path(here, "fp32"))
    assert all(r["reference"]["spec"] == c.reference and r["p50_ms"] > 0 for r in rows)
    assert (
        not list((device.folder(here, "fp32") / "bundles").glob("b0,*"))
        and len(list((device.folder(here, "fp32") / "bundles").iterdir())) == 1
    )  # only the reference stays
    if collect.bench_profiles():  # on a branch whose bench profiles, the layer times come along
        assert all(r["profile"] and r["profile"].get("by_role") for r in rows)
    m = fit(rows, "fp32", here)
    assert m.data["networks"] == len(SMALL) and all(v >= 0 for g in m.groups.values() for v in g.values())
    if collect.bench_profiles():
        assert m.data["profiled_networks"] == len(SMALL)

    check = collect.run(
        collect.Collection(target="cpu", precision="fp32", settings=quick, reference=c.reference, only=(HELD_OUT,))
    )
    assert check["measured"] == 1
    rows, _ = store.read(device.data_path(here, "fp32"))
    measured = store.paired_p50(rows)[-1]
    assert 0.5 < m.predict(HELD_OUT) / measured < 2.0


def test_sweep_search_and_fit_measurements_join_the_device_data(tmp_path, monkeypatch):
    """Latency records with a bench record on disk go into the data; baselines, interrupted runs and
    stand-ins (no record file) do not."""
    from types import SimpleNamespace

    from edgeffnet.latency import use

    monkeypatch.setenv("EDGEFFNET_CACHE", str(tmp_path / "cache"))
    saved = tmp_path / "openvino-latency.json"
    saved.write_text("{}")

    def rec(**kw):
        base = dict(
            mode="latency",
            baseline=False,
            interrupted=False,
            batch=1,
            saved_to=saved,
            target="cpu",
            precision="fp32",
            model={"spec": "b0,phi=-2"},
            stats={"p50_ms": 3.5},
            settings={},
            created="2026-01-01T00:00:00Z",
            extra={},
        )
        return SimpleNamespace(**(base | kw))

    use.record_bench([rec(), rec(baseline=True), rec(interrupted=True), rec(mode="throughput"), rec(saved_to=None)])
    use.record("cpu", "fp32", [store.row("b0", "n", "fp32", 1.0, "search", bench_record="")])  # a stand-in's
    rows, _ = store.read(device.data_path(device.identity("cpu"), "fp32"))
    assert [(r["spec"], r["source"], r["p50_ms"]) for r in rows] == [("b0,phi=-2", "sweep", 3.5)]


def test_cli_refit_writes_the_cache_model_and_a_copy(tmp_path, monkeypatch):
    import json
    import os
    import subprocess
    import sys

    from edgeffnet.latency.design import design

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("EDGEFFNET_CACHE", str(tmp_path / "cache"))
    env = os.environ | {"PYTHONPATH": str(repo)}
    here = device.identity("cpu")
    store.append(device.data_path(here, "fp32"), Truth(seed=9).rows(design(12)))
    cached = device.model_path(here, "fp32")

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "edgeffnet.cli", "latency", "fit", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=repo,
            timeout=300,
        )

    done = cli("--target", "cpu", "--refit", "-o", str(tmp_path / "copy.json"))
    assert done.returncode == 0, done.stderr
    assert "fitted on 12 networks" in done.stdout and "held-out RMSE" in done.stdout
    assert json.loads(cached.read_text())["groups"] == json.loads((tmp_path / "copy.json").read_text())["groups"]
    done = cli("--target", "cpu", "--precision", "int8", "--refit")
    assert done.returncode == 2 and "too few to fit" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = cli("--target", "nope", "--refit")
    assert done.returncode == 2 and "unknown target" in done.stderr and "Traceback" not in done.stderr

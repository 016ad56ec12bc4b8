"""edgeffnet search: the grid, the objective, resuming, the evaluators (a real tiny training run) and the CLI."""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import run_cli_process
from pretend_device import QUICK, QUICK_OPTIONS, SMALL_GRID_OPTIONS, PretendDevice

from edgeffnet.core.errors import UserError
from edgeffnet.search import evaluators, harness, objective, trials
from edgeffnet.search.grid import PAPER, Candidate, grid, network_key
from edgeffnet.specs.scaling import parse_spec

REPO = Path(__file__).resolve().parents[1]


# -- the grid --------------------------------------------------------------------------------------------


def test_grid_keeps_the_constraint_and_always_holds_the_paper():
    g = grid()  # the defaults: step 0.05, tol 0.1, ratio 2
    assert g[0] == Candidate(*PAPER) and len(set(g)) == len(g) == 111
    for c in g:
        assert min(c.alpha, c.beta, c.gamma) >= 1 and abs(c.flops_ratio - 2) <= 0.1 + 1e-9, c
    # the constraint alone bounds the grid: all depth, all width and all resolution are candidates
    assert {Candidate(2.0, 1.0, 1.0), Candidate(1.0, 1.4, 1.0), Candidate(1.0, 1.0, 1.4)} <= set(g)
    assert max(c.alpha for c in g) == 2.1 and max(c.gamma for c in g) == 1.4  # 1.45^2 = 2.1025: over
    for step, tol, ratio in ((0.2, 0.05, 2.0), (0.1, 0.1, 3.0)):  # the paper's point is off these grids ...
        coarse = grid(step, tol, ratio)
        assert coarse[0] == Candidate(*PAPER)  # ... and still a candidate, for comparison
        assert all(abs(c.flops_ratio - ratio) <= tol + 1e-9 for c in coarse[1:])
    for bad in (dict(step=0), dict(step=0.7), dict(tol=-0.1), dict(ratio=1.0)):
        with pytest.raises(UserError):
            grid(**bad)


def test_grid_values_are_exact_multiples_and_spell_cleanly():
    for c in grid():
        for v in (c.alpha, c.beta, c.gamma):
            assert abs(v / 0.05 - round(v / 0.05)) < 1e-9 and v == round(v, 6)
        spec = c.spec("b0", 1)
        assert not re.search(r"\d\.\d{4,}", spec), spec  # no float dust in what the stage cache keys on
        s = parse_spec(spec)
        assert (s.alpha, s.beta, s.gamma, s.phi) == (c.alpha, c.beta, c.gamma, 1.0)
    assert Candidate(1.25, 1.05, 1.2).spec("b0", 1) == "b0,alpha=1.25,beta=1.05,gamma=1.2,phi=1"


def test_rounding_makes_some_splits_the_same_network():
    keys = {c: network_key(parse_spec(c.spec("b0", 1))) for c in grid()}
    assert 40 < len(set(keys.values())) < len(keys)  # channels, layers and pixels round: 111 splits, fewer networks
    twins = [c for c, k in keys.items() if Counter(keys.values())[k] > 1]
    a, b = twins[0], next(c for c in twins[1:] if keys[c] == keys[twins[0]])
    sa, sb = parse_spec(a.spec("b0", 1)), parse_spec(b.spec("b0", 1))
    assert (sa.stages, sa.resolution, sa.stem_channels) == (sb.stages, sb.resolution, sb.stem_channels)
    assert network_key(parse_spec("b0,phi=1")) != network_key(parse_spec("b0,phi=1.1"))


def test_budget_split_shares():
    assert Candidate(2.0, 1.0, 1.0).split() == {"depth": 1.0, "width": 0.0, "resolution": 0.0}
    share = Candidate(*PAPER).split()
    assert math.isclose(sum(share.values()), 1.0) and share["resolution"] > share["width"] > share["depth"]


# -- the objective ---------------------------------------------------------------------------------------


def test_objective_is_mnasnets_soft_constraint():
    assert objective.objective(0.8, 10, 10) == pytest.approx(0.8)
    assert objective.objective(0.8, 20, 10) == pytest.approx(0.8 * 2**-0.07)
    assert objective.objective(0.8, 5, 10) > 0.8 > objective.objective(0.8, 20, 10)
    assert objective.objective(0.8, 20, 10, weight=0) == pytest.approx(0.8)
    # twice as slow ties only when 2^0.07 (~5%) more accurate
    assert objective.objective(0.8 * 2**0.07, 20, 10) == pytest.approx(objective.objective(0.8, 10, 10))
    with pytest.raises(ValueError):
        objective.objective(0.8, 0, 10)


def _r(spec, macs, ms, acc=None, obj=None):
    return {"spec": spec, "macs": macs, "p50_ms": ms, "accuracy": acc, "objective": obj}


def test_pareto_front_and_ranking():
    rows = [_r("a", 100, 10), _r("b", 120, 9), _r("c", 90, 8), _r("d", 130, 20), _r("e", 110, 12)]
    assert [r["spec"] for r in objective.pareto_front(rows, "macs", "p50_ms")] == ["c", "b", "d"]
    paper = rows[0]
    ranked, why = objective.rank(rows, paper, "p50_ms", 0.05)  # c is faster only with 10% fewer MACs
    assert [r["spec"] for r in ranked] == ["b", "a", "e", "d"] and "no accuracy" in why
    scored = [_r("a", 100, 10, 0.7, 0.70), _r("b", 120, 9, 0.6, 0.61)]
    ranked, why = objective.rank(scored, scored[0], "p50_ms", 0.05)
    assert ranked[0]["spec"] == "a" and "ACC" in why


# -- the search loop: resuming, sharing networks, Ctrl-C (a fake device, so only the logic is timed) -------


def _latency(spec: str) -> float:
    s = parse_spec(spec)
    return 1.0 + 3.0 * s.depth + 2.0 * s.width**2 + 1.5 * s.r**2  # depth is dear on this pretend device


def _plan(out, **kw):
    return trials.SearchPlan(**({"phi": 1.0, "step": 0.1, "tol": 0.1, "settings": QUICK, "out": out} | kw))


def _search(out, monkeypatch, device, evaluator=None, **kw):
    device.install(monkeypatch)
    return trials.run(_plan(out, **kw), evaluator or evaluators.NoEvaluator(), echo=lambda m: None)


def test_search_resumes_and_measures_each_network_once(tmp_path, monkeypatch):
    out = tmp_path / "s"
    plan = _plan(out)
    plan.check()
    networks = {network_key(parse_spec(c.spec("b0", 1))) for c in plan.candidates}
    assert len(networks) < len(plan.candidates)  # this grid has twins: they must not be built twice

    device = PretendDevice(_latency, interrupt_at=5)  # Ctrl-C while the sixth network is built
    result = _search(out, monkeypatch, device)
    assert result["interrupted"] and len(device.built) == 5
    kept = sorted(p.name for p in (out / "candidates").glob("*.json"))
    assert len(kept) == len(result["rows"]) >= 5  # every finished candidate is on disk, whole

    device = PretendDevice(_latency)
    result = _search(out, monkeypatch, device)
    assert not result["interrupted"] and len(result["rows"]) == len(plan.candidates)
    assert result["reused"] == len(kept) and len(device.built) == len(networks) - 5  # only what was missing
    twins = [r for r in result["rows"] if r["same_network_as"]]
    assert len(twins) == len(plan.candidates) - len(networks)
    for r in twins:
        first = next(x for x in result["rows"] if x["spec"] == r["same_network_as"])
        assert (r["p50_ms"], r["macs"], r["bundle"]) == (first["p50_ms"], first["macs"], first["bundle"])

    device = PretendDevice(_latency)
    result = _search(out, monkeypatch, device)
    assert device.built == [] and result["reused"] == len(plan.candidates)

    device = PretendDevice(_latency)  # other bench settings: every network is measured again
    result = _search(out, monkeypatch, device, settings=harness.BenchSettings(iterations=11, seconds=0.05, warmup=0.02))
    assert len(device.built) == len(networks)


def test_summary_chooses_at_equal_flops_and_confirms_against_the_paper(tmp_path, monkeypatch):
    out = tmp_path / "s"
    device = PretendDevice(_latency)
    result = _search(out, monkeypatch, device)
    plan = _plan(out)
    plan.check()
    summary = trials.summarize(plan, result["rows"])
    assert not summary["accuracy_measured"] and "no accuracy was measured" in summary["note"]
    paper = summary["paper"]
    assert paper["spec"] == "b0,alpha=1.2,beta=1.1,gamma=1.15,phi=1"
    eligible = [r for r in result["rows"] if r["macs"] >= paper["macs"] * 0.95]
    assert summary["chosen"]["latency_ms"] == pytest.approx(min(r["p50_ms"] for r in eligible))
    assert summary["chosen"]["alpha"] == 1.0  # the pretend device makes depth dear: the split avoids it
    comparison = trials.confirm(plan, summary)
    assert comparison["rounds"] == 3 and len(comparison["paper_ms"]) == 3
    assert comparison["ratio"] == pytest.approx(device.latency(summary["chosen_spec"]) / device.latency(paper["spec"]))
    assert comparison["saved"] > 0
    files = trials.write(plan, result["rows"], summary | {"comparison": comparison}, 0.0)
    assert all(f.is_file() for f in files)
    csv_rows = (out / "results.csv").read_text().splitlines()
    assert len(csv_rows) == len(plan.candidates) + 1 and csv_rows[0].startswith("alpha,beta,gamma")


# -- evaluators ------------------------------------------------------------------------------------------

SCRIPT = """
import json, sys
spec, out = sys.argv[1], sys.argv[2]
alpha = float(spec.split("alpha=")[1].split(",")[0])
json.dump({"accuracy": round(0.5 + alpha / 10, 4)}, open(out, "w"))
"""


def test_command_evaluator_protocol(tmp_path, monkeypatch):
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    ev = evaluators.CommandEvaluator(f"{sys.executable} {script} {{spec}} {{output}}")
    assert ev("b0,alpha=1.3,beta=1,gamma=1.2,phi=1", tmp_path / "w") == pytest.approx(0.63)
    assert (tmp_path / "w" / "accuracy.json").is_file()

    device = PretendDevice(_latency)
    result = _search(tmp_path / "s", monkeypatch, device, evaluator=ev)
    plan = _plan(tmp_path / "s")
    plan.check()
    summary = trials.summarize(plan, result["rows"])
    assert summary["accuracy_measured"] and summary["note"] is None
    best = max(result["rows"], key=lambda r: r["objective"])
    assert summary["chosen_spec"] == best["spec"]
    for r in result["rows"]:
        assert r["objective"] == pytest.approx(
            r["accuracy"] * (r["latency_ms"] / summary["latency_target_ms"]) ** -0.07
        )

    for bad in ("train.py", "python train.py {spec}", "python 'unclosed {spec} {output}"):
        with pytest.raises(UserError, match="--evaluate"):
            evaluators.CommandEvaluator(bad)
    fails = [
        (f"{sys.executable} -c 'import sys; sys.exit(3)' {{spec}} {{output}}", "exited 3"),
        (f"{sys.executable} -c 'pass' {{spec}} {{output}}", "holds no JSON"),
        (
            f'{sys.executable} -c \'import sys,json; json.dump({{"accuracy": 73.4}}, open(sys.argv[2], "w"))\' '
            f"{{spec}} {{output}}",
            "fraction",
        ),
        ("no-such-command-here {spec} {output}", "cannot run"),
    ]
    for command, message in fails:
        with pytest.raises(UserError, match=message):
            evaluators.CommandEvaluator(command)("b0,phi=1", tmp_path / "w")
    with pytest.raises(UserError, match="give one of them"):
        evaluators.choose("x {spec} {output}", "data", "val")
    with pytest.raises(UserError, match="go together"):
        evaluators.choose(None, "data", None)
    assert evaluators.choose(None, None, None).kind == "none"


def _image_folder(root: Path, per_class: int, seed: int) -> None:
    """Two classes from the shipped photos: crops of the cat and of the coffee cup."""
    from PIL import Image

    from edgeffnet.core.preprocess import imagenet_recipe
    from edgeffnet.network.photos import load_photo, views

    for name, ref in (("cat", "skimage:chelsea"), ("coffee", "skimage:coffee")):
        (root / name).mkdir(parents=True)
        for i, v in enumerate(views([load_photo(ref)], per_class, imagenet_recipe(64), seed=seed)):
            Image.fromarray(v).save(root / name / f"{i}.png")


@pytest.mark.slow
def test_training_evaluator_trains_and_scores_for_real(tmp_path):
    _image_folder(tmp_path / "train", 8, seed=1)
    _image_folder(tmp_path / "val", 3, seed=2)
    ev = evaluators.TrainEvaluator(str(tmp_path / "train"), str(tmp_path / "val"), epochs=1, batch_size=4)
    accuracy = ev("b0,phi=-4,res=48", tmp_path / "w")
    assert 0.0 <= accuracy <= 1.0
    done = json.loads((tmp_path / "w" / "training.json").read_text())
    assert (done["train_images"], done["val_images"], done["classes"], done["epochs"]) == (16, 6, 2, 1)
    assert done["accuracy"] == accuracy and math.isfinite(done["final_loss"]) and done["init"] == "scratch"
    assert ev.identity()["epochs"] == 1

    with pytest.raises(UserError, match="no pretrained weights exist for b0"):
        evaluators.TrainEvaluator(str(tmp_path / "train"), str(tmp_path / "val"), 1, init="pretrained")(
            "b0,phi=-4,res=48", tmp_path / "w"
        )
    (tmp_path / "bad" / "only").mkdir(parents=True)
    with pytest.raises(UserError, match="at least two classes"):
        evaluators.TrainEvaluator(str(tmp_path / "bad"), str(tmp_path / "val"), 1)


def test_pretrained_start_copies_what_fits_from_lite0():
    from edgeffnet.search.train import _initial_model

    model, recipe, how = _initial_model("lite0,phi=1,alpha=1.2,beta=1.0,gamma=1.15", 2, "pretrained")
    # beta=1 keeps every width: all tensors but the new classifier (and deeper stages' extra blocks) fit
    assert 0.7 * how["tensors"] < how["transferred_tensors"] < how["tensors"]
    assert recipe.mean == (127.0,) * 3 and model.classifier.out_features == 2


# -- the command -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_search_end_to_end_and_resumed(tmp_path):
    out = tmp_path / "search"
    args = ("search", *SMALL_GRID_OPTIONS, *QUICK_OPTIONS, "--confirm-rounds", "1", "-o", str(out))
    done = run_cli_process(*args, cache=tmp_path / "cache", cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "NO ACCURACY was measured" in done.stdout and "chosen: b0," in done.stdout
    assert "against the paper's (1.2, 1.1, 1.15)" in done.stdout or "paper's own network" in done.stdout
    summary = json.loads((out / "search.json").read_text())
    assert summary["grid"]["candidates"] == 4 == summary["grid"]["measured"]
    assert summary["paper"]["latency_ms"] > 0 and summary["comparison"]["rounds"] == 1
    assert parse_spec(summary["chosen_spec"]).phi == -4
    assert len(list((out / "candidates").glob("*.json"))) == 4 and (out / "search.png").stat().st_size > 10_000
    for r in map(json.loads, (p.read_text() for p in (out / "candidates").glob("*.json"))):
        record = json.loads(Path(r["record"]).read_text())  # the bench record the result came from
        assert record["stats"]["p50_ms"] == r["p50_ms"] and record["model"]["spec"] == r["spec"]

    again = run_cli_process(*args, cache=tmp_path / "cache", cwd=REPO, timeout=900)
    assert again.returncode == 0 and "0 measured, 4 from disk" in again.stderr

    for bad, message in (
        (("search", "b3"), "family baseline"),
        (("search", "--metric", "p50", "--phi", "0"), "phi"),
        (("search", "--target", "nope"), "target"),
    ):
        done = run_cli_process(*bad, "-o", str(tmp_path / "bad"), cache=tmp_path / "cache", cwd=REPO, timeout=900)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "bad").exists()

"""edgeffnet fit: the latency model, the bisection on a pretend device, and maximality measured for real."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeffnet.core.errors import UserError
from edgeffnet.search import fit, harness
from edgeffnet.specs.scaling import parse_spec

REPO = Path(__file__).resolve().parents[1]
QUICK = harness.BenchSettings(iterations=20, seconds=0.5, warmup=0.1)  # p50 over half a second: a load burst passes


def test_latency_model_recovers_a_power_law():
    points = [(m, 0.5 * (m / 1e6) ** 0.8) for m in (1e8, 4e8, 9e8)]
    model = fit.LatencyModel(points)
    assert model.slope == pytest.approx(0.8) and model.predict(2e8) == pytest.approx(0.5 * 200**0.8)
    one = fit.LatencyModel([(1e8, 5.0)])  # a single point: latency taken proportional to MACs
    assert one.slope == 1.0 and one.predict(2e8) == pytest.approx(10.0)


class PretendDevice(fit.Measurements):
    """Networks change every third grid step (rounding), MACs grow 1.9x per unit of phi, latency is
    MACs / 40 GMAC/s + 0.3 ms with no noise: the true answer is known."""

    def __init__(self, plan):
        super().__init__(plan)
        self.rows, self.timings = {}, 0

    def network(self, i: int):
        first = i - i % 3
        return f"b0,phi={self.plan.phi(first):g}", f"net{first}", int(4e8 * 1.9 ** self.plan.phi(first))

    def latency(self, i: int) -> float:
        return self.network(i)[2] / 40e6 + 0.3

    def known(self, i):
        return self.rows.get(self.network(i)[1])

    def measure(self, i, again=False):
        spec, key, macs = self.network(i)
        if again or key not in self.rows:
            self.timings += 1
            ms = self.latency(i)
            self.rows[key] = {
                "spec": spec,
                "network": key,
                "macs": macs,
                "params": 1,
                "resolution": 0,
                "bundle": key,
                "p50_ms": ms,
                "p90_ms": ms,
                "p99_ms": ms,
                **({"history": []} if again else {}),
            }
        return self.rows[key]


@pytest.mark.parametrize("budget", [4.0, 11.0, 37.0])
def test_bisection_finds_the_largest_phi(budget, tmp_path):
    plan = fit.FitPlan(out=tmp_path, settings=QUICK)
    plan.check()
    device = PretendDevice(plan)
    result = fit.fit_budget(plan, budget, device)
    truth = max(i for i in range(plan.imin, plan.imax + 1) if device.latency(i) <= budget)
    assert result["phi"] == plan.phi(truth) and result["p50_ms"] <= budget < result["next_ms"]
    assert result["next_phi"] == pytest.approx(result["phi"] + plan.step)  # the next step up, measured over
    assert device.network(truth)[1] != device.network(truth + 1)[1]  # so the answer is a network's last phi
    assert result["confirmed"] and device.timings <= 12  # the model proposes well: a few timings, not 240
    assert {t["phi"] for t in result["tried"]} >= {result["phi"], result["next_phi"]}


def test_budget_below_the_range_is_refused(tmp_path):
    plan = fit.FitPlan(out=tmp_path, settings=QUICK)
    plan.check()
    with pytest.raises(UserError, match="below the smallest model"):
        fit.fit_budget(plan, 0.5, PretendDevice(plan))


def test_options():
    assert fit.parse_budgets(None, "20,2,5,10") == [2, 5, 10, 20] and fit.parse_budgets(3.5, None) == [3.5]
    for args in ((None, None), (3.0, "2,5"), (None, "2,x"), (None, "-1")):
        with pytest.raises(UserError):
            fit.parse_budgets(*args)
    plan = fit.plan_from_options(None, "b0,alpha=1.25,beta=1.05,gamma=1.2,phi=1", None)
    assert plan.coefficients == (1.25, 1.05, 1.2) and plan.spec(2) == "b0,alpha=1.25,beta=1.05,gamma=1.2,phi=2"
    assert fit.plan_from_options("lite0", None, "1.3,1.05,1.15").spec(-1.5).startswith("lite0,")
    assert fit.FitPlan().spec(2.35) == "b0,phi=2.35"
    for args, message in (
        ((None, "b0,phi=1", "1.2,1.1,1.15"), "--spec carries"),
        (("b3", None, None), "baseline"),
        ((None, None, "1.2,1.1"), "alpha,beta,gamma"),
    ):
        with pytest.raises(UserError, match=message):
            fit.plan_from_options(*args)
    with pytest.raises(UserError, match="--phi-min"):
        fit.plan_from_options(None, None, None, phi_min=2, phi_max=1)


@pytest.mark.slow
def test_fit_is_maximal_on_the_device(tmp_path, monkeypatch):
    """Real builds and timings: the answer is within the budget and the next phi step, measured, is not.
    The range's ends differ 16x in MACs, so a budget between them stays between them on a busy machine."""
    monkeypatch.setenv("EDGEFFNET_CACHE", str(tmp_path / "cache"))
    plan = fit.FitPlan(out=tmp_path / "fit", settings=QUICK, step=1.0, phi_min=-6, phi_max=-2)
    plan.check()
    meas = fit.Measurements(plan)
    low, high = meas.measure(plan.imin)["p50_ms"], meas.measure(plan.imax)["p50_ms"]
    assert low < high, "phi=-2 should be slower than phi=-6 (16x the MACs)"
    budget = math.sqrt(low * high)
    result = fit.fit_budget(plan, budget, meas)
    assert result["p50_ms"] <= budget and result["confirmed"]
    assert result["next_ms"] > budget and result["next_phi"] == result["phi"] + 1  # measured, not predicted
    nxt = json.loads(
        next(
            p
            for p in (plan.out / "measured").glob("*.json")
            if json.loads(p.read_text())["spec"] == result["next_spec"]
        ).read_text()
    )
    assert nxt["p50_ms"] == result["next_ms"] and Path(nxt["record"]).is_file()
    assert Path(result["bundle"], "manifest.json").is_file() and parse_spec(result["spec"]).phi == result["phi"]

    env = dict(os.environ, PYTHONPATH=str(REPO))  # the command, on the same measurements (nothing rebuilt)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeffnet.cli",
            "fit",
            "--latency-ms",
            f"{budget:.6f}",
            "--phi-step",
            "1",
            "--phi-min",
            "-6",
            "--phi-max",
            "-2",
            "-n",
            "20",
            "-s",
            "0.5",
            "--warmup",
            "0.1",
            "-o",
            str(plan.out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tried: phi=" in done.stdout and all((plan.out / f).is_file() for f in ("fit.json", "fit.csv", "fit.png"))
    assert not list((plan.out / "bundles").glob(".*"))  # no half-written bundle left


def test_a_family_goes_on_past_an_unmeetable_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(fit, "Measurements", lambda plan, echo=None: PretendDevice(plan))
    results, failed = fit.fit_family(fit.FitPlan(out=tmp_path, settings=QUICK), [11.0, 0.5, 4.0])
    assert [r["budget_ms"] for r in results] == [4.0, 11.0] and [b for b, _ in failed] == [0.5]
    assert results[0]["phi"] < results[1]["phi"] and "below the smallest model" in failed[0][1]
    files = fit.write(fit.FitPlan(out=tmp_path, settings=QUICK), results)
    assert len((tmp_path / "fit.csv").read_text().splitlines()) == 3 and all(f.is_file() for f in files)

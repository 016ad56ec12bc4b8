"""Search and fit with a device's latency model: `--measure K` builds and times only the K splits
predicted best plus the paper's network, says which were predicted and which measured and how far off
the predictor was; fit starts where the model says the budget falls."""

from __future__ import annotations

import pytest
from latency_truth import Truth
from pretend_device import QUICK, PretendDevice

from edgeffnet.core.errors import UserError
from edgeffnet.latency import device, store
from edgeffnet.latency import model as lm
from edgeffnet.latency.design import design
from edgeffnet.network.model import count_macs
from edgeffnet.search import evaluators, fit, selection, trials
from edgeffnet.search.executors import LocalExecutor
from edgeffnet.search.grid import network_key
from edgeffnet.specs.scaling import parse_spec


@pytest.fixture
def device_with_model(tmp_path, monkeypatch):
    """This machine's cache holds a latency model of the pretend device (fitted on its designed set)."""
    monkeypatch.setenv("EDGEFFNET_CACHE", str(tmp_path / "cache"))
    truth = Truth(seed=11)
    here = device.identity("cpu")
    rows = truth.rows(design(32), noise=0.01)
    store.append(device.data_path(here, "fp32"), rows)
    lm.fit(rows, "fp32", here).save(device.model_path(here, "fp32"))
    return PretendDevice(truth.ms, count_macs).install(monkeypatch)


def _plan(out, **kw) -> trials.SearchPlan:
    return trials.SearchPlan(
        **({"phi": 1.0, "step": 0.1, "tol": 0.1, "settings": QUICK, "out": out, "precision": "fp32"} | kw)
    )


def test_choose_to_measure_takes_the_k_fastest_at_equal_flops_and_the_paper():
    rows = [
        {"network": "paper", "macs": 100, "predicted_ms": 9.0, "paper": True},
        {"network": "a", "macs": 100, "predicted_ms": 5.0, "paper": False},
        {"network": "a", "macs": 100, "predicted_ms": 5.0, "paper": False},  # a twin: one network
        {"network": "b", "macs": 99, "predicted_ms": 6.0, "paper": False},
        {"network": "cheap", "macs": 50, "predicted_ms": 1.0, "paper": False},  # fewer MACs: not a fair split
        {"network": "c", "macs": 120, "predicted_ms": 7.0, "paper": False},
    ]
    assert selection.choose_to_measure(rows, 2, 0.05) == {"a", "b", "paper"}
    assert selection.choose_to_measure(rows, 1, 0.05) == {"a", "paper"}
    assert selection.choose_to_measure(rows, 100, 0.05) == {"a", "b", "c", "paper"}


def test_search_measure_2_builds_only_those_and_the_papers(tmp_path, device_with_model, monkeypatch):
    pretend = device_with_model
    plan = _plan(tmp_path / "s", measure=2)
    result = trials.run(plan, evaluators.NoEvaluator(), echo=lambda m: None)
    networks = {network_key(parse_spec(s)) for s in pretend.built}
    paper = plan.candidates[0].spec("b0", 1.0)
    assert len(pretend.built) == len(networks) == 3 and paper in pretend.built
    about = result["prediction"]
    assert about["k"] == 2 and len(about["candidates"]) == len(plan.candidates)
    assert sum(c["measured"] for c in about["candidates"]) == len(result["rows"]) < len(plan.candidates)
    # the two measured besides the paper's are the two predicted fastest among equal-FLOPS splits
    fastest = sorted(
        {
            (c["predicted_ms"], c["network"])
            for c in about["candidates"]
            if not c["paper"] and c["macs"] >= next(x for x in about["candidates"] if x["paper"])["macs"] * 0.95
        }
    )[:2]
    assert {n for _, n in fastest} <= networks
    summary = trials.summarize(plan, result["rows"])
    err = summary["prediction_error"]
    assert err["networks"] == 2 and err["rmse_pct"] < 5  # the pretend device follows the model's form
    assert summary["chosen_spec"] in pretend.built

    again = PretendDevice(pretend.latency, count_macs).install(monkeypatch)  # resumed: nothing to build
    result = trials.run(plan, evaluators.NoEvaluator(), echo=lambda m: None)
    assert again.built == [] and result["reused"] == len(result["rows"])


def test_measure_0_is_the_exhaustive_search_and_k_needs_a_model(tmp_path, device_with_model, monkeypatch):
    pretend = device_with_model
    plan = _plan(tmp_path / "all", measure=0)
    result = trials.run(plan, evaluators.NoEvaluator(), echo=lambda m: None)
    assert result["prediction"] is None and len(result["rows"]) == len(plan.candidates)
    assert len(pretend.built) == len({network_key(parse_spec(c.spec("b0", 1.0))) for c in plan.candidates})

    auto = trials.run(_plan(tmp_path / "auto", measure=None), evaluators.NoEvaluator(), echo=lambda m: None)
    assert auto["prediction"]["k"] == selection.DEFAULT_MEASURE  # the command's default where a model exists

    monkeypatch.setenv("EDGEFFNET_CACHE", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="no latency model"):
        trials.run(_plan(tmp_path / "k", measure=2), evaluators.NoEvaluator(), echo=lambda m: None)
    default = trials.run(_plan(tmp_path / "d", measure=None), evaluators.NoEvaluator(), echo=lambda m: None)
    assert default["prediction"] is None  # the command's default, on a device without a model: every split


def test_fit_starts_where_the_model_puts_the_budget(tmp_path, device_with_model):
    pretend = device_with_model
    plan = fit.FitPlan(
        out=tmp_path / "f", settings=QUICK, precision="fp32", phi_min=-4, phi_max=2, latency_model="auto"
    )
    plan.check()
    budget = pretend.latency("b0,phi=-1")
    lines: list[str] = []
    results, failed = fit.fit_family(plan, [budget], echo=lines.append)
    r = results[0]
    assert not failed and r["p50_ms"] <= budget < r["next_ms"]
    proposed = r["proposed_by_model"]
    assert proposed and "the latency model proposes" in lines[0]
    assert pretend.built[0] == plan.spec(proposed["phi"])  # measuring began at the model's proposal
    assert abs(proposed["phi"] - r["phi"]) <= 0.5 and len(pretend.built) <= 6


class ElsewhereExecutor:
    """Jobs run as a farm's would: not this machine's LocalExecutor (the measurements are the pretend device's)."""

    def __init__(self):
        self.local = LocalExecutor()

    def measure(self, *args, **kwargs):
        return self.local.measure(*args, **kwargs)

    def time(self, *args, **kwargs):
        return self.local.time(*args, **kwargs)


def test_on_a_cluster_this_machines_model_is_not_used(tmp_path, device_with_model):
    pretend = device_with_model
    with pytest.raises(UserError, match="--cluster"):
        trials.run(
            _plan(tmp_path / "k", measure=2),
            evaluators.NoEvaluator(),
            echo=lambda m: None,
            executor=ElsewhereExecutor(),
        )
    assert pretend.built == []  # refused before any build
    plan = _plan(tmp_path / "all", measure=None)
    result = trials.run(plan, evaluators.NoEvaluator(), echo=lambda m: None, executor=ElsewhereExecutor())
    assert result["prediction"] is None and len(result["rows"]) == len(plan.candidates)

    f = fit.FitPlan(
        out=tmp_path / "f",
        settings=QUICK,
        precision="fp32",
        phi_min=-4,
        phi_max=2,
        latency_model=str(tmp_path / "model.json"),
    )
    with pytest.raises(UserError, match="--cluster"):
        fit.fit_family(f, [pretend.latency("b0,phi=-1")], executor=ElsewhereExecutor())
    f.latency_model = "auto"
    results, _ = fit.fit_family(f, [pretend.latency("b0,phi=-1")], executor=ElsewhereExecutor())
    assert results[0]["proposed_by_model"] is None

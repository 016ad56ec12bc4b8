"""The sweep measures its items in interleaved rounds: the order alternates, each runner is loaded once, each
record holds its rounds' p50s and an interval for the median, the report flags overlapping neighbours, and a
sweep still resumes from what is on disk."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import assert_refused

from edgeffnet.measure import bench, interleaved, report
from edgeffnet.measure.statistics import median_interval
from edgeffnet.measure.timing import Limits, Measurement, interleaved_rounds, measure
from edgeffnet.workflows import sweep

# -- the rounds, on fake runners and a fake clock ----------------------------------------------------------


def test_rounds_alternate_their_order_and_only_the_first_warms_up():
    calls = []

    def slice_of(key):
        def run(lim):
            calls.append((key, lim.warmup, lim.iterations))
            return Measurement([1.0], 0.001, 1)

        return run

    seen = []
    out, interrupted = interleaved_rounds(
        {k: slice_of(k) for k in "abc"},
        4,
        Limits(5, 0.1, 0.0),
        warmup=2.0,
        on_round=lambda r, order, m: seen.append((r, "".join(order))),
    )
    assert not interrupted and [k for k, _, _ in calls] == list("abccbaabccba")
    assert [w for _, w, _ in calls] == [2.0] * 3 + [0.0] * 9 and {n for _, _, n in calls} == {5}
    assert seen == [(0, "abc"), (1, "cba"), (2, "abc"), (3, "cba")] and all(len(v) == 4 for v in out.values())


class FakeDevice:
    """Runners on one fake clock: each call takes the runner's own time plus the machine's drift, which
    grows by 1 ms after every round (a device warming up, a neighbour starting a job)."""

    def __init__(self, base_ms: dict[str, float]):
        self.base, self.now, self.drift, self.calls = base_ms, 0, 0.0, []

    def clock(self) -> int:
        return self.now

    def runner(self, key: str):
        def call():
            self.calls.append(key)
            self.now += int((self.base[key] + self.drift) * 1e6)

        return call


def test_each_rounds_p50_and_the_interval_across_rounds():
    dev = FakeDevice({"b0": 10.0, "b1": 12.0})

    def slice_of(call):
        return lambda lim: measure(call, lim, clock=dev.clock)

    slices = {k: slice_of(dev.runner(k)) for k in dev.base}

    def next_round(r, order, measured):
        dev.drift += 1.0

    measured, interrupted = interleaved_rounds(slices, 6, Limits(3, 0.0, 0.0), 0.0, next_round)
    assert not interrupted
    # each slice: one untimed call, then 3 timed ones; the order flips every round
    assert (
        dev.calls
        == ["b0"] * 4
        + ["b1"] * 4
        + ["b1"] * 4
        + ["b0"] * 4
        + ["b0"] * 4
        + ["b1"] * 4
        + ["b1"] * 4
        + ["b0"] * 4
        + ["b0"] * 4
        + ["b1"] * 4
        + ["b1"] * 4
        + ["b0"] * 4
    )
    rounds = {k: interleaved.rounds_of(v, 6) for k, v in measured.items()}
    assert rounds["b0"]["p50_ms"] == [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
    assert [b - a for a, b in zip(rounds["b0"]["p50_ms"], rounds["b1"]["p50_ms"])] == [2.0] * 6  # drift cancels
    assert rounds["b0"]["interval_ms"] == [10.0, 15.0] and rounds["b1"]["interval_ms"] == [12.0, 17.0]
    assert rounds["b0"]["coverage"] == pytest.approx(1 - 2 / 2**6, abs=1e-4) and rounds["b0"]["count"] == 6
    pooled = interleaved.pooled(measured["b0"])
    assert pooled.count == 18 and sorted(pooled.samples_ms) == sorted(x for m in measured["b0"] for x in m.samples_ms)


def test_ctrl_c_keeps_the_rounds_measured():
    calls = []

    def interrupted_in_round_two(lim):
        calls.append(lim)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return Measurement([1.0], 0.001, 1)

    out, interrupted = interleaved_rounds(
        {"a": lambda lim: Measurement([2.0], 0.002, 1), "b": interrupted_in_round_two}, 3, Limits(1, 0.0, 0.0)
    )
    assert interrupted and len(out["a"]) == len(out["b"]) == 1  # round two runs b first (reversed): stopped there


def test_the_interval_is_the_order_statistics_with_their_coverage():
    assert median_interval([3.0, 1.0, 6.0, 2.0, 5.0, 4.0]) == {
        "interval_ms": [1.0, 6.0],
        "coverage": 0.9688,
        "order_statistic": 1,
    }
    ten = median_interval(list(range(10, 0, -1)))  # 10 rounds: the 2nd smallest to the 2nd largest
    assert ten["interval_ms"] == [2, 9] and ten["coverage"] == pytest.approx(1 - 2 * 11 / 1024, abs=1e-4)
    assert median_interval([5.0, 4.0, 3.0, 2.0, 1.0])["coverage"] == 0.9375  # below 6 rounds: the range
    assert median_interval([7.0]) == {"interval_ms": [7.0, 7.0], "coverage": 0.0, "order_statistic": 1}
    with pytest.raises(ValueError):
        median_interval([])


def test_the_report_names_neighbours_whose_intervals_overlap():
    def row(model, flops, lo, hi, series="efficientnet fp32"):
        return {
            "series": series,
            "mode": "latency",
            "model": model,
            "flops": flops,
            "p50_low": lo,
            "p50_high": hi,
            "busy": None,
        }

    table = [
        row("b1", 2, 11.5, 13.0),
        row("b0", 1, 10.0, 12.0),
        row("b2", 3, 13.5, 14.0),
        row("lite0", 1, 9.0, 20.0, series="lite fp32"),
        row("b3", 4, None, None),
    ]
    assert [(a["model"], b["model"]) for a, b in report.overlapping(table)] == [("b0", "b1")]
    notes = report.state_warnings(table)
    assert len(notes) == 1 and "b0 [10.00, 12.00] and b1 [11.50, 13.00] ms" in notes[0]


# -- a real sweep of two tiny models ------------------------------------------------------------------------

SPECS = ("b0,res=64", "lite0,res=64")
ITERATIONS = 6  # split over the rounds: 3 timed calls per round in 2 rounds, 2 in 3
REAL_BUILD, REAL_START = sweep.build, bench.cold_start


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGEFFNET_CACHE", str(tmp_path_factory.getbasetemp() / "interleaved-cache"))


def _sweep(out, monkeypatch, rounds=2, interrupt_in_round=None):
    """Run the sweep, counting builds and runner loads (and pressing Ctrl-C in a round where asked)."""
    builds, loads = [], []
    per_round = 1 + -(-ITERATIONS // rounds)  # measure's one untimed call, then the round's share

    def build(spec, **kw):
        builds.append(spec)
        return REAL_BUILD(spec, **kw)

    def cold_start(b, runtime, *args):
        loads.append(b.manifest.spec["spec"])
        runner, load_ms, first_ms = REAL_START(b, runtime, *args)
        if interrupt_in_round is not None:
            calls, bound = [0], runner.bound

            def counted(x):
                call = bound(x)

                def run():
                    calls[0] += 1
                    if calls[0] > per_round * interrupt_in_round:  # the first call of that round
                        raise KeyboardInterrupt
                    return call()

                return run

            runner.bound = counted
        return runner, load_ms, first_ms

    monkeypatch.setattr(sweep, "build", build)
    monkeypatch.setattr(bench, "cold_start", cold_start)
    settings = bench.Settings(iterations=ITERATIONS, seconds=0, warmup=0)
    result = sweep.run(
        sweep.plan(None, SPECS, None, ["fp32"], "random"), "cpu", out, ["latency"], [], settings, rounds=rounds
    )
    return result, builds, loads


def test_a_real_sweep_interleaves_its_items_and_resumes(tmp_path, monkeypatch, cache, caplog):
    out = tmp_path / "results"
    caplog.set_level(logging.INFO, logger="edgeffnet")
    result, builds, loads = _sweep(out, monkeypatch, rounds=2)
    assert sorted(builds) == sorted(SPECS) and loads == list(SPECS)  # each runner loaded once
    assert [i.spec for i in result["done"]] == list(SPECS) and not result["failed"]
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        line.startswith("  round 1/2 (forward): b0,res=64 fp32 openvino") and "lite0,res=64" in line for line in lines
    )
    assert any(line.startswith("  round 2/2 (reversed): lite0,res=64 fp32 openvino") for line in lines)
    for name in ("b0-res64-cpu-fp32", "lite0-res64-cpu-fp32"):
        rec = json.loads((out / "bundles" / name / "bench" / "openvino-latency.json").read_text())
        r = rec["rounds"]
        assert r["count"] == r["planned"] == 2 and len(r["p50_ms"]) == 2 and rec["settings"]["rounds"] == 2
        assert r["interval_ms"] == [min(r["p50_ms"]), max(r["p50_ms"])] and rec["stats"]["count"] == ITERATIONS
        assert rec["load_ms"] > 0 and rec["memory"]["runners_loaded"] == 2 and not rec["interrupted"]
        assert rec["memory"]["peak_mib"] > rec["memory"]["baseline_mib"]
    rep = report.write(report.collect([out / "bundles"]), tmp_path / "report")
    assert all(row["rounds"] == 2 and row["p50_low"] is not None for row in rep["rows"])

    result, builds, loads = _sweep(out, monkeypatch, rounds=2)  # measured before: nothing loaded again
    assert builds == [] and loads == [] and [i.spec for i in result["skipped"]] == list(SPECS)

    result, builds, loads = _sweep(out, monkeypatch, rounds=3)  # other rounds: measured again, not rebuilt
    assert builds == [] and loads == list(SPECS)
    assert (
        json.loads((out / "bundles" / "b0-res64-cpu-fp32" / "bench" / "openvino-latency.json").read_text())["rounds"][
            "count"
        ]
        == 3
    )


def test_ctrl_c_in_a_round_saves_partial_records_that_are_measured_again(tmp_path, monkeypatch, cache):
    out = tmp_path / "results"
    result, _, loads = _sweep(out, monkeypatch, rounds=3, interrupt_in_round=1)  # in the second round
    assert result["interrupted"] is not None and loads == list(SPECS)
    recs = [json.loads(p.read_text()) for p in sorted(out.glob("bundles/*/bench/openvino-latency.json"))]
    assert len(recs) == 2 and all(r["interrupted"] and r["rounds"]["count"] >= 1 for r in recs)
    result, builds, loads = _sweep(out, monkeypatch, rounds=3)
    assert builds == [] and loads == list(SPECS) and result["interrupted"] is None
    assert not any(json.loads(p.read_text())["interrupted"] for p in out.glob("bundles/*/bench/openvino-latency.json"))


def test_rounds_are_refused_where_they_would_be_ignored(cli):
    assert_refused(
        cli("sweep", "--spec", SPECS[0], "--cluster", "127.0.0.1:1", "--rounds", "3"), "--rounds", "--cluster"
    )
    assert_refused(cli("sweep", "--spec", SPECS[0], "--rounds", "0"), "--rounds")

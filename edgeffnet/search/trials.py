"""The search loop and its files: one JSON per candidate (the state), results.csv, search.json, search.png.

Resumable by construction: a candidate's JSON is written whole after it was built, timed and scored, with
the settings that produced it; a rerun skips every candidate whose JSON has the same settings, and
candidates that round to the same network as one already measured share that measurement. Ctrl-C
keeps every finished candidate and writes the summary of what was measured.

Paired timing: right after each candidate, the paper's network is timed again, and candidates are ranked
on their ratio to it. On a machine shared with other work the absolute latency of one measurement drifts
by several times over minutes; the ratio of two measurements a few seconds apart drifts far less. The
latency used for ranking (`latency_ms`) is that ratio times the median of all the paper's timings.

Where candidates are built and timed is the executor's business (executors: this machine, or the farm's
cluster); what is measured, stored and chosen is the same either way.
"""

from __future__ import annotations

import csv
import io
import json
import statistics as stats
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from edgeffnet.core.errors import UserError
from edgeffnet.search import harness, selection
from edgeffnet.search.executors import Job, LocalExecutor, placement_note
from edgeffnet.search.grid import PAPER, Candidate, baseline, grid, network_key
from edgeffnet.search.objective import DEFAULT_WEIGHT, objective, pareto_front, rank
from edgeffnet.search.state_files import check_fields, read_state
from edgeffnet.specs.scaling import parse_spec

# A candidate's split: its coefficients, its FLOPS ratio and the budget's shares (Candidate.split)
SPLIT = (
    "alpha",
    "beta",
    "gamma",
    "flops_ratio",
    "depth_share",
    "width_share",
    "resolution_share",
)
COLUMNS = (
    *SPLIT,
    "spec",
    "resolution",
    "macs",
    "params",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "paper_p50_ms",
    "paper_p90_ms",
    "paper_p99_ms",
    "latency_ms",
    "accuracy",
    "objective",
    "paper",
    "same_network_as",
)
TIMES = ("p50_ms", "p90_ms", "p99_ms")


@dataclass
class SearchPlan:
    base: str = "b0"
    target: str = "cpu"
    precision: str | None = None
    phi: float = 1.0
    step: float = 0.05
    tol: float = 0.1
    ratio: float = 2.0
    settings: harness.BenchSettings = field(default_factory=harness.BenchSettings)
    metric: str = "p50"
    weight: float = DEFAULT_WEIGHT
    latency_target: float | None = None  # T in ms; None: the paper's coefficients' measured latency
    confirm_rounds: int = 3
    finalists: int = 3  # the best few are timed again against the paper's network before the choice
    out: Path = Path("search")
    # K: only the best K splits by predicted latency (selection.py). 0 (the Python API's default): every split;
    # None (the command's default): selection.DEFAULT_MEASURE where this device has a latency model.
    measure: int | None = 0
    latency_model: str | None = None  # a model file; None: this device's, under the cache

    def check(self) -> None:
        """Everything a user can get wrong, before any build."""
        self.base = baseline(self.base)
        self.target, self.precision = harness.check_target(self.target, self.precision)
        harness.check_metric(self.metric)
        self.settings.check()
        if self.phi == 0:
            raise UserError("--phi must not be 0: at phi=0 every split is the baseline itself")
        if self.latency_target is not None and not self.latency_target > 0:
            raise UserError(f"--latency-target is in milliseconds and must be positive, got {self.latency_target:g}")
        if self.weight > 0:
            raise UserError(f"--weight must be <= 0 (a slower model may not score higher), got {self.weight:g}")
        if self.measure is not None and self.measure < 0:
            raise UserError(f"--measure must be >= 0 (0: every split), got {self.measure}")
        if self.confirm_rounds < 0 or self.finalists < 1:
            raise UserError(
                f"--confirm-rounds must be >= 0 and --finalists >= 1 (got {self.confirm_rounds}, {self.finalists})"
            )
        self.candidates = grid(self.step, self.tol, self.ratio)
        for c in self.candidates:  # a spec the grammar refuses (e.g. resolution below 32 px) fails here
            parse_spec(c.spec(self.base, self.phi))

    def fingerprint(self, evaluator) -> dict:
        """What a stored result must match to be reused."""
        return {
            "base": self.base,
            "phi": self.phi,
            "target": self.target,
            "precision": self.precision,
            "bench": self.settings.to_dict(),
            "evaluator": evaluator.identity(),
            "paired": True,
        }


class Store:
    def __init__(self, out: Path):
        self.dir = Path(out) / "candidates"

    def path(self, c: Candidate) -> Path:
        return self.dir / f"{c.slug}.json"

    def load(self, c: Candidate, fingerprint: dict) -> dict | None:
        """The stored row of `c` if it was measured with these settings; a damaged one is refused (state_files)."""
        path = self.path(c)
        row = read_state(path, "search candidate file")
        if row is None or row.get("fingerprint") != fingerprint:
            return None
        check_fields(
            row,
            path,
            positive=(*TIMES, *(f"paper_{t}" for t in TIMES), "alpha", "beta", "gamma"),
            whole=("macs", "params", "resolution"),
            text=("spec", "bundle", "network"),
            fraction_or_none=("accuracy",),
        )
        if (row["alpha"], row["beta"], row["gamma"]) != (c.alpha, c.beta, c.gamma) or row["macs"] <= 0:
            raise UserError(
                f"{path} holds another candidate's result ({row['alpha']}, {row['beta']}, {row['gamma']}) "
                "or no MACs; delete it and run again to measure that one anew"
            )
        return row

    def save(self, row: dict) -> None:
        c = Candidate(row["alpha"], row["beta"], row["gamma"])
        harness.atomic_write_text(self.path(c), json.dumps(row, indent=1, allow_nan=False) + "\n")


def _row(c: Candidate, spec: str, network: str, fingerprint: dict) -> dict:
    share = c.split()
    return {
        "alpha": c.alpha,
        "beta": c.beta,
        "gamma": c.gamma,
        "flops_ratio": round(c.flops_ratio, 6),
        "depth_share": round(share["depth"], 4),
        "width_share": round(share["width"], 4),
        "resolution_share": round(share["resolution"], 4),
        "spec": spec,
        "network": network,
        "paper": c.is_paper,
        "same_network_as": None,
        "fingerprint": fingerprint,
    }


def plan_measurements(plan: SearchPlan, echo=print) -> tuple[dict[str, dict] | None, set[str] | None, dict | None]:
    """(predictions by candidate slug, the networks to measure, about the model); (None, None, None):
    measure every split (no model, or --measure 0)."""
    model, k = selection.model_for(plan.target, plan.precision, plan.measure, plan.latency_model, echo)
    if model is None:
        return None, None, None
    predicted = selection.predict_candidates(plan.candidates, plan.base, plan.phi, model)
    keep = selection.choose_to_measure(predicted, k, plan.tol / plan.ratio)
    about = {
        "model": model.path,
        "k": k,
        "held_out_rmse_pct": (model.errors.get("held_out") or {}).get("rmse_pct"),
        "candidates": [p | {"measured": p["network"] in keep} for p in predicted],
        "measured_networks": len(keep),
    }
    return {p["slug"]: p for p in predicted}, keep, about


def _record(plan: SearchPlan, row: dict) -> None:
    """The measurement goes into the device's latency data (paired with the paper's network timed after it)."""
    from edgeffnet.latency import use
    from edgeffnet.latency.store import row as data_row

    use.record(
        plan.target,
        plan.precision,
        [
            data_row(
                row["spec"],
                row["network"],
                plan.precision,
                row["p50_ms"],
                "search",
                settings=plan.settings.to_dict(),
                reference={"spec": Candidate(*PAPER).spec(plan.base, plan.phi), "p50_ms": row["paper_p50_ms"]},
                measured=row.get("measured"),
                bench_record=row.get("record"),
            )
        ],
    )


def _local(executor) -> bool:
    """This machine builds and times: its latency model and data describe the device measured."""
    return isinstance(executor, LocalExecutor)


class _Run:
    """One search run under way: the rows found on disk or measured, the twins waiting on their network's
    measurement, the jobs still to measure, and `result` (run's return value, less its rows)."""

    def __init__(self, plan: SearchPlan, evaluator, echo, local: bool):
        self.plan, self.evaluator, self.echo, self.local = plan, evaluator, echo, local
        self.fp = plan.fingerprint(evaluator)
        self.store = Store(plan.out)
        self.found: dict[Candidate, dict] = {}
        self.twins: dict[Candidate, list[Candidate]] = {}
        self.todo: dict[Path, tuple[Candidate, str, Job]] = {}
        self.result: dict = {
            "rows": [],
            "interrupted": False,
            "failed": [],
            "measured": 0,
            "reused": 0,
            "prediction": None,
        }

    def triage(self, chosen: list[Candidate]) -> None:
        """Each candidate is reused from disk, shares an earlier candidate's network, or becomes a job."""
        plan = self.plan
        owner: dict[str, Candidate] = {}  # network -> the candidate whose row every later twin shares
        records = Path(plan.out) / "records"
        for c in chosen:  # grid order: the paper's candidate first
            spec = c.spec(plan.base, plan.phi)
            network = network_key(parse_spec(spec))
            row = self.store.load(c, self.fp)
            if row is not None:
                self.found[c] = row
                self.result["reused"] += 1
            elif network in owner:  # rounding made it the same network as another: the same results
                self.twins.setdefault(owner[network], []).append(c)
                continue
            else:
                dest = Path(plan.out) / "bundles" / f"{c.slug}-{plan.target}-{plan.precision}"
                # the paper's network, timed again right after: the pair's ratio is what ranks (module doc)
                self.todo[dest] = (
                    c,
                    network,
                    Job(
                        spec,
                        dest,
                        keep=records / f"{c.slug}.json",
                        pair_keep=None if c.is_paper else records / f"{c.slug}.paper.json",
                    ),
                )
            owner.setdefault(network, c)

    def share(self, first: Candidate) -> None:
        """The twins of FIRST get its results, each in a row of its own."""
        for c in self.twins.pop(first, []):
            twin = self.found[first]
            row = (
                _row(c, c.spec(self.plan.base, self.plan.phi), twin["network"], self.fp)
                | {
                    k: twin[k]
                    for k in (
                        "resolution",
                        "macs",
                        "params",
                        *TIMES,
                        *(f"paper_{t}" for t in TIMES),
                        "bundle",
                        "record",
                        "measured",
                        "accuracy",
                    )
                }
                | {"same_network_as": twin["spec"]}
            )
            self.store.save(row)
            self.found[c] = row

    def paper_bundle(self, chosen: list[Candidate]) -> Path:
        """Where the paper's network is (or will be) built: every candidate is timed paired with it."""
        paper = next(c for c in chosen if c.is_paper)
        if paper in self.found:
            return Path(self.found[paper]["bundle"])
        return next(d for d, t in self.todo.items() if t[0] == paper)

    def measure(self, executor, jobs: list[Job], pair: Path, on_candidate, total: int) -> None:
        """Every job built, timed (paired), scored and stored as its measurement comes back."""
        plan = self.plan
        with closing(executor.measure(jobs, plan.target, plan.precision, plan.settings, pair)) as measured:
            for job, m in measured:
                c, network, _ = self.todo[job.dest]
                if isinstance(m, UserError):
                    self.failed(c, job, m)
                    continue
                row = self.scored(c, network, job, m)
                self.store.save(row)
                if self.local:
                    _record(plan, row)
                self.found[c] = row
                self.result["measured"] += 1
                self.echo(
                    f"{job.spec}: {plan.metric} {row[f'{plan.metric}_ms']:.3f} ms, {row['macs'] / 1e6:.0f} M MACs"
                    + (f", accuracy {row['accuracy']:.4f}" if row["accuracy"] is not None else "")
                    + placement_note(m)
                )
                self.share(c)
                if on_candidate:
                    on_candidate(len(self.found), total, job.spec)

    def failed(self, c: Candidate, job: Job, error: UserError) -> None:
        if c.is_paper:
            raise error  # every candidate is timed against the paper's network
        self.echo(f"{job.spec}: failed: {error}")
        self.result["failed"].append((job.spec, str(error)))
        self.result["failed"] += [
            (t.spec(self.plan.base, self.plan.phi), f"the same network as {job.spec}, which failed")
            for t in self.twins.pop(c, [])
        ]

    def scored(self, c: Candidate, network: str, job: Job, m: dict) -> dict:
        """The row of a measured candidate, with the paper's timing after it and the evaluator's accuracy."""
        row = _row(c, job.spec, network, self.fp) | {
            k: m[k] for k in ("resolution", "macs", "params", *TIMES, "bundle", "record", "measured")
        }
        again = m if c.is_paper else m["paper"]
        row |= {f"paper_{t}": again[t] for t in TIMES}
        if m.get("placement"):
            row["placement"] = m["placement"]
        row["accuracy"] = self.evaluator(job.spec, Path(self.plan.out) / "evaluations" / c.slug)
        return row


def run(plan: SearchPlan, evaluator, echo=print, on_candidate=None, executor=None) -> dict:
    """Build, time and score every candidate not on disk (with a latency model: only those
    `selection.choose_to_measure` keeps). Returns {"rows", "interrupted", "failed", "measured", "reused",
    "prediction"}; `on_candidate(done, total, label)` follows along. `executor` builds and times
    (executors.LocalExecutor, this machine, unless given: the farm's runs them on a cluster).

    The latency model and the measurements it learns from are this machine's (latency/device.py): on a
    farm's device there is neither, so there every split is measured and `--measure K` is refused."""
    plan.check()
    executor = executor or LocalExecutor()
    local = _local(executor)
    if not local and (plan.measure or plan.latency_model):
        raise UserError(
            "--measure and --latency-model use this machine's latency model, which does not describe "
            "a --cluster device: leave them out there (every split is measured)"
        )
    search = _Run(plan, evaluator, echo, local)
    predicted, keep, about = plan_measurements(plan, echo) if local else (None, None, None)
    result = search.result
    result["prediction"] = about
    chosen = [c for c in plan.candidates if keep is None or predicted[c.slug]["network"] in keep]
    total = len(chosen)
    search.triage(chosen)
    for c in list(search.found):
        search.share(c)
    pair = search.paper_bundle(chosen)
    jobs = [job for _, _, job in search.todo.values()]
    if on_candidate:
        on_candidate(len(search.found), total, jobs[0].spec if jobs else "")
    try:
        search.measure(executor, jobs, pair, on_candidate, total)
    except KeyboardInterrupt:
        result["interrupted"] = True
    result["rows"] = [
        search.found[c] if predicted is None else search.found[c] | {"predicted_ms": predicted[c.slug]["predicted_ms"]}
        for c in chosen
        if c in search.found
    ]
    if on_candidate:
        on_candidate(len(result["rows"]), total, "")
    return result


# -- the summary ---------------------------------------------------------------------------------------


def summarize(plan: SearchPlan, rows: list[dict]) -> dict:
    """Objective for each row, the chosen coefficients, the Pareto front, the comparison with the paper."""
    metric = f"{plan.metric}_ms"
    key = "latency_ms"
    paper = next((r for r in rows if r["paper"]), None)
    if paper is None:
        raise UserError("the paper's coefficients (1.2, 1.1, 1.15) were not measured yet; run the search again")
    paper_ms = stats.median([r[f"paper_{metric}"] for r in rows if not r["same_network_as"]])
    for r in rows:
        r[key] = r[metric] / r[f"paper_{metric}"] * paper_ms
    target_ms = plan.latency_target or paper_ms
    for r in rows:
        r["objective"] = (
            objective(r["accuracy"], r[key], target_ms, plan.weight) if r.get("accuracy") is not None else None
        )
    accuracy = any(r["objective"] is not None for r in rows)
    ranked, why = rank(rows, paper, key, plan.tol / plan.ratio, plan.metric)
    chosen = ranked[0]
    finalists = list({r["bundle"]: r for r in reversed(ranked) if r["bundle"] != paper["bundle"]}.values())[::-1]
    gain = "accuracy" if accuracy else "macs"
    front = pareto_front([r for r in rows if r.get(gain) is not None], gain, key)
    fastest_split = sorted(rows, key=lambda r: r[key] / r["macs"])[:5]
    return {
        "base": plan.base,
        "phi": plan.phi,
        "target": plan.target,
        "precision": plan.precision,
        "metric": plan.metric,
        "weight": plan.weight,
        "latency_target_ms": target_ms,
        "latency": f"{plan.metric} of each candidate over the paper's network timed right after it, times the "
        f"median of the paper's timings ({paper_ms:.3f} ms)",
        "latency_target_from": "--latency-target" if plan.latency_target else "the paper's coefficients, measured",
        "grid": {
            "step": plan.step,
            "tol": plan.tol,
            "flops_ratio": plan.ratio,
            "candidates": len(plan.candidates),
            "measured": len(rows),
            "networks": len({r["network"] for r in rows}),
        },
        "bench": plan.settings.to_dict(),
        "accuracy_measured": accuracy,
        "note": None if accuracy else "no accuracy was measured: candidates are ranked by latency at equal FLOPS only",
        "chosen": _brief(chosen, key),
        "chosen_spec": chosen["spec"],
        "chosen_because": why,
        "finalists": [_brief(r, key) for r in finalists[: plan.finalists]],
        "paper": _brief(paper, key),
        "pareto_front": [_brief(r, key) for r in front],
        "least_latency_per_mac": [_brief(r, key) | {"ms_per_gmac": r[key] / r["macs"] * 1e9} for r in fastest_split],
        "prediction_error": selection.prediction_errors(rows, key),
        "placement": [{"spec": r["spec"], **r["placement"]} for r in rows if r.get("placement")],
    }


def _brief(r: dict, key: str) -> dict:
    return {
        k: r.get(k)
        for k in (
            "spec",
            *SPLIT,
            "resolution",
            "macs",
            "params",
            key,
            "accuracy",
            "objective",
            "bundle",
        )
    }


def confirm(plan: SearchPlan, summary: dict, executor=None) -> dict | None:
    """The finalists and the paper's network timed again in alternating rounds (paper first, then last,
    ...), so drift on a shared machine falls on all of them; each finalist's latency is taken as its
    median ratio to the paper's in the same round. The choice is made again on these ratios (the paper's
    own network competes with ratio 1), and `summary` is updated with it. Returns the comparison."""
    rounds, paper = plan.confirm_rounds, summary["paper"]
    picks = summary["finalists"]
    if rounds == 0:
        return None
    if not picks:
        return {"rounds": 0, "ratio": 1.0, "same_network": True}
    key = f"{plan.metric}_ms"
    times: dict[str, list[float]] = {r["bundle"]: [] for r in [paper] + picks}
    order = [paper] + picks
    sequence = [r["bundle"] for i in range(rounds) for r in (order if i % 2 == 0 else order[::-1])]
    for bundle, m in zip(sequence, (executor or LocalExecutor()).time([Path(b) for b in sequence], plan.settings)):
        times[bundle].append(m[key])
    paper_ms = stats.median(times[paper["bundle"]])
    target_ms = plan.latency_target or paper_ms
    finals = []
    for r in [paper] + picks:
        ratio = stats.median(t / p for t, p in zip(times[r["bundle"]], times[paper["bundle"]]))
        score = (
            objective(r["accuracy"], ratio * paper_ms, target_ms, plan.weight)
            if r.get("accuracy") is not None
            else None
        )
        finals.append(
            {
                "spec": r["spec"],
                "times_ms": times[r["bundle"]],
                "ratio": ratio,
                "objective": score,
                "mac_ratio": r["macs"] / paper["macs"],
                "row": r,
            }
        )
    best = (
        max(finals, key=lambda f: f["objective"])
        if summary["accuracy_measured"]
        else min(finals, key=lambda f: f["ratio"])
    )
    summary["chosen_before_confirmation"] = summary["chosen_spec"]
    summary["chosen"], summary["chosen_spec"] = best["row"], best["spec"]
    return {
        "rounds": rounds,
        "metric": plan.metric,
        "paper_ms": times[paper["bundle"]],
        "finalists": [{k: v for k, v in f.items() if k != "row"} for f in finals],
        "chosen_median_ms": stats.median(best["times_ms"]),
        "paper_median_ms": paper_ms,
        "ratio": best["ratio"],
        "saved": 1 - best["ratio"],
        "mac_ratio": best["mac_ratio"],
        "same_network": best["row"]["bundle"] == paper["bundle"],
    }


def write(plan: SearchPlan, rows: list[dict], summary: dict, started: float) -> list[Path]:
    """results.csv, search.json and search.png into the output directory."""
    from edgeffnet.search.plots import search_plot

    out = Path(plan.out)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in sorted(rows, key=lambda r: (r["alpha"], r["beta"], r["gamma"])):
        w.writerow(r)
    harness.atomic_write_text(out / "results.csv", buf.getvalue())
    summary = summary | {"wall_seconds_this_run": round(time.perf_counter() - started, 1)}
    harness.atomic_write_text(out / "search.json", json.dumps(summary, indent=1, allow_nan=False) + "\n")
    png = search_plot(rows, summary, out / "search.png")
    return [out / "results.csv", out / "search.json", png]

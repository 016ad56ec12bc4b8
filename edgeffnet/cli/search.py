"""`edgeffnet search` and `edgeffnet fit`: choosing for the device (edgeffnet/search/), here or on the farm."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass

import click

from edgeffnet.cli.options import (
    cluster_option,
    json_option,
    latency_model_option,
    output_option,
    precision_option,
    refuse_ignored,
    stacked,
    target_option,
    task_timeout_option,
    timing_options,
)
from edgeffnet.cli.render import err, interrupted, out
from edgeffnet.cli.types import FINITE, FiniteFloat, Whole, whole
from edgeffnet.core.errors import UserError
from edgeffnet.measure.bench import SHORT
from edgeffnet.search.harness import METRICS, BenchSettings


@dataclass(frozen=True)
class _Measuring:
    """How and where search and fit time each candidate: the options `_measuring_options` declares."""

    settings: BenchSettings
    metric: str  # the latency that counts
    cluster: str | None
    task_timeout: float

    def executor(self):
        """Where search and fit build and time: this machine (None) or the farm at --cluster."""
        if not self.cluster:
            return None
        from edgeffnet.farm.search import FarmExecutor

        return FarmExecutor(self.cluster, self.task_timeout)


# What search and fit time each candidate with, and where; --metric picks the latency that counts.
_timing_and_farm_options = stacked(
    timing_options(
        SHORT,
        iterations="Minimum timed inferences per measurement.",
        seconds="Minimum seconds per measurement.",
        warmup="Untimed seconds first.",
    ),
    click.option(
        "--metric",
        type=click.Choice(list(METRICS)),
        default=METRICS[0],
        show_default=True,
        help="The latency that counts.",
    ),
    cluster_option(
        "Ray head HOST:PORT of a device farm: build on its build workers (farm join --build), time on a "
        "device of --target (docs/farm-search.md)."
    ),
    task_timeout_option("With --cluster: seconds one build or one device task may take."),
)


def _measuring_options(command: Callable) -> Callable:
    """Search and fit's shared options, handed to the command as one `measuring` argument (_Measuring)."""

    @functools.wraps(command)
    def with_measuring(*args, iterations, seconds, warmup, threads, metric, cluster, task_timeout, **kwargs):
        settings = BenchSettings(iterations, seconds, warmup, threads)
        return command(*args, measuring=_Measuring(settings, metric, cluster, task_timeout), **kwargs)

    return _timing_and_farm_options(with_measuring)


@dataclass(frozen=True)
class _Accuracy:
    """Where search's accuracy comes from: the options `_accuracy_options` declares."""

    evaluate: str | None  # the user's command
    evaluate_timeout: float
    data: str | None  # or training on this ImageFolder ...
    val: str | None  # ... and scoring on this one
    epochs: int
    init: str
    batch_size: int
    lr: float

    @property
    def measured(self) -> bool:
        """Whether there is any accuracy (without it there is no objective: latency at equal FLOPS ranks)."""
        return self.evaluate is not None or bool(self.data)

    def refuse_ignored(self) -> None:
        """Options that matter only with accuracy (the objective's) or with one way of getting it are refused
        where this run has neither."""
        scored = (self.measured, "--evaluate or --data/--val")
        refuse_ignored(
            {
                "--evaluate-timeout": (self.evaluate is not None, "--evaluate"),
                "--weight": scored,
                "--latency-target": scored,
                **dict.fromkeys(("--epochs", "--init", "--batch-size", "--lr"), (bool(self.data), "--data and --val")),
            }
        )

    def evaluator(self):
        """The evaluator these options ask for (NoEvaluator: none), refused before any build when they conflict."""
        from edgeffnet.search import evaluators

        return evaluators.choose(
            self.evaluate,
            self.data,
            self.val,
            self.epochs,
            self.init,
            self.batch_size,
            self.lr,
            echo=lambda m: err.print(m, markup=False),
            timeout=self.evaluate_timeout,
        )


_evaluate_and_train_options = stacked(
    click.option(
        "--evaluate",
        help='Accuracy from your command: {spec} and {output} are replaced; it writes {"accuracy": FRACTION} to {output}.',
    ),
    click.option(
        "--evaluate-timeout",
        type=FiniteFloat(0, 7 * 86400, min_open=True),
        default=7200.0,
        show_default=True,
        help="Seconds one --evaluate run may take; then its process group is killed and the search stops.",
    ),
    click.option("--data", type=click.Path(), help="Accuracy by training each candidate on this ImageFolder..."),
    click.option("--val", type=click.Path(), help="...and scoring it (top-1) on this one."),
    click.option(
        "--epochs", type=Whole(1, 10_000), default=1, show_default=True, help="Training epochs per candidate (--data)."
    ),
    click.option(
        "--init",
        type=click.Choice(["scratch", "pretrained"]),
        default="scratch",
        show_default=True,
        help="--data training from scratch (as the paper) or from the base's pretrained weights (lite0).",
    ),
    click.option(
        "--batch-size", type=whole("batch"), default=32, show_default=True, help="--data training batch size."
    ),
    click.option("--lr", type=FINITE, default=1e-3, show_default=True, help="--data training learning rate (AdamW)."),
)


def _accuracy_options(command: Callable) -> Callable:
    """Search's accuracy options, handed to the command as one `accuracy` argument (_Accuracy)."""

    @functools.wraps(command)
    def with_accuracy(*args, evaluate, evaluate_timeout, data, val, epochs, init, batch_size, lr, **kwargs):
        accuracy = _Accuracy(evaluate, evaluate_timeout, data, val, epochs, init, batch_size, lr)
        return command(*args, accuracy=accuracy, **kwargs)

    return _evaluate_and_train_options(with_accuracy)


def _say_what_was_measured(plan, result: dict) -> None:
    err.print(
        f"{result['measured']} measured, {result['reused']} from disk, {len(result['failed'])} failed; "
        f"grid of {len(plan.candidates)} candidates"
        + (f", {len(plan.candidates) - len(result['rows'])} predicted only" if result["prediction"] else ""),
        markup=False,
    )


def _summary(plan, result: dict, cluster: str | None, executor) -> dict:
    """The ranking and, unless the run was interrupted, the finalists timed again against the paper's network.
    Without the paper's coefficients measured there is no baseline: refused (interrupted: stopped)."""
    from edgeffnet.search import trials

    if not result["rows"] or not any(r["paper"] for r in result["rows"]):
        if result["interrupted"]:
            interrupted("run the same command again to continue")
        raise UserError("nothing to compare: the paper's coefficients could not be measured")
    summary = trials.summarize(plan, result["rows"])
    summary["cluster"] = cluster
    summary["prediction"] = result["prediction"]
    summary["comparison"] = None if result["interrupted"] else trials.confirm(plan, summary, executor)
    return summary


def _print_search(summary: dict, files: list, as_json: bool) -> None:
    from edgeffnet.search import console

    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    out.print(console.search_table(summary))
    for line in console.search_lines(summary, summary["comparison"]):
        out.print(line, markup=False)
    err.print("wrote " + ", ".join(str(f) for f in files), markup=False)


@click.command("search")
@click.argument("base", default="b0")
@target_option
@precision_option
@click.option("--phi", type=FINITE, default=1.0, show_default=True, help="The phi at which splits are compared.")
@click.option("--step", type=FINITE, default=0.05, show_default=True, help="Grid step of alpha, beta and gamma.")
@click.option("--tol", type=FINITE, default=0.1, show_default=True, help="Keep |alpha*beta^2*gamma^2 - ratio| <= tol.")
@click.option("--flops-ratio", type=FINITE, default=2.0, show_default=True, help="FLOPS multiplier per unit of phi.")
@click.option("--weight", "-w", type=FINITE, default=-0.07, show_default=True, help="w in ACC x (LAT/T)^w.")
@click.option("--latency-target", type=FINITE, help="T in ms (default: the paper's coefficients' measured latency).")
@_accuracy_options
@click.option(
    "--finalists",
    type=Whole(1, 1000),
    default=3,
    show_default=True,
    help="How many of the best are timed again against the paper's network before the choice.",
)
@click.option(
    "--confirm-rounds",
    type=Whole(0, 1000),
    default=3,
    show_default=True,
    help="Alternating rounds of that re-timing (0: choose on the first measurements).",
)
@click.option(
    "--measure",
    type=Whole(0, 100_000),
    default=None,
    help="Build and time only the best K splits by predicted latency (+ the paper's); 0: every split. "
    "Default 8 where this device has a latency model, else every split.",
)
@latency_model_option("The latency model file (default: this device's, under the cache).")
@_measuring_options
@output_option("Results directory.", default="search")
@json_option("Print the summary as JSON.")
def search_cmd(
    base,
    target,
    precision,
    phi,
    step,
    tol,
    flops_ratio,
    weight,
    latency_target,
    accuracy,
    finalists,
    confirm_rounds,
    measure,
    latency_model,
    measuring,
    output,
    as_json,
) -> None:
    """Step 1 on the device: alpha, beta, gamma under alpha*beta^2*gamma^2 ~= 2, each split built and timed.

    Candidates are ranked by ACC x (LAT/T)^w with LAT measured on the target; without --evaluate or --data,
    by latency at equal FLOPS (and it says no accuracy was measured). Run again to continue: candidates on
    disk are not measured again.
    """
    import time
    from pathlib import Path

    from edgeffnet.search import console, trials

    started = time.perf_counter()
    plan = trials.SearchPlan(
        base=base,
        target=target,
        precision=precision,
        phi=phi,
        step=step,
        tol=tol,
        ratio=flops_ratio,
        weight=weight,
        latency_target=latency_target,
        metric=measuring.metric,
        confirm_rounds=confirm_rounds,
        finalists=finalists,
        out=Path(output),
        settings=measuring.settings,
        measure=measure,
        latency_model=latency_model,
    )
    accuracy.refuse_ignored()
    evaluator = accuracy.evaluator()
    executor = measuring.executor()
    with console.candidate_progress(err, "search") as (on_candidate, echo):
        result = trials.run(plan, evaluator, echo=echo, on_candidate=on_candidate, executor=executor)
    _say_what_was_measured(plan, result)
    summary = _summary(plan, result, measuring.cluster, executor)
    _print_search(summary, trials.write(plan, result["rows"], summary, started), as_json)
    if result["interrupted"]:
        interrupted("the summary covers what was measured; run the same command again to continue")


@click.command("fit")
@click.argument("base", required=False)
@click.option("--spec", "searched", help="Take the base and coefficients of a spec (e.g. what search chose).")
@click.option("--coefficients", help="alpha,beta,gamma (default the paper's 1.2,1.1,1.15).")
@target_option
@precision_option
@click.option("--latency-ms", type=FINITE, help="The budget: the largest phi whose measured latency is within it.")
@click.option("--budgets", help="Several budgets, e.g. 2,5,10,20: the device's own family.")
@click.option("--phi-step", type=FINITE, default=0.05, show_default=True, help="Resolution of phi.")
@click.option("--phi-min", type=FINITE, default=-4.0, show_default=True, help="Smallest phi considered.")
@click.option("--phi-max", type=FINITE, default=8.0, show_default=True, help="Largest phi considered.")
@latency_model_option(
    "The latency model that proposes phi (default: this device's, under the cache, where there is one)."
)
@_measuring_options
@output_option("Directory for the bundles, measurements, fit.json/csv/png.", default="fit")
@json_option("Print the results as JSON.")
def fit_cmd(
    base,
    searched,
    coefficients,
    target,
    precision,
    latency_ms,
    budgets,
    phi_step,
    phi_min,
    phi_max,
    latency_model,
    measuring,
    output,
    as_json,
) -> None:
    """Step 2 on the device: the largest phi whose measured latency on TARGET is within the budget.

    A latency model (log latency against log MACs) proposes, measurements decide by bisection, and the
    answer is measured again. Prints the spec, its latency, MACs, params and the phis tried; writes the bundle.
    """
    from pathlib import Path

    from edgeffnet.search import console, fit

    plan = fit.plan_from_options(
        base,
        searched,
        coefficients,
        target=target,
        precision=precision,
        metric=measuring.metric,
        step=phi_step,
        phi_min=phi_min,
        phi_max=phi_max,
        out=Path(output),
        settings=measuring.settings,
        latency_model=latency_model or "auto",
    )
    wanted = fit.parse_budgets(latency_ms, budgets)
    results, failed = fit.fit_family(
        plan, wanted, echo=lambda m: err.print(m, markup=False), executor=measuring.executor()
    )
    if not results:
        raise UserError(f"no budget could be met: {failed[0][1]}")
    files = fit.write(plan, results)
    if as_json:
        click.echo(json.dumps(results, indent=1))
    else:
        out.print(console.fit_table(results, measuring.metric))
        for r in results:
            for line in console.fit_lines(r, measuring.metric):
                out.print(line, markup=False)
        err.print("wrote " + ", ".join(str(f) for f in files), markup=False)
    if failed:
        raise UserError(f"{len(failed)} of {len(wanted)} budgets could not be met; the first: {failed[0][1]}")


COMMANDS = (search_cmd, fit_cmd)

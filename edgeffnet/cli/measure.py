"""`edgeffnet bench`, `sweep` and `report`: bundles measured on their device, and the records read back."""

from __future__ import annotations

import json

import click

from edgeffnet.cli.options import (
    cluster_option,
    connect_timeout_option,
    csv_list,
    json_option,
    output_option,
    refuse_ignored,
    target_option,
    task_timeout_option,
    timing_options,
)
from edgeffnet.cli.render import err, interrupted, out
from edgeffnet.cli.types import COUNT, THREADS, whole
from edgeffnet.core.errors import UserError
from edgeffnet.measure.bench import MODES, PROFILE_ITERATIONS, SHORT, Settings


@click.command("bench")
@click.argument("bundle_dir", type=click.Path())
@click.option(
    "--mode",
    type=click.Choice(list(MODES)),
    default=Settings().mode,
    show_default=True,
    help="latency: batch 1, one synchronous inference at a time; throughput: the backend's best "
    "(OpenVINO: THROUGHPUT hint, asynchronous requests).",
)
@timing_options(
    Settings(),
    iterations="Time at least this many inferences (MLPerf single-stream's minimum)...",
    seconds="...and for at least this long.",
    warmup="Untimed seconds of inference first.",
)
@click.option("--streams", type=THREADS, help="OpenVINO streams (default: what the mode's hint picks).")
@click.option("--batch", type=whole("batch"), help="Throughput mode on a --dynamic-batch bundle: images per request.")
@click.option(
    "--baseline", default="", help="Also measure the same model in pytorch and/or onnxruntime (CPU), comma-separated."
)
@json_option("Print the records as JSON.")
@click.option(
    "--profile",
    "profile",
    is_flag=True,
    help="Then profile the artifact per layer with its runtime's own profiler (perturbs timing: off by default).",
)
@click.option(
    "--profile-iterations",
    type=COUNT,
    default=PROFILE_ITERATIONS,
    show_default=True,
    help="Profiled inferences of --profile.",
)
@click.option(
    "--trace",
    type=click.Path(dir_okay=False),
    help="With --profile: write one profiled inference as Chrome trace JSON (chrome://tracing, Perfetto).",
)
def bench_cmd(
    bundle_dir,
    mode,
    iterations,
    seconds,
    warmup,
    threads,
    streams,
    batch,
    baseline,
    as_json,
    profile,
    profile_iterations,
    trace,
) -> None:
    """Measure BUNDLE on its device: latency percentiles or images/s, GFLOP/s against the device's peak.

    The record (device, tool versions, settings, statistics) is saved as BUNDLE/bench/RUNTIME-MODE.json.
    Ctrl-C stops early and keeps what was measured, marked interrupted.
    """
    from pathlib import Path

    from edgeffnet.measure import bench, console

    if trace and not profile:
        raise UserError("--trace writes a profiled inference; add --profile")
    s = bench.Settings(
        mode=mode,
        iterations=iterations,
        seconds=seconds,
        warmup=warmup,
        threads=threads,
        streams=streams,
        batch=batch,
        profile=profile_iterations if profile else 0,
    )
    records, stopped = bench.run(
        bundle_dir,
        s,
        csv_list(baseline),
        progress=lambda label: console.progress_bar(err, label),
        trace=Path(trace) if trace else None,
    )
    if as_json:
        click.echo(json.dumps([r.to_dict() | {"saved": str(r.saved_to or "")} for r in records], indent=1, default=str))
    elif records:
        out.print(console.table(records))
        for r in records:
            if r.profile:
                out.print(console.profile_tables(r.profile))
                if r.profile.get("warning"):
                    err.print(f"warning: {r.profile['warning']}", markup=False)
            err.print(
                f"saved {r.saved_to}"
                if r.saved_to
                else f"warning: could not save the {r.runtime} record into the bundle",
                markup=False,
            )
    if stopped:
        interrupted("the partial record was saved, marked interrupted" if records else "nothing was measured")


@click.command("sweep")
@click.option(
    "--models",
    "-m",
    help="Presets and ranges, e.g. b0-b3,lite0-lite2 (default b0-b3,lite0 when neither --spec nor --scaling is given).",
)
@click.option("--spec", "specs", multiple=True, help="A full model spec, e.g. 'b0,res=96' (repeatable).")
@click.option(
    "--scaling",
    help="[BASE:]PHI,... e.g. b0:1,2: the baseline and, per phi, the compound model and the "
    "same FLOPS budget spent on width, depth or resolution only.",
)
@click.option(
    "--table3",
    is_flag=True,
    help="Add the paper's Table 3 rows (MobileNetV1/V2 and ResNet-50 scaled by "
    "width, depth, resolution and compound; see info --table3).",
)
@target_option
@click.option("--precision", "-p", help="Comma-separated, e.g. fp32,int8 (default: the target's default).")
@click.option("--mode", default="latency,throughput", show_default=True, help="Bench modes, comma-separated.")
@click.option("--baseline", default="", help="Also measure pytorch and/or onnxruntime (CPU), comma-separated.")
@timing_options(
    SHORT,
    iterations="Minimum timed inferences per bench.",
    seconds="Minimum seconds per bench.",
    warmup="Untimed seconds before each bench.",
)
@click.option(
    "--rounds",
    type=COUNT,
    default=6,
    show_default=True,
    help="Interleaved rounds per series: each model measured in turns, so drift cancels between them.",
)
@output_option("Directory for the bundles (OUTPUT/bundles) and the report.", default="results")
@click.option(
    "--weights",
    "-w",
    type=click.Choice(["pretrained", "random"]),
    default="pretrained",
    show_default=True,
    help="pretrained: the real weights where they exist here (lite0..lite2 with their "
    "package installed), seeded random for the rest; random: all random (a "
    "latency study: the outputs mean nothing).",
)
@json_option("Print the report as JSON at the end.")
@cluster_option(
    "Ray head HOST:PORT of a device farm (edgeffnet farm join): each bundle is measured on a device "
    "of its target; --target then takes a comma-separated list."
)
@task_timeout_option("With --cluster: seconds one device may take for a bundle (compile, verify, bench).")
@connect_timeout_option("With --cluster: seconds to wait for the Ray head to answer before giving up with one line.")
def sweep_cmd(
    models,
    specs,
    scaling,
    table3,
    target,
    precision,
    mode,
    baseline,
    iterations,
    seconds,
    warmup,
    threads,
    rounds,
    output,
    weights,
    as_json,
    cluster,
    task_timeout,
    connect_timeout,
) -> None:
    """Build (through the stage cache) and bench models x precisions on a target, then write the report.

    Run the same command again to continue an interrupted sweep: finished items are skipped.
    """
    from pathlib import Path

    from edgeffnet.measure import bench, console, report
    from edgeffnet.specs import targets
    from edgeffnet.workflows import sweep

    if table3:
        from edgeffnet.specs.scaling import table3_specs

        specs = tuple(specs) + tuple(table3_specs())
    refuse_ignored(dict.fromkeys(("--task-timeout", "--connect-timeout"), (bool(cluster), "--cluster")))
    if cluster and click.get_current_context().get_parameter_source("rounds") == click.core.ParameterSource.COMMANDLINE:
        raise UserError(
            "--rounds applies to a sweep on this host; with --cluster each device measures its bundles "
            "one at a time: drop it"
        )
    settings = bench.Settings(iterations=iterations, seconds=seconds, warmup=warmup, threads=threads)
    dest = Path(output)
    if cluster:  # the device farm (edgeffnet/farm): the same items on every target's devices
        from edgeffnet.farm.sweep import run_command

        result = run_command(
            models,
            specs,
            scaling,
            csv_list(target),
            csv_list(precision),
            csv_list(mode),
            csv_list(baseline),
            settings,
            dest,
            cluster,
            task_timeout,
            weights,
            connect_timeout,
        )
    else:
        profile = targets.load(target)
        precisions = [profile.check_precision(p) for p in csv_list(precision)] or [profile.default_precision]
        result = sweep.run(
            sweep.plan(models, specs, scaling, precisions, weights),
            target,
            dest,
            csv_list(mode),
            csv_list(baseline),
            settings,
            progress=lambda label: console.progress_bar(err, label),
            rounds=rounds,
        )
    try:
        rep = report.write(report.collect([dest / "bundles"], baselines=csv_list(baseline)), dest)
    except UserError:
        rep = None  # nothing measured yet
    if rep and not as_json:
        out.print(report.console_table(rep))
        for note in rep["warnings"]:
            err.print(f"warning: {note}", markup=False)
        err.print("report: " + ", ".join(rep["files"]), markup=False)
    elif rep:
        click.echo(json.dumps(rep, indent=1))
    if result["interrupted"]:
        interrupted(
            f"stopped at {result['interrupted'].spec} {result['interrupted'].precision}; "
            f"run the same command again to continue"
        )
    if result["failed"]:
        (item, why), more = result["failed"][0], len(result["failed"]) - 1
        raise UserError(f"{item.spec} {item.precision} failed: {why}" + (f" (and {more} more failed)" if more else ""))


@click.command("report")
@click.argument("paths", nargs=-1, type=click.Path())
@output_option("Directory to write.", default="report")
@click.option(
    "--baselines",
    is_flag=True,
    help="Also report the baseline records (bench --baseline: PyTorch, ONNX Runtime on the CPU).",
)
@json_option("Print the report as JSON.")
def report_cmd(paths, output, baselines, as_json) -> None:
    """Tables, latency-vs-FLOPs plots and one HTML page from bench records.

    PATHS are bundles, directories (searched) or bench record files. Writes report.md, report.csv,
    report.json, latency_vs_flops.png and report.html (self-contained) into OUTPUT.
    """
    from edgeffnet.measure import report

    skipped: list[str] = []  # damaged records found in directories: skipped, counted in the warnings
    rep = report.write(report.collect(list(paths), skipped, baselines=baselines), output, skipped)
    if as_json:
        click.echo(json.dumps(rep, indent=1))
        return
    out.print(report.console_table(rep))
    for note in rep["warnings"]:
        err.print(f"warning: {note}", markup=False)
    for f in rep["files"]:
        err.print(f"wrote {f}", markup=False)


COMMANDS = (bench_cmd, sweep_cmd, report_cmd)

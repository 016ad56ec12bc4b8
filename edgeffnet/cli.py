"""The `edgeffnet` command. Options are parsed here; the work lives in the stage modules.

User errors (UserError) are caught once, in `main`, and printed as one line on stderr.
"""

from __future__ import annotations

import json
import math
import signal
import sys

import click
from rich.console import Console
from rich.table import Table

from .errors import UserError
from .pipeline.options import BOUNDS, BuildOptions
from .scaling import SPEC_FORMS, __doc__ as SPEC_GRAMMAR

# Piped output gets wide tables: a log or a grep should not see names broken across lines.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 200)


class FiniteFloat(click.FloatRange):
    """A float that is a real number: click's float takes "nan" and "inf", and nan passes every bound."""

    name = "number"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


class Whole(click.IntRange):
    name = "whole number"  # click's "integer range" reads oddly in "'1e7' is not a valid ..."


def _whole(name: str) -> click.IntRange:
    """A build option's whole-number type with the bounds of pipeline/options.py."""
    return Whole(*BOUNDS[name])


class Choice(click.Choice):
    """click's Choice, with a suggestion for a near miss ("fp61": did you mean 'fp16'?)."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as e:
            from .suggest import did_you_mean

            e.message = e.message.rstrip(".") + did_you_mean(value, self.choices)
            raise


PRECISION = Choice(["fp32", "fp16", "int8"])
FINITE = FiniteFloat()
SECONDS = FiniteFloat(0, 86400)  # a measurement's seconds: up to a day
COUNT = Whole(1, 10_000_000)  # iterations: as many as a run can reach
TOP = Whole(1, 100_000)  # top-k
THREADS = Whole(1, 1024)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgeffnet")
def cli() -> None:
    """Compile compound-scaled EfficientNets for a device and measure how fast they really run there."""


def _spec_help() -> str:
    grammar = SPEC_GRAMMAR.split("::", 1)[1].strip("\n")
    lines = [line[4:] if line.startswith("    ") else line for line in grammar.rstrip().splitlines()]
    # "\b" stops click from re-flowing a paragraph: the grammar's columns must stay as written.
    paragraphs = "\n".join(lines).split("\n\n")
    return "\n\n".join(["\b\nModel spec grammar:"] + ["\b\n" + p for p in paragraphs])


@cli.command(epilog=_spec_help())
@click.argument("spec", required=False)
@click.option("--num-classes", type=_whole("num_classes"), default=1000, show_default=True, help="Classifier width.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--table3", is_flag=True, help="The paper's Table 3 (MobileNetV1/V2, ResNet-50 scaled): its FLOPS "
                                             "beside the counted MACs of each row's spec.")
def info(spec: str | None, num_classes: int, as_json: bool, table3: bool) -> None:
    """Show the scaled stage table, d/w/r, params, MACs and the 2^phi check for SPEC.

    Without SPEC, list the published presets.
    """
    from .pipeline import require_build_side

    require_build_side("edgeffnet info")
    from . import info as inf
    from .scaling import parse_spec

    if table3:
        _print_table3(inf.table3(), as_json)
        return
    if num_classes < 1:
        raise UserError(f"--num-classes must be at least 1, got {num_classes}")
    if spec is None:
        rows = inf.presets()
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        t = Table(title="Presets (MAC ratio to the family baseline vs (alpha*beta^2*gamma^2)^phi)")
        for col in ("spec", "w", "d", "res", "dropout", "params", "MACs", "ratio", "predicted"):
            t.add_column(col, justify="left" if col == "spec" else "right")
        for r in rows:
            t.add_row(r["spec"], f"{r['width']:.1f}", f"{r['depth']:.1f}", str(r["resolution"]), f"{r['dropout']:.1f}",
                      f"{r['params']:,}", f"{r['macs'] / 1e9:.3f} G", f"{r['mac_ratio']:.2f}x",
                      f"{r['predicted']:.2f}x")
        out.print(t)
        out.print(f"Spec forms: {SPEC_FORMS} (see edgeffnet info --help)")
        return
    d = inf.describe(parse_spec(spec), num_classes)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    _print_info(d)


def _print_info(d: dict) -> None:
    for w in d["warnings"]:
        err.print(f"warning: {w}")
    t = Table(title=f"{d['spec']} ({d['family']}, {d['activation']}, SE {'on' if d['squeeze_excitation'] else 'off'})")
    for col in ("stage", "operator", "kernel", "resolution", "channels", "layers"):
        t.add_column(col, justify="left" if col == "operator" else "right")
    for r in d["stages"]:
        t.add_row(str(r["stage"]), r["operator"], f"{r['kernel']}x{r['kernel']}",
                  f"{r['resolution']}x{r['resolution']}", str(r["channels"]), str(r["layers"]))
    out.print(t)
    out.print(f"depth d = {d['depth']:.4g}   width w = {d['width']:.4g}   resolution r = {d['resolution_multiplier']:.4g}"
              f" ({d['resolution']} px)   dropout {d['dropout']:.2g}")
    phi = "" if d["phi"] is None else f"phi = {d['phi']:g}   "
    out.print(f"{phi}alpha = {d['alpha']:g}  beta = {d['beta']:g}  gamma = {d['gamma']:g}   "
              f"alpha*beta^2*gamma^2 = {d['alpha_beta2_gamma2']:.4f}" + (f"   only {d['only']}" if d["only"] else ""))
    out.print(f"params {d['params']:,}   MACs {d['macs'] / 1e9:.4f} G ({d['flops'] / 1e9:.3f} GFLOPs)"
              f"   classes {d['num_classes']}")
    c = d["scaling_check"]
    if c and c["two_pow_phi"] is None:
        out.print(f"MAC check: MACs / MACs({c['baseline']}) = {c['mac_ratio']:.3f}x;  d*w^2*r^2 = {c['predicted']:.3f}x"
                  f"  (actual/predicted {c['ratio_over_predicted']:.3f})")
    elif c:
        out.print(f"2^phi check: MACs / MACs({c['baseline']}) = {c['mac_ratio']:.3f}x;  "
                  f"(alpha*beta^2*gamma^2)^phi = {c['predicted']:.3f}x;  2^phi = {c['two_pow_phi']:.3f}x  "
                  f"(actual/predicted {c['ratio_over_predicted']:.3f})")


def _print_table3(rows: list[dict], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    t = Table(title="Table 3 of the paper: FLOPS as printed vs MACs counted (Conv2d + Linear, one image)")
    for col in ("row", "spec", "res", "params", "paper", "counted", "deviation", "agrees"):
        t.add_column(col, justify="left" if col in ("row", "spec") else "right")
    for r in rows:
        verdict = "yes" if r["agrees"] else f"no: matches '{r['matches']}'" if r["matches"] else "no"
        t.add_row(r["label"], r["spec"], str(r["resolution"]), f"{r['params']:,}", f"{r['paper_flops']:.1f} B",
                  f"{r['macs'] / 1e9:.3f} B", f"{r['deviation']:+.1%}", verdict)
    out.print(t)
    for note in dict.fromkeys(r["note"] for r in rows if r["note"]):
        out.print(f"note: {note} (see README, Table 3)")


@cli.command("targets")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def targets_cmd(as_json: bool) -> None:
    """List the device profiles (targets/*.toml); --target also takes a path to your own profile."""
    from dataclasses import asdict

    from . import targets

    profiles = targets.known()
    if as_json:
        click.echo(json.dumps([asdict(t) for t in profiles.values()], indent=2))
        return
    t = Table(title="Targets")
    for col in ("name", "backend", "device", "precisions", "default", "description"):
        t.add_column(col)
    for p in profiles.values():
        name = p.name + (f" ({', '.join(p.aliases)})" if p.aliases else "")
        t.add_row(name, p.backend, p.device, ",".join(p.precisions), p.default_precision, p.description)
    out.print(t)


_D = BuildOptions()  # every default written once, in pipeline/options.py


@cli.command(epilog=_spec_help())
@click.argument("spec")
@click.option("--target", "-t", default="cpu", show_default=True, help="Target name or path to a profile .toml.")
@click.option("--precision", "-p", type=PRECISION, help="Default: the target's default.")
@click.option("--weights", "-w", help="Checkpoint (.pth/.pt) or 'pretrained' (lite0..lite2). Default: seeded random.")
@click.option("--num-classes", type=_whole("num_classes"), help="Classifier width (random init; must match a checkpoint).")
@click.option("--resolution", type=_whole("resolution"), help="Input resolution in pixels (default: the spec's).")
@click.option("--batch", type=_whole("batch"), default=_D.batch, show_default=True, help="Static batch size.")
@click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch dimension.")
@click.option("--opset", type=_whole("opset"), default=_D.opset, show_default=True, help="ONNX opset (13 is read by every target).")
@click.option("--seed", type=_whole("seed"), default=_D.seed, show_default=True, help="Seed for random weights.")
@click.option("--views", type=_whole("views"), default=_D.views, show_default=True, help="Real-photo views used for parity checks.")
@click.option("--no-cache", is_flag=True, help="Rebuild every stage instead of reusing finished ones.")
@click.option("--require-engine", is_flag=True, help="Fail instead of leaving a TensorRT engine pending on a host without TensorRT.")
@click.option("--calib", type=click.Path(), help="INT8 calibration data: a folder of images (jpg/png/bmp/webp, "
                                                  "searched recursively) or an .npy/.npz of preprocessed tensors. "
                                                  "Default: the real photos in calibration/photos.toml.")
@click.option("--calib-size", type=_whole("calib_size"), default=_D.calib_size, show_default=True, help="Calibration views.")
@click.option("--calib-method", type=click.Choice(["minmax", "percentile", "entropy"]),
              help="INT8 range method (default: the one that measures best).")
@click.option("--min-agreement", type=FiniteFloat(0, 1), default=_D.min_agreement, show_default=True,
              help="INT8 of trained weights fails below this top-1 agreement with FP32 on verification views.")
@click.option("--allow-drop", is_flag=True, help="Keep an INT8 build whose agreement is below --min-agreement.")
@click.option("--distill", is_flag=True,
              help="INT8 of trained weights: self-distil the Q/DQ activation scales and biases toward FP32 (about "
                   "100 s on Lite0); kept only where it follows FP32 better on held-out photos.")
@click.option("--fidelity-views", type=_whole("fidelity_views"),
              help="Verification views for the fidelity report (FP16/INT8); default 200 for trained weights, "
                   "48 for random ones (which make no agreement claim).")
@click.option("--val", type=click.Path(),
              help="Labelled validation images (as edgeffnet eval --data): FP16/INT8 are then gated on their top-1 "
                   "accuracy drop against FP32 instead of agreement.")
@click.option("--max-drop", type=FiniteFloat(0, 100), default=_D.max_drop, show_default=True,
              help="With --val: the largest top-1 accuracy drop, in percentage points, a build may keep "
                   "(--allow-drop keeps a larger one).")
@click.option("--classes", type=click.Path(),
              help="With --val: a fine-tuned head's class names, one per line, in its order (as edgeffnet eval --classes).")
@click.option("-o", "--output", type=click.Path(), help="Bundle directory (default build/SPEC-TARGET-PRECISION).")
def build(spec, target, precision, weights, output, no_cache, **options) -> None:
    """Build SPEC for a target: export, simplify, verify and compile into a bundle directory."""
    from .pipeline import build as run_build

    b = run_build(spec, target=target, precision=precision, weights=weights, output=output, cache=not no_cache,
                  **options)
    out.print(str(b.path), markup=False)  # a path is text: rich would eat a "[x]" in it


@cli.command()
@click.argument("bundle_dir", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top", type=TOP, default=5, show_default=True, help="How many classes to print per image.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def predict(bundle_dir, images, top, as_json) -> None:
    """Run a bundle's compiled artifact on IMAGES with the bundle's preprocessing; print the top classes."""
    from .predict import predict as run_predict

    if top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    results = run_predict(bundle_dir, images, top)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    if results and results[0]["random_weights"]:
        err.print(f"warning: {results[0]['warning']}", markup=False)
    for r in results:
        out.print(f"{r['image']}  ({r['runtime']})", markup=False)
        for c in r["top"]:
            out.print(f"  {c['probability']:7.2%}  {c['class']:4d}  {c['name']}", markup=False)


@cli.command("eval")
@click.argument("bundle_dir", type=click.Path())
@click.option("--data", required=True, type=click.Path(),
              help="Images: a folder with one sub-folder per class (named by WordNet ID, class index or class "
                   "name), a CSV of path,label rows, or a folder of unlabelled images (agreement only).")
@click.option("--classes", type=click.Path(), help="A fine-tuned head's class names, one per line, in its order.")
@click.option("--batch", type=_whole("batch"), default=32, show_default=True, help="Images loaded and run per step.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def eval_cmd(bundle_dir, data, classes, batch, as_json) -> None:
    """Accuracy of BUNDLE's artifacts on your images, paired with its FP32 ONNX graph (onnxruntime).

    Top-1/top-5 of FP32 and of each artifact (precision graph, compiled artifact), the accuracy drop with
    Newcombe's paired 95% interval and the exact McNemar p-value, and agreement with FP32. The result is
    saved as BUNDLE/eval/NAME.json; Ctrl-C keeps what was measured, marked partial.
    """
    from .measure import console, evaluate

    result, saved = evaluate.evaluate(bundle_dir, data, classes, batch,
                                      progress=lambda label: console.progress_bar(err, label))
    if as_json:
        click.echo(json.dumps(result | {"saved": str(saved or "")}, indent=1))
    elif result["images"]:
        out.print(evaluate.table(result))
    for note in result["notes"]:
        err.print(f"note: {note}", markup=False)
    if result["model"]["random_weights"]:
        err.print("warning: this bundle has seeded random weights (a latency study): its accuracy means nothing",
                  markup=False)
    if result["skipped_count"]:
        err.print(f"warning: {result['skipped_count']} unreadable image(s) skipped, e.g. "
                  f"{result['skipped_unreadable'][0]}", markup=False)
    if result["images"]:
        err.print(f"saved {saved}" if saved else "warning: could not save the result into the bundle", markup=False)
    if result["partial"]:
        done = f"the partial result ({result['images']} of {result['images_total']} images)"
        _interrupted(f"{done} was saved, marked partial" if saved else
                     f"{done} could not be saved" if result["images"] else "nothing was measured")


def _csv_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _interrupted(what: str) -> None:
    err.print(f"edgeffnet: interrupted; {what}", markup=False)
    sys.exit(130)


@cli.command("bench")
@click.argument("bundle_dir", type=click.Path())
@click.option("--mode", type=click.Choice(["latency", "throughput"]), default="latency", show_default=True,
              help="latency: batch 1, one synchronous inference at a time; throughput: the backend's best "
                   "(OpenVINO: THROUGHPUT hint, asynchronous requests).")
@click.option("--iterations", "-n", type=COUNT, default=1024, show_default=True,
              help="Time at least this many inferences (MLPerf single-stream's minimum)...")
@click.option("--seconds", "-s", type=SECONDS, default=10.0, show_default=True, help="...and for at least this long.")
@click.option("--warmup", type=SECONDS, default=2.0, show_default=True, help="Untimed seconds of inference first.")
@click.option("--threads", type=THREADS, help="Inference threads (default: the runtime's choice).")
@click.option("--streams", type=THREADS, help="OpenVINO streams (default: what the mode's hint picks).")
@click.option("--batch", type=_whole("batch"), help="Throughput mode on a --dynamic-batch bundle: images per request.")
@click.option("--baseline", default="", help="Also measure the same model in pytorch and/or onnxruntime (CPU), "
                                             "comma-separated.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
def bench_cmd(bundle_dir, mode, iterations, seconds, warmup, threads, streams, batch, baseline, as_json) -> None:
    """Measure BUNDLE on its device: latency percentiles or images/s, GFLOP/s against the device's peak.

    The record (device, tool versions, settings, statistics) is saved as BUNDLE/bench/RUNTIME-MODE.json.
    Ctrl-C stops early and keeps what was measured, marked interrupted.
    """
    from .measure import bench, console

    s = bench.Settings(mode=mode, iterations=iterations, seconds=seconds, warmup=warmup, threads=threads,
                       streams=streams, batch=batch)
    records, interrupted = bench.run(bundle_dir, s, _csv_list(baseline),
                                     progress=lambda label: console.progress_bar(err, label))
    if as_json:
        click.echo(json.dumps([r.to_dict() | {"saved": str(r.saved_to or "")} for r in records], indent=1,
                              default=str))
    elif records:
        out.print(console.table(records))
        for r in records:
            err.print(f"saved {r.saved_to}" if r.saved_to else
                      f"warning: could not save the {r.runtime} record into the bundle", markup=False)
    if interrupted:
        _interrupted("the partial record was saved, marked interrupted" if records else "nothing was measured")


@cli.command("sweep")
@click.option("--models", "-m", help="Presets and ranges, e.g. b0-b3,lite0-lite2 (default b0-b3,lite0 when "
                                     "neither --spec nor --scaling is given).")
@click.option("--spec", "specs", multiple=True, help="A full model spec, e.g. 'b0,res=96' (repeatable).")
@click.option("--scaling", help="[BASE:]PHI,... e.g. b0:1,2: the baseline and, per phi, the compound model and the "
                                "same FLOPS budget spent on width, depth or resolution only.")
@click.option("--table3", is_flag=True, help="Add the paper's Table 3 rows (MobileNetV1/V2 and ResNet-50 scaled by "
                                             "width, depth, resolution and compound; see info --table3).")
@click.option("--target", "-t", default="cpu", show_default=True, help="Target name or path to a profile .toml.")
@click.option("--precision", "-p", help="Comma-separated, e.g. fp32,int8 (default: the target's default).")
@click.option("--mode", default="latency,throughput", show_default=True, help="Bench modes, comma-separated.")
@click.option("--baseline", default="", help="Also measure pytorch and/or onnxruntime (CPU), comma-separated.")
@click.option("--iterations", "-n", type=COUNT, default=200, show_default=True, help="Minimum timed inferences per bench.")
@click.option("--seconds", "-s", type=SECONDS, default=3.0, show_default=True, help="Minimum seconds per bench.")
@click.option("--warmup", type=SECONDS, default=1.0, show_default=True, help="Untimed seconds before each bench.")
@click.option("--threads", type=THREADS, help="Inference threads (default: the runtime's choice).")
@click.option("-o", "--output", default="results", show_default=True, type=click.Path(),
              help="Directory for the bundles (OUTPUT/bundles) and the report.")
@click.option("--weights", "-w", type=click.Choice(["pretrained", "random"]), default="pretrained",
              show_default=True, help="pretrained: the real weights where they exist here (lite0..lite2 with their "
                                      "package installed), seeded random for the rest; random: all random (a "
                                      "latency study: the outputs mean nothing).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON at the end.")
@click.option("--cluster", help="Ray head HOST:PORT of a device farm (edgeffnet farm join): each bundle is measured on "
                                "a device of its target; --target then takes a comma-separated list.")
@click.option("--task-timeout", type=FiniteFloat(0, min_open=True), default=1800.0, show_default=True,
              help="With --cluster: seconds one device may take for a bundle (compile, verify, bench).")
def sweep_cmd(models, specs, scaling, table3, target, precision, mode, baseline, iterations, seconds, warmup, threads,
              output, weights, as_json, cluster, task_timeout) -> None:
    """Build (through the stage cache) and bench models x precisions on a target, then write the report.

    Run the same command again to continue an interrupted sweep: finished items are skipped.
    """
    from pathlib import Path

    from . import targets
    from .measure import bench, console, report, sweep

    if table3:
        from .scaling import table3_specs

        specs = tuple(specs) + tuple(table3_specs())
    settings = bench.Settings(iterations=iterations, seconds=seconds, warmup=warmup, threads=threads)
    dest = Path(output)
    if cluster:  # the device farm (edgeffnet/farm): the same items on every target's devices
        from .farm.sweep import run_command

        result = run_command(models, specs, scaling, _csv_list(target), _csv_list(precision), _csv_list(mode),
                             _csv_list(baseline), settings, dest, cluster, task_timeout, weights)
    else:
        profile = targets.load(target)
        precisions = [profile.check_precision(p) for p in _csv_list(precision)] or [profile.default_precision]
        result = sweep.run(sweep.plan(models, specs, scaling, precisions, weights), target, dest, _csv_list(mode),
                           _csv_list(baseline), settings, progress=lambda label: console.progress_bar(err, label))
    try:
        rep = report.write(report.collect([dest / "bundles"], _csv_list(baseline)), dest)
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
        _interrupted(f"stopped at {result['interrupted'].spec} {result['interrupted'].precision}; "
                     f"run the same command again to continue")
    if result["failed"]:
        (item, why), more = result["failed"][0], len(result["failed"]) - 1
        raise UserError(f"{item.spec} {item.precision} failed: {why}" + (f" (and {more} more failed)" if more else ""))


@cli.command("report")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("-o", "--output", default="report", show_default=True, type=click.Path(), help="Directory to write.")
@click.option("--baselines", is_flag=True, help="Also report the baseline records (bench --baseline: PyTorch, "
                                                "ONNX Runtime on the CPU).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def report_cmd(paths, output, baselines, as_json) -> None:
    """Tables, latency-vs-FLOPs plots and one HTML page from bench records.

    PATHS are bundles, directories (searched) or bench record files. Writes report.md, report.csv,
    report.json, latency_vs_flops.png and report.html (self-contained) into OUTPUT.
    """
    from .measure import report

    rep = report.write(report.collect(list(paths), baselines=baselines), output)
    if as_json:
        click.echo(json.dumps(rep, indent=1))
        return
    out.print(report.console_table(rep))
    for note in rep["warnings"]:
        err.print(f"warning: {note}", markup=False)
    for f in rep["files"]:
        err.print(f"wrote {f}", markup=False)


@cli.command("cam")
@click.argument("args", nargs=-1, required=True, metavar="[MODEL|BUNDLE] IMAGE...")
@click.option("-o", "--output", required=True, type=click.Path(), help="Directory for the PNGs and cam.json.")
@click.option("--weights", "-w", help="Checkpoint or 'pretrained' for a MODEL spec (default with --compare: pretrained).")
@click.option("--top", type=TOP, default=3, show_default=True, help="Maps of the top-k classes per image.")
@click.option("--class", "klass", type=Whole(0, BOUNDS["num_classes"][1] - 1), help="The map of this class (ImageNet index) instead of the top-k.")
@click.option("--compare", help="Comma-separated specs: each one's top-1 map on the same photos, one grid "
                                "(the paper's Figure 7: --compare lite0,lite1,lite2). All arguments are images.")
def cam_cmd(args, output, weights, top, klass, compare) -> None:
    """Class activation maps: where in each photo the network found its classes.

    MODEL is a spec with --weights (PyTorch); a BUNDLE's maps come from its compiled artifact, beside the
    FP32 ones, with their correlation. Writes IMAGE.cam.png per image, grid.png and cam.json into -o.
    """
    from pathlib import Path

    from . import bundle, cam

    out_dir = Path(output)
    if compare:
        summary = cam.compare_models(_csv_list(compare), weights, list(args), out_dir, klass)
    elif bundle.is_bundle(Path(args[0])):
        summary = cam.maps_of_bundle(args[0], list(args[1:]), out_dir, top, klass)
        err.print(f"artifact vs FP32 maps: mean correlation {summary['mean_correlation']:.4f}", markup=False)
    else:
        summary = cam.maps_of_model(args[0], weights, list(args[1:]), out_dir, top, klass)
    err.print(f"wrote {len(summary['images'])} image(s) and {out_dir / summary['grid']}", markup=False)


@cli.command("compile")
@click.argument("bundle_dir", type=click.Path())
def compile_cmd(bundle_dir) -> None:
    """Finish BUNDLE's pending TensorRT engine on this device: build, verify against the bundle, update it."""
    from .compile_on_device import compile_on_device

    out.print(str(compile_on_device(bundle_dir).path), markup=False)


# -- search and fit: choosing for the device (edgeffnet/search/) -------------------------------------------

def _bench_options(fn):
    for option in reversed((
            click.option("--iterations", "-n", type=COUNT, default=200, show_default=True,
                         help="Minimum timed inferences per measurement."),
            click.option("--seconds", "-s", type=SECONDS, default=3.0, show_default=True,
                         help="Minimum seconds per measurement."),
            click.option("--warmup", type=SECONDS, default=1.0, show_default=True, help="Untimed seconds first."),
            click.option("--threads", type=THREADS, help="Inference threads (default: the runtime's choice)."),
            click.option("--metric", type=click.Choice(["p50", "p90", "p99"]), default="p50", show_default=True,
                         help="The latency that counts."))):
        fn = option(fn)
    return fn


@cli.command("search")
@click.argument("base", default="b0")
@click.option("--target", "-t", default="cpu", show_default=True, help="Target name or path to a profile .toml.")
@click.option("--precision", "-p", type=PRECISION, help="Default: the target's default.")
@click.option("--phi", type=FINITE, default=1.0, show_default=True, help="The phi at which splits are compared.")
@click.option("--step", type=FINITE, default=0.05, show_default=True, help="Grid step of alpha, beta and gamma.")
@click.option("--tol", type=FINITE, default=0.1, show_default=True, help="Keep |alpha*beta^2*gamma^2 - ratio| <= tol.")
@click.option("--flops-ratio", type=FINITE, default=2.0, show_default=True, help="FLOPS multiplier per unit of phi.")
@click.option("--weight", "-w", type=FINITE, default=-0.07, show_default=True, help="w in ACC x (LAT/T)^w.")
@click.option("--latency-target", type=FINITE, help="T in ms (default: the paper's coefficients' measured latency).")
@click.option("--evaluate", help="Accuracy from your command: {spec} and {output} are replaced; it writes "
                                 "{\"accuracy\": FRACTION} to {output}.")
@click.option("--data", type=click.Path(), help="Accuracy by training each candidate on this ImageFolder...")
@click.option("--val", type=click.Path(), help="...and scoring it (top-1) on this one.")
@click.option("--epochs", type=Whole(1, 10_000), default=1, show_default=True, help="Training epochs per candidate (--data).")
@click.option("--init", type=click.Choice(["scratch", "pretrained"]), default="scratch", show_default=True,
              help="--data training from scratch (as the paper) or from the base's pretrained weights (lite0).")
@click.option("--batch-size", type=_whole("batch"), default=32, show_default=True, help="--data training batch size.")
@click.option("--lr", type=FINITE, default=1e-3, show_default=True, help="--data training learning rate (AdamW).")
@click.option("--finalists", type=Whole(1, 1000), default=3, show_default=True,
              help="How many of the best are timed again against the paper's network before the choice.")
@click.option("--confirm-rounds", type=Whole(0, 1000), default=3, show_default=True,
              help="Alternating rounds of that re-timing (0: choose on the first measurements).")
@_bench_options
@click.option("-o", "--output", default="search", show_default=True, type=click.Path(), help="Results directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def search_cmd(base, target, precision, phi, step, tol, flops_ratio, weight, latency_target, evaluate, data, val,
               epochs, init, batch_size, lr, finalists, confirm_rounds, iterations, seconds, warmup, threads, metric, output,
               as_json) -> None:
    """Step 1 on the device: alpha, beta, gamma under alpha*beta^2*gamma^2 ~= 2, each split built and timed.

    Candidates are ranked by ACC x (LAT/T)^w with LAT measured on the target; without --evaluate or --data,
    by latency at equal FLOPS (and it says no accuracy was measured). Run again to continue: candidates on
    disk are not measured again.
    """
    import time
    from pathlib import Path

    from .search import console, evaluators, harness, trials

    started = time.perf_counter()
    plan = trials.SearchPlan(base=base, target=target, precision=precision, phi=phi, step=step, tol=tol,
                             ratio=flops_ratio, weight=weight, latency_target=latency_target, metric=metric,
                             confirm_rounds=confirm_rounds, finalists=finalists, out=Path(output),
                             settings=harness.BenchSettings(iterations, seconds, warmup, threads))
    evaluator = evaluators.choose(evaluate, data, val, epochs, init, batch_size, lr,
                                  echo=lambda m: err.print(m, markup=False))
    with console.candidate_progress(err, "search") as (on_candidate, echo):
        result = trials.run(plan, evaluator, echo=echo, on_candidate=on_candidate)
    err.print(f"{result['measured']} measured, {result['reused']} from disk, {len(result['failed'])} failed; "
              f"grid of {len(plan.candidates)} candidates", markup=False)
    if not result["rows"] or not any(r["paper"] for r in result["rows"]):
        if result["interrupted"]:
            _interrupted("run the same command again to continue")
        raise UserError("nothing to compare: the paper's coefficients could not be measured")
    summary = trials.summarize(plan, result["rows"])
    summary["comparison"] = None if result["interrupted"] else trials.confirm(plan, summary)
    files = trials.write(plan, result["rows"], summary, started)
    if as_json:
        click.echo(json.dumps(summary, indent=1))
    else:
        out.print(console.search_table(summary))
        for line in console.search_lines(summary, summary["comparison"]):
            out.print(line, markup=False)
        err.print("wrote " + ", ".join(str(f) for f in files), markup=False)
    if result["interrupted"]:
        _interrupted("the summary covers what was measured; run the same command again to continue")


@cli.command("fit")
@click.argument("base", required=False)
@click.option("--spec", "searched", help="Take the base and coefficients of a spec (e.g. what search chose).")
@click.option("--coefficients", help="alpha,beta,gamma (default the paper's 1.2,1.1,1.15).")
@click.option("--target", "-t", default="cpu", show_default=True, help="Target name or path to a profile .toml.")
@click.option("--precision", "-p", type=PRECISION, help="Default: the target's default.")
@click.option("--latency-ms", type=FINITE, help="The budget: the largest phi whose measured latency is within it.")
@click.option("--budgets", help="Several budgets, e.g. 2,5,10,20: the device's own family.")
@click.option("--phi-step", type=FINITE, default=0.05, show_default=True, help="Resolution of phi.")
@click.option("--phi-min", type=FINITE, default=-4.0, show_default=True, help="Smallest phi considered.")
@click.option("--phi-max", type=FINITE, default=8.0, show_default=True, help="Largest phi considered.")
@_bench_options
@click.option("-o", "--output", default="fit", show_default=True, type=click.Path(),
              help="Directory for the bundles, measurements, fit.json/csv/png.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def fit_cmd(base, searched, coefficients, target, precision, latency_ms, budgets, phi_step, phi_min, phi_max,
            iterations, seconds, warmup, threads, metric, output, as_json) -> None:
    """Step 2 on the device: the largest phi whose measured latency on TARGET is within the budget.

    A latency model (log latency against log MACs) proposes, measurements decide by bisection, and the
    answer is measured again. Prints the spec, its latency, MACs, params and the phis tried; writes the bundle.
    """
    from pathlib import Path

    from .search import console, fit, harness

    plan = fit.plan_from_options(base, searched, coefficients, target=target, precision=precision, metric=metric,
                                 step=phi_step, phi_min=phi_min, phi_max=phi_max, out=Path(output),
                                 settings=harness.BenchSettings(iterations, seconds, warmup, threads))
    wanted = fit.parse_budgets(latency_ms, budgets)
    results, failed = fit.fit_family(plan, wanted, echo=lambda m: err.print(m, markup=False))
    if not results:
        raise UserError(f"no budget could be met: {failed[0][1]}")
    files = fit.write(plan, results)
    if as_json:
        click.echo(json.dumps(results, indent=1))
    else:
        out.print(console.fit_table(results, metric))
        for r in results:
            for line in console.fit_lines(r, metric):
                out.print(line, markup=False)
        err.print("wrote " + ", ".join(str(f) for f in files), markup=False)
    if failed:
        raise UserError(f"{len(failed)} of {len(wanted)} budgets could not be met; the first: {failed[0][1]}")


# -- end of search and fit -------------------------------------------------------------------------------


from .farm.commands import farm  # noqa: E402  (edgeffnet farm join/status)

cli.add_command(farm)


class _Terminated(BaseException):
    """SIGTERM (what `timeout` and service managers send) unwinds like Ctrl-C, so staging directories go."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def main() -> None:
    from . import logs

    signal.signal(signal.SIGTERM, _on_sigterm)
    log = logs.logger()
    log.addHandler(logs.console_handler(sys.stderr))
    log.propagate = False
    try:
        cli(standalone_mode=False)
    except UserError as e:
        err.print(f"edgeffnet: error: {e}", markup=False)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        err.print("edgeffnet: interrupted", markup=False)
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("edgeffnet: interrupted; nothing half-written was left behind", markup=False)
        sys.exit(130)
    except click.UsageError as e:
        # One line like every other refusal: click's usage block would bury the reason under the synopsis.
        where = f" (see {e.ctx.command_path} --help)" if e.ctx else ""
        err.print(f"edgeffnet: error: {e.format_message().rstrip('.')}{where}", markup=False)
        sys.exit(e.exit_code)
    except _Terminated:
        err.print("edgeffnet: terminated; nothing half-written was left behind", markup=False)
        sys.exit(143)
    except ImportError as e:
        # A path that reached an optional runtime outside backends.get (which says this itself): one line.
        from .extras import missing

        error = missing(e, "this command")
        if error is None:
            raise
        err.print(f"edgeffnet: error: {error}", markup=False)
        sys.exit(error.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()

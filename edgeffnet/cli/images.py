"""`edgeffnet predict`, `eval` and `cam`: a model or bundle applied to your images."""

from __future__ import annotations

import json

import click

from edgeffnet.cli.options import json_option, output_option
from edgeffnet.cli.render import err, interrupted, out
from edgeffnet.cli.types import CLASS_INDEX, TOP, whole
from edgeffnet.core.errors import UserError


@click.command("predict")
@click.argument("bundle_dir", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top", type=TOP, default=5, show_default=True, help="How many classes to print per image.")
@json_option()
def predict(bundle_dir, images, top, as_json) -> None:
    """Run a bundle's compiled artifact on IMAGES with the bundle's preprocessing; print the top classes."""
    from edgeffnet.workflows.predict import predict as run_predict

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


@click.command("eval")
@click.argument("bundle_dir", type=click.Path())
@click.option(
    "--data",
    required=True,
    type=click.Path(),
    help="Images: a folder with one sub-folder per class (named by WordNet ID, class index or class "
    "name), a CSV of path,label rows, or a folder of unlabelled images (agreement only).",
)
@click.option("--classes", type=click.Path(), help="A fine-tuned head's class names, one per line, in its order.")
@click.option("--batch", type=whole("batch"), default=32, show_default=True, help="Images loaded and run per step.")
@json_option("Print the result as JSON.")
def eval_cmd(bundle_dir, data, classes, batch, as_json) -> None:
    """Accuracy of BUNDLE's artifacts on your images, paired with its FP32 ONNX graph (onnxruntime).

    Top-1/top-5 of FP32 and of each artifact (precision graph, compiled artifact), the accuracy drop with
    Newcombe's paired 95% interval and the exact McNemar p-value, and agreement with FP32. The result is
    saved as BUNDLE/eval/NAME.json; Ctrl-C keeps what was measured, marked partial.
    """
    from edgeffnet.measure import console, evaluate

    result, saved = evaluate.evaluate(
        bundle_dir, data, classes, batch, progress=lambda label: console.progress_bar(err, label)
    )
    if as_json:
        click.echo(json.dumps(result | {"saved": str(saved or "")}, indent=1))
    elif result["images"]:
        out.print(evaluate.table(result))
    for note in result["notes"]:
        err.print(f"note: {note}", markup=False)
    if result["model"]["random_weights"]:
        err.print(
            "warning: this bundle has seeded random weights (a latency study): its accuracy means nothing", markup=False
        )
    if result["skipped_count"]:
        err.print(
            f"warning: {result['skipped_count']} unreadable image(s) skipped, e.g. {result['skipped_unreadable'][0]}",
            markup=False,
        )
    if result["images"] and saved:
        err.print(f"saved {saved}", markup=False)
    if result["partial"]:
        done = f"the partial result ({result['images']} of {result['images_total']} images)"
        interrupted(
            f"{done} was saved, marked partial"
            if saved
            else f"{done} could not be saved"
            if result["images"]
            else "nothing was measured"
        )
    if not saved:  # the table was shown, but a result that is not kept must not look like one that is
        raise UserError(
            f"could not save the result into {bundle_dir}/eval (read-only or full); "
            f"the table above is all that is left of it"
        )


@click.command("cam")
@click.argument("args", nargs=-1, required=True, metavar="[MODEL|BUNDLE] IMAGE...")
@output_option("Directory for the PNGs and cam.json.", required=True)
@click.option(
    "--weights", "-w", help="Checkpoint or 'pretrained' for a MODEL spec (default with --compare: pretrained)."
)
@click.option("--top", type=TOP, default=3, show_default=True, help="Maps of the top-k classes per image.")
@click.option("--class", "klass", type=CLASS_INDEX, help="The map of this class (ImageNet index) instead of the top-k.")
@click.option(
    "--compare",
    multiple=True,
    help="Specs: each one's top-1 map on the same photos, one grid (the paper's Figure 7: --compare "
    "lite0,lite1,lite2). A part with '=' belongs to the spec before it ('lite0,res=96,lite1' is two "
    "specs); ';' or a repeated --compare also separates. All arguments are images.",
)
def cam_cmd(args, output, weights, top, klass, compare) -> None:
    """Class activation maps: where in each photo the network found its classes.

    MODEL is a spec with --weights (PyTorch); a BUNDLE's maps come from its compiled artifact, beside the
    FP32 ones, with their correlation. Writes IMAGE.cam.png per image, grid.png and cam.json into -o.
    """
    from pathlib import Path

    from edgeffnet import bundle
    from edgeffnet.workflows import cam

    out_dir = Path(output)
    if compare:
        summary = cam.compare_models(cam.compare_specs(compare), weights, list(args), out_dir, klass)
    elif bundle.is_bundle(Path(args[0])):
        summary = cam.maps_of_bundle(args[0], list(args[1:]), out_dir, top, klass)
        err.print(f"artifact vs FP32 maps: mean correlation {summary['mean_correlation']:.4f}", markup=False)
    else:
        summary = cam.maps_of_model(args[0], weights, list(args[1:]), out_dir, top, klass)
    err.print(f"wrote {len(summary['images'])} image(s) and {out_dir / summary['grid']}", markup=False)


COMMANDS = (predict, eval_cmd, cam_cmd)

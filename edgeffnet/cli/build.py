"""`edgeffnet build` and `edgeffnet compile`: a spec into a verified bundle, and a pending engine finished on its device."""

from __future__ import annotations

import click

from edgeffnet.cli.options import output_option, precision_option, spec_help, target_option
from edgeffnet.cli.render import out
from edgeffnet.cli.types import FiniteFloat, whole
from edgeffnet.pipeline.options import BuildOptions

_D = BuildOptions()  # every default written once, in pipeline/options.py


@click.command("build", epilog=spec_help())
@click.argument("spec")
@target_option
@precision_option
@click.option("--weights", "-w", help="Checkpoint (.pth/.pt) or 'pretrained' (lite0..lite2). Default: seeded random.")
@click.option(
    "--num-classes", type=whole("num_classes"), help="Classifier width (random init; must match a checkpoint)."
)
@click.option("--resolution", type=whole("resolution"), help="Input resolution in pixels (default: the spec's).")
@click.option("--batch", type=whole("batch"), default=_D.batch, show_default=True, help="Static batch size.")
@click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch dimension.")
@click.option(
    "--opset", type=whole("opset"), default=_D.opset, show_default=True, help="ONNX opset (13 is read by every target)."
)
@click.option("--seed", type=whole("seed"), default=_D.seed, show_default=True, help="Seed for random weights.")
@click.option(
    "--views", type=whole("views"), default=_D.views, show_default=True, help="Real-photo views used for parity checks."
)
@click.option("--no-cache", is_flag=True, help="Rebuild every stage instead of reusing finished ones.")
@click.option(
    "--require-engine",
    is_flag=True,
    help="Fail instead of leaving a TensorRT engine pending on a host without TensorRT.",
)
@click.option(
    "--calib",
    type=click.Path(),
    help="INT8 calibration data: a folder of images (jpg/png/bmp/webp, "
    "searched recursively) or an .npy/.npz of preprocessed tensors. "
    "Default: the real photos in calibration/photos.toml.",
)
@click.option(
    "--calib-size", type=whole("calib_size"), default=_D.calib_size, show_default=True, help="Calibration views."
)
@click.option(
    "--calib-method",
    type=click.Choice(["minmax", "percentile", "entropy"]),
    help="INT8 range method (default: the one that measures best).",
)
@click.option(
    "--min-agreement",
    type=FiniteFloat(0, 1),
    default=_D.min_agreement,
    show_default=True,
    help="INT8 of trained weights fails below this top-1 agreement with FP32 on verification views.",
)
@click.option("--allow-drop", is_flag=True, help="Keep an INT8 build whose agreement is below --min-agreement.")
@click.option(
    "--distill",
    is_flag=True,
    help="INT8 of trained weights: self-distil the Q/DQ activation scales and biases toward FP32 (about "
    "100 s on Lite0); kept only where it follows FP32 better on held-out photos.",
)
@click.option(
    "--fidelity-views",
    type=whole("fidelity_views"),
    help="Verification views for the fidelity report (FP16/INT8); default 200 for trained weights, "
    "48 for random ones (which make no agreement claim).",
)
@click.option(
    "--val",
    type=click.Path(),
    help="Labelled validation images (as edgeffnet eval --data): FP16/INT8 are then gated on their top-1 "
    "accuracy drop against FP32 instead of agreement.",
)
@click.option(
    "--max-drop",
    type=FiniteFloat(0, 100),
    default=_D.max_drop,
    show_default=True,
    help="With --val: the largest top-1 accuracy drop, in percentage points, a build may keep "
    "(--allow-drop keeps a larger one).",
)
@click.option(
    "--classes",
    type=click.Path(),
    help="With --val: a fine-tuned head's class names, one per line, in its order (as edgeffnet eval --classes).",
)
@output_option("Bundle directory (default build/SPEC-TARGET-PRECISION).")
def build(spec, target, precision, weights, output, no_cache, **options) -> None:
    """Build SPEC for a target: export, simplify, verify and compile into a bundle directory."""
    from edgeffnet.pipeline import build as run_build

    b = run_build(
        spec, target=target, precision=precision, weights=weights, output=output, cache=not no_cache, **options
    )
    out.print(str(b.path), markup=False)  # a path is text: rich would eat a "[x]" in it


@click.command("compile")
@click.argument("bundle_dir", type=click.Path())
def compile_cmd(bundle_dir) -> None:
    """Finish BUNDLE's pending TensorRT engine on this device: build, verify against the bundle, update it."""
    from edgeffnet.workflows.compile_on_device import compile_on_device

    out.print(str(compile_on_device(bundle_dir).path), markup=False)


COMMANDS = (build, compile_cmd)

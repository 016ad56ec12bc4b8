"""Stage 1, reference: a spec and weights -> the eval-ready PyTorch module every later stage is checked against."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from edgeffnet.core.errors import UserError
from edgeffnet.core.preprocess import Preprocess, imagenet_recipe, tf_lite_recipe
from edgeffnet.network import weights as _weights
from edgeffnet.network.model import TF_NUMERICS, TORCH_NUMERICS, EfficientNet, build, randomise
from edgeffnet.specs.scaling import ModelSpec, parse_spec


def make_model(
    spec: ModelSpec, w: _weights.Weights | None, num_classes: int | None = None, seed: int = 0
) -> EfficientNet:
    """The network for `spec` with resolved weights `w`, or seeded random weights when `w` is None.

    The model carries `.preprocess` (its input recipe) and `.weights_info` (source, layout, sha256).
    """
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise UserError(f"num_classes must be a positive whole number, got {num_classes!r}")
    if w is None:
        recipe = input_recipe(spec, None)
        numerics = TF_NUMERICS if spec.family == "lite" else TORCH_NUMERICS
        model = randomise(build(spec, num_classes or 1000, numerics), seed, _statistics_images(spec, recipe))
        model.preprocess, model.weights_info = recipe, None
        return model
    if num_classes is not None and num_classes != w.num_classes:
        raise UserError(
            f"--num-classes {num_classes} does not match the checkpoint's classifier "
            f"({w.num_classes} classes); drop the option or pass matching weights"
        )
    model = build(spec, w.num_classes, w.numerics)
    _load(model, w)
    model.preprocess = input_recipe(spec, w)
    model.weights_info = w
    return model


def input_recipe(spec: ModelSpec, w: _weights.Weights | None) -> Preprocess:
    """The input recipe: the weights' own, at the spec's resolution; for random weights, the family's."""
    if w is None:
        return (tf_lite_recipe if spec.family == "lite" else imagenet_recipe)(spec.resolution)
    return w.preprocess if w.preprocess.crop == spec.resolution else w.preprocess.with_resolution(spec.resolution)


def create_model(
    spec: str | ModelSpec, weights: str | Path | None = None, num_classes: int | None = None, seed: int = 0
) -> EfficientNet:
    """Build the network for `spec`, load `weights` (a checkpoint path or "pretrained"), ready for eval.

    The head is sized from the checkpoint when it holds one; `num_classes` must then agree with it.
    Without weights the network is randomly initialised from `seed` (the same seed gives the same
    weights), with BatchNorm statistics estimated on real photos so activations keep a trained
    network's scale.
    """
    s = parse_spec(spec)
    return make_model(s, _weights.resolve(weights, s), num_classes, seed)


# BatchNorm statistics need this many samples per channel in the network's smallest feature map.
# Each BN divides by a variance estimated on the statistics photos; a noisy estimate amplifies other
# photos on average (E[1/var] > 1/var), and the bias compounds layer after layer. At 224 px B0's last
# maps are 7x7 and 8 photos suffice; at 64 px they are 2x2, 8 photos give 32 samples per channel and
# B0's logits on the verification photos reach ~100 (FP32 exports then miss 1e-4 by rounding alone).
STATISTICS_SAMPLES = 1024


def _statistics_images(spec: ModelSpec, recipe: Preprocess) -> torch.Tensor:
    """Real photos (the calibration set, never the verification one) for a random model's BN statistics:
    at least 8 views, more at low resolution so the smallest feature map still gives enough samples."""
    from edgeffnet.network.photos import calibration_photos, to_input, views

    side = math.ceil(spec.resolution / spec.output_stride)
    count = max(8, math.ceil(STATISTICS_SAMPLES / side**2))
    return torch.from_numpy(to_input(views(calibration_photos(), count, recipe), recipe))


def check_weights(spec: ModelSpec, w: _weights.Weights) -> None:
    """Refuse a checkpoint of another architecture before any work: shapes only, on the meta device."""
    with torch.device("meta"):
        model = EfficientNet(spec, w.num_classes, w.numerics)
    _check_fits(model, w)


def _check_fits(model: EfficientNet, w: _weights.Weights) -> None:
    own = model.state_dict()
    for key, tensor in w.state_dict.items():
        if key not in own:
            raise UserError(
                f"checkpoint tensor '{key}' has no place in a {model.spec.name} network; "
                f"is the spec right for these weights?"
            )
        if own[key].shape != tensor.shape:
            raise UserError(
                f"checkpoint tensor '{key}' has shape {tuple(tensor.shape)} but {model.spec.name} "
                f"needs {tuple(own[key].shape)}; is the spec right for these weights?"
            )
    missing = [k for k in own if k not in w.state_dict and not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(
            f"checkpoint lacks '{missing[0]}' (and {len(missing) - 1} more) needed by "
            f"{model.spec.name}; is the spec right for these weights?"
        )


def _load(model: EfficientNet, w: _weights.Weights) -> None:
    _check_fits(model, w)
    model.load_state_dict(w.state_dict, strict=False)


def save_weights(model: EfficientNet, path: str | Path) -> None:
    """Save `model` in edgeffnet's own checkpoint layout, with its numerics and preprocessing recipe."""
    _weights.save(model, path)

"""edgeffnet: compound-scaled EfficientNets compiled and measured for the device you ship to."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .model import EfficientNet, Numerics, count_macs, count_params
from .preprocess import Preprocess
from .scaling import ModelSpec, parse_spec, with_resolution
from . import weights as _weights

__version__ = "0.1.0"
__all__ = ["create_model", "spec", "ModelSpec", "EfficientNet", "Preprocess", "UserError", "count_macs",
           "count_params", "save_weights"]


def spec(text: str | ModelSpec) -> ModelSpec:
    """The scaled specification for a model-spec string (see `edgeffnet info --help` for the grammar)."""
    return parse_spec(text)


def create_model(spec: str | ModelSpec, weights: str | Path | None = None, num_classes: int | None = None,
                 seed: int = 0) -> EfficientNet:
    """Build the network for `spec`, load `weights` (a checkpoint path or "pretrained"), ready for eval.

    Without weights the network is randomly initialised from `seed` (deterministic: the same seed gives
    the same weights), with BatchNorm statistics estimated so activations keep a realistic scale.

    The head is sized from the checkpoint when it holds one; `num_classes` must then agree with it.
    The model carries `.preprocess` (its input recipe) and `.weights_info` (source, layout, sha256).
    """
    from .model import build, randomise, TF_NUMERICS, TORCH_NUMERICS
    from .preprocess import imagenet_recipe, tf_lite_recipe

    s = parse_spec(spec)
    w = _weights.resolve(weights, s)
    if w is None:
        classes = num_classes or 1000
        _check_classes(classes)
        numerics = TF_NUMERICS if s.family == "lite" else TORCH_NUMERICS
        model = randomise(build(s, classes, numerics), seed)
        model.preprocess = (tf_lite_recipe if s.family == "lite" else imagenet_recipe)(s.resolution)
        model.weights_info = None
        return model
    if num_classes is not None and num_classes != w.num_classes:
        raise UserError(f"--num-classes {num_classes} does not match the checkpoint's classifier "
                        f"({w.num_classes} classes); drop the option or pass matching weights")
    model = build(s, w.num_classes, w.numerics)
    _load(model, w)
    model.preprocess = w.preprocess.with_resolution(s.resolution) if w.preprocess.crop != s.resolution else w.preprocess
    model.weights_info = w
    return model


def _check_classes(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise UserError(f"num_classes must be a positive whole number, got {n!r}")


def _load(model: EfficientNet, w: _weights.Weights) -> None:
    own = model.state_dict()
    for key, tensor in w.state_dict.items():
        if key not in own:
            raise UserError(f"checkpoint tensor '{key}' has no place in a {model.spec.name} network; "
                            f"is the spec right for these weights?")
        if own[key].shape != tensor.shape:
            raise UserError(f"checkpoint tensor '{key}' has shape {tuple(tensor.shape)} but {model.spec.name} "
                            f"needs {tuple(own[key].shape)}; is the spec right for these weights?")
    missing = [k for k in own if k not in w.state_dict and not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(f"checkpoint lacks '{missing[0]}' (and {len(missing) - 1} more) needed by "
                        f"{model.spec.name}; is the spec right for these weights?")
    model.load_state_dict(w.state_dict, strict=False)


def save_weights(model: EfficientNet, path: str | Path) -> None:
    """Save `model` in edgeffnet's own checkpoint layout, with its numerics and preprocessing recipe."""
    _weights.save(model, path)

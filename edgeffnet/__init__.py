"""edgeffnet: compound-scaled EfficientNets compiled and measured for the device you ship to."""

from __future__ import annotations

from .errors import UserError
from .graph import create_model, save_weights
from .model import EfficientNet, Numerics, count_macs, count_params
from .preprocess import Preprocess
from .scaling import ModelSpec, parse_spec

__version__ = "0.1.0"
__all__ = ["create_model", "spec", "ModelSpec", "EfficientNet", "Numerics", "Preprocess", "UserError",
           "count_macs", "count_params", "save_weights"]


def spec(text: str | ModelSpec) -> ModelSpec:
    """The scaled specification for a model-spec string (see `edgeffnet info --help` for the grammar)."""
    return parse_spec(text)

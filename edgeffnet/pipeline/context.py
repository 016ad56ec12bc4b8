"""The read-only context every build stage reads (the artifact each stage hands on is core.artifact's)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeffnet.core.errors import UserError
from edgeffnet.core.layout import REFERENCE, SIMPLIFIED
from edgeffnet.core.verify import verify
from edgeffnet.pipeline.options import BuildOptions


@dataclass(frozen=True)
class BuildContext:
    """One build: what to build, for which target, with which options, into which directory.

    Fields are fixed when the build starts; the data several stages share (the PyTorch model, the
    calibration set, the fidelity views and their FP32 logits) is loaded on first use and kept."""

    spec: object  # scaling.ModelSpec
    target: object  # targets.Target
    precision: str
    weights: object | None  # weights.Weights; None: seeded random weights
    options: BuildOptions
    output: Path  # where the bundle ends up
    log: logging.Logger
    dir: Path | None = None  # the staging directory stages write into
    keep_float: tuple[str, ...] = ()  # INT8 layers the escalation (pipeline/escalate.py) keeps in float
    _loaded: dict = field(default_factory=dict, repr=False, compare=False)

    def in_dir(self, staging: Path) -> BuildContext:
        return dataclasses.replace(self, dir=staging)

    def _once(self, name: str, make):
        if name not in self._loaded:
            self._loaded[name] = make()
        return self._loaded[name]

    # -- facts derived from the fields ---------------------------------------------------------------
    @property
    def trained(self) -> bool:
        return self.weights is not None

    @property
    def fixed_batch(self) -> int | None:
        return None if self.options.dynamic_batch else self.options.batch

    @property
    def preprocess(self):
        from edgeffnet.network.reference import input_recipe

        return input_recipe(self.spec, self.weights)

    # -- shared data, loaded once ------------------------------------------------------------------------
    @property
    def model(self):
        """The PyTorch reference (eval mode), the first stage's work; later stages export it."""
        from edgeffnet.network.reference import make_model

        o = self.options
        return self._once("model", lambda: make_model(self.spec, self.weights, o.num_classes, o.seed))

    @property
    def calibration(self):
        """The INT8 calibration set (the precision stage and OpenVINO's route choice share it)."""
        from edgeffnet.precision import calibration

        def load():
            cal = calibration.load(self.options.calib, self.options.calib_size, self.preprocess)
            for w in cal.warnings:
                self.log.warning(f"warning: {w}")
            return cal

        return self._once("calibration", load)

    @property
    def fidelity_data(self) -> tuple[np.ndarray, np.ndarray]:
        """Verification views (200 by default for trained weights) and the FP32 graph's logits for them,
        shared by every fidelity row."""
        from edgeffnet.precision import fidelity

        def load():
            x = fidelity.views(self.options.fidelity_view_count(self.trained), self.preprocess)
            return x, fidelity.fp32_reference(self.dir / SIMPLIFIED, x)

        return self._once("fidelity", load)

    @property
    def tuning_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The calibration tuning views and the FP32 graph's logits for them: the precision stage's method
        choice and OpenVINO's route choice compare with the same reference, run once (B3: ~20 s a run)."""
        from edgeffnet.backends import onnxruntime as ort_backend

        def load():
            x = self.calibration.tuning(self.preprocess)
            return x, ort_backend.run_all(self.dir / SIMPLIFIED, x, literal=True)

        return self._once("tuning", load)

    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """The verification views and PyTorch's logits for them, as the first stage stored them."""
        from edgeffnet.network.photos import to_input

        data = np.load(self.dir / REFERENCE)
        return to_input(data["views"], self.preprocess), data["logits"]

    def verify(self, stage: str, run, precision: str) -> dict:
        """Run the stage's artifact on the reference views; stop the build when it misses its tolerance."""
        x, ref = self.reference()
        return verify(stage, run, x, ref, self.fixed_batch, precision, self.trained)

    def __post_init__(self):
        if self.precision not in self.target.precisions:
            raise UserError(f"target '{self.target.name}' does not support {self.precision}")

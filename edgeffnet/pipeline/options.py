"""Every build option with its default, written once: the CLI, the Python API and the stages read them here."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from edgeffnet.core.errors import UserError

CALIB_METHODS = ("minmax", "percentile", "entropy")

# The bounds of every whole-number option (the CLI's click.IntRange reads them too). Past them a build
# cannot be what anyone meant: a 10^20-wide classifier, or a batch no memory holds.
BOUNDS = {
    "num_classes": (1, 100_000),
    "resolution": (32, 4096),
    "batch": (1, 1024),
    "opset": (7, 25),
    "seed": (0, 2**63 - 1),
    "views": (1, 10_000),
    "calib_size": (1, 10_000),
    "fidelity_views": (1, 10_000),
}
# Tensors one build holds at once (a batch, the parity views, the calibration or fidelity set), each checked
# before any work: --calib-size 10000 at 4096 px would be 2 TB.
TENSOR_BYTES_MAX = 4 << 30


@dataclass(frozen=True)
class BuildOptions:
    num_classes: int | None = None  # classifier width: random init; must match a checkpoint's
    resolution: int | None = None  # input pixels; None: the spec's
    batch: int = 1  # static batch of the exported graph
    dynamic_batch: bool = False
    opset: int = 13  # the ONNX opset every target's parser reads (TensorRT 8.2 stops at 13)
    seed: int = 0  # random weights
    views: int = 8  # real-photo views for the parity checks of every stage
    cache: bool = True  # reuse finished stages from the stage cache
    require_engine: bool = False  # a TensorRT engine left pending (no TensorRT here) is an error
    # Reduced precision (fp16/int8) only:
    calib: str | None = None  # a folder of images or an .npy/.npz of tensors; None: calibration/photos.toml
    calib_size: int = 300  # calibration views
    calib_method: str | None = None  # None: the range method that measures best
    min_agreement: float = 0.98  # INT8 of trained weights fails below this top-1 agreement with FP32
    allow_drop: bool = False  # keep an INT8 build under min_agreement
    distill: bool = (
        False  # INT8 of trained weights: try self-distilling the Q/DQ scales and biases (precision/distill.py)
    )
    fidelity_views: int | None = None  # None: FIDELITY_VIEWS_TRAINED or FIDELITY_VIEWS_RANDOM
    val: str | None = None  # labelled images: fp16/int8 are gated on the top-1 accuracy drop instead
    max_drop: float = 1.0  # with val: the largest top-1 accuracy drop (percentage points) a build keeps
    classes: str | None = None  # with val: a fine-tuned head's class names, one per line (as eval --classes)

    def __post_init__(self):
        for name, (low, high) in BOUNDS.items():
            v = getattr(self, name)
            if v is None and name in ("num_classes", "resolution", "fidelity_views"):
                continue
            if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
                raise UserError(f"--{name.replace('_', '-')} must be a whole number in {low}..{high}, got {v!r}")
        if not (
            isinstance(self.min_agreement, (int, float))
            and math.isfinite(self.min_agreement)
            and 0.0 <= self.min_agreement <= 1.0
        ):
            raise UserError(f"--min-agreement is a fraction between 0 and 1, got {self.min_agreement}")
        if not (
            isinstance(self.max_drop, (int, float))
            and not isinstance(self.max_drop, bool)
            and math.isfinite(self.max_drop)
            and 0.0 <= self.max_drop <= 100.0
        ):
            raise UserError(f"--max-drop is in percentage points between 0 and 100, got {self.max_drop}")
        if self.calib_method not in (None, *CALIB_METHODS):
            raise UserError(f"--calib-method must be one of {', '.join(CALIB_METHODS)}, got {self.calib_method!r}")

    @classmethod
    def from_kwargs(cls, options: dict) -> BuildOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UserError(f"unknown build option '{unknown[0]}'; known: {', '.join(sorted(known))}")
        return cls(**options)

    def check_memory(self, resolution: int, precision: str, trained: bool) -> None:
        """Refuse, before any work, a set of tensors that no memory holds (N x 3 x res x res float32)."""
        one = 3 * resolution * resolution * 4
        sets = {"--batch": self.batch, "--views": self.views}
        if precision != "fp32":
            sets |= {"--calib-size": self.calib_size, "--fidelity-views": self.fidelity_view_count(trained)}
        for option, n in sets.items():
            if n * one > TENSOR_BYTES_MAX:
                raise UserError(
                    f"{option} {n} at {resolution} px needs {n * one / 2**30:.1f} GiB of input tensors; "
                    f"at most {TENSOR_BYTES_MAX // one} fit in {TENSOR_BYTES_MAX >> 30} GiB: ask for fewer"
                )

    def fidelity_view_count(self, trained: bool) -> int:
        return self.fidelity_views or (FIDELITY_VIEWS_TRAINED if trained else FIDELITY_VIEWS_RANDOM)

    def manifest_dict(self, precision: str) -> dict:
        """What the manifest records: the graph options, and the precision options where they applied."""
        d = asdict(self)
        graph = {k: d[k] for k in ("batch", "dynamic_batch", "opset", "views")}
        if self.require_engine:
            graph["require_engine"] = True
        if precision == "fp32":
            return graph
        return (
            graph
            | {
                k: d[k]
                for k in (
                    "calib",
                    "calib_size",
                    "calib_method",
                    "min_agreement",
                    "allow_drop",
                    "distill",
                    "fidelity_views",
                )
            }
            | ({"val": self.val, "max_drop": self.max_drop, "classes": self.classes} if self.val else {})
        )


FIDELITY_VIEWS_TRAINED = 200
FIDELITY_VIEWS_RANDOM = 48  # random weights make no agreement claim: enough views to report, fewer to wait for

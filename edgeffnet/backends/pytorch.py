"""PyTorch eager on the CPU: the bench baseline, the model the bundle was built from rebuilt from its
manifest (spec, resolution and weights; random weights from the same seed).

Its "artifact" is the spec and weights the manifest names: `compile` has nothing to write, and `load`
rebuilds the module. Only this backend needs torch; it is imported when a baseline asks for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeffnet.backends import RunSettings
from edgeffnet.core.artifact import Artifact
from edgeffnet.core.errors import UserError
from edgeffnet.core.layout import MANIFEST
from edgeffnet.core.untrusted import read_json


class Runner:
    def __init__(self, manifest: dict, threads: int | None):
        try:
            import torch
        except ImportError:
            raise UserError(
                "the pytorch baseline needs PyTorch, which this device-side install lacks; "
                "pip install 'edgeffnet[build]' or drop --baseline pytorch"
            ) from None
        from edgeffnet.network import weights as _weights
        from edgeffnet.network.reference import make_model
        from edgeffnet.specs.scaling import parse_spec, with_resolution

        if threads:
            torch.set_num_threads(threads)
        spec = with_resolution(parse_spec(manifest["spec"]["spec"]), manifest["spec"]["resolution"])
        w = manifest["weights"]
        if w.get("random_init"):
            resolved = None
        else:
            source = "pretrained" if str(w["source"]).startswith("pretrained:") else w["source"]
            if source != "pretrained" and not Path(source).is_file():
                raise UserError(f"--baseline pytorch needs the bundle's weights, which are no longer at '{source}'")
            resolved = _weights.resolve(source, spec)
        self.model = make_model(spec, resolved, manifest["num_classes"], w.get("seed", 0))
        self.torch, self.device = torch, "CPU"

    def run(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    def bound(self, x: np.ndarray):
        t, model, torch = self.torch.from_numpy(np.ascontiguousarray(x)), self.model, self.torch

        def run():
            with torch.inference_mode():
                return model(t)

        return run

    def queue(self, x: np.ndarray) -> None:
        return None

    def describe(self) -> dict:
        return {
            "runtime": "pytorch",
            "version": self.torch.__version__,
            "mode": "eager, inference_mode",
            "threads": self.torch.get_num_threads(),
        }


def compile(ctx, graph):
    """Nothing to compile: PyTorch runs the module the reference stage built."""
    return Artifact("compile", None, {"files": [], "runs": "the PyTorch module from the manifest's spec and weights"})


def load(bundle: Path, target, precision: str, settings: RunSettings | None = None) -> Runner:
    if settings is not None and settings.outputs:
        raise UserError("the PyTorch baseline exposes no extra outputs; load the bundle with onnxruntime or openvino")
    # The bench opened (and checked) the bundle before asking for a baseline; this reads the same manifest.
    manifest = read_json(Path(bundle) / MANIFEST, what="bundle manifest")
    return Runner(manifest, (settings or RunSettings()).threads)

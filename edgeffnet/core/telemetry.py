"""Third-party telemetry off, by default: a build or a prediction calls no one's host and writes nothing
outside -o, the cache and the temp directory.

OpenVINO's tools and NNCF send usage events (and keep a client id and counters under ~/intel) unless a
consent file says no; there is no environment switch, so its consent check is made to decline as its
module loads. ONNX Runtime (1.32 on Linux too) keeps a device id and an event store under ~/.cache/Microsoft
unless ORT_DISABLE_TELEMETRY is set: it is set (a user's own value wins), and its telemetry events are
switched off as it loads. Neither is imported here:
`import edgeffnet` stays light, and the switch happens only if and when the library is used.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys


def _decline_openvino(module) -> None:
    declined = module.ConsentCheckResult.DECLINED
    module.OptInChecker.check = lambda self, *args, **kwargs: declined


def _disable_onnxruntime(module) -> None:
    off = getattr(module, "disable_telemetry_events", None)
    if off is not None:
        off()


AFTER_LOAD = {"openvino_telemetry.utils.opt_in_checker": _decline_openvino, "onnxruntime": _disable_onnxruntime}


class _OptOut(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the normal loader of the modules above so the switch runs right after them."""

    def find_spec(self, name, path=None, target=None):
        if name not in AFTER_LOAD:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        load, switch = spec.loader.exec_module, AFTER_LOAD[name]

        def exec_module(module):
            load(module)
            try:
                switch(module)
            except Exception:  # noqa: BLE001 - another version of the library: it runs as it would without us
                pass

        spec.loader.exec_module = exec_module
        return spec


def off() -> None:
    """Install the switch once (before either library is imported) and apply it to any already loaded."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    if not any(isinstance(f, _OptOut) for f in sys.meta_path):
        sys.meta_path.insert(0, _OptOut())
    for name, switch in AFTER_LOAD.items():
        if name in sys.modules:
            try:
                switch(sys.modules[name])
            except Exception:  # noqa: BLE001
                pass

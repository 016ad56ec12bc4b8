"""The timing loop the benchmark scripts share: compiled IRs timed in one interleaved loop, so load from
other processes on a shared machine hits every variant alike."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import openvino as ov


def interleaved_p50(xmls: dict[str, Path], hints: dict[str, str], iterations: int, warmup: int = 30) -> dict[str, float]:
    """p50 in ms per variant: synchronous, batch as compiled, LATENCY hint, inference precision `hints[k]`."""
    core = ov.Core()
    reqs = {}
    for k, xml in xmls.items():
        c = core.compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": hints[k], "PERFORMANCE_HINT": "LATENCY"})
        r = c.create_infer_request()
        r.set_input_tensor(ov.Tensor(np.random.default_rng(0).standard_normal(tuple(c.inputs[0].shape)).astype(np.float32)))
        for _ in range(warmup):
            r.infer()
        reqs[k] = r
    times: dict[str, list[float]] = {k: [] for k in reqs}
    for _ in range(iterations):
        for k, r in reqs.items():
            t = time.perf_counter()
            r.infer()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v) * 1e3) for k, v in times.items()}

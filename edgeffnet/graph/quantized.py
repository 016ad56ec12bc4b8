"""The arithmetic of symmetric per-channel weight quantization, shared by the Q/DQ pass and the runtimes'
encodings of it (OpenVINO's 7-bit weights): what rounding makes of a weight, and the bias shift it causes."""

from __future__ import annotations

import numpy as np
import onnx


def rounded(w: np.ndarray, scale: np.ndarray, axis: int, qmax: int = 127) -> np.ndarray:
    """What a per-channel symmetric Q/DQ pair makes of weight `w`: codes in [-qmax, qmax] times `scale`."""
    s = np.expand_dims(scale, tuple(a for a in range(w.ndim) if a != axis))
    return np.clip(np.round(w / s), -qmax, qmax) * s


def output_shift(node: onnx.NodeProto, dw: np.ndarray, mean_in: np.ndarray, axis: int) -> np.ndarray:
    """E[(Wq - W) x] per output channel, taking the input as its per-channel mean (borders ignored)."""
    if node.op_type == "Gemm":
        return (dw if axis == 0 else dw.T) @ mean_in
    groups = next((a.i for a in node.attribute if a.name == "group"), 1)
    cout, cin_per_group = dw.shape[0], dw.shape[1]
    taps = dw.reshape(cout, cin_per_group, -1).sum(axis=2)  # (Cout, Cin/G)
    group_of = np.arange(cout) // (cout // groups)
    inputs = mean_in[group_of[:, None] * cin_per_group + np.arange(cin_per_group)[None, :]]
    return (taps * inputs).sum(axis=1)

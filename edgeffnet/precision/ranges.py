"""Calibration statistics and the three ways to turn them into int8 ranges.

Statistics are per activation tensor: the absolute maximum and a histogram of |x| over [0, absmax]
(two passes of ONNX Runtime over the calibration set with those tensors exposed as outputs). Symmetric
quantization only needs |x|, which is what TensorRT's zero-point-0 rule allows anyway.

- minmax: the largest |x| seen;
- percentile: the |x| below which 99.99% of the values fall;
- entropy: the clipping threshold whose 128-level quantized histogram is closest (Kullback-Leibler) to
  the original, TensorRT's calibration algorithm.
"""

from __future__ import annotations

import numpy as np
import onnx

from edgeffnet.backends.onnxruntime import Runner, free_batch

BINS = 2048
PERCENTILE = 99.99
METHODS = ("minmax", "percentile", "entropy")


def _runner(model: onnx.ModelProto, tensors: list[str]) -> Runner:
    """ONNX Runtime with `tensors` as extra outputs, literal: exposed tensors must be the graph's own."""
    return Runner(free_batch(model).SerializeToString(), literal=True, outputs=tuple(tensors))


def _batches(data: np.ndarray, step: int = 16):
    for i in range(0, len(data), step):
        yield data[i : i + step]


SAMPLES_PER_CALL = 16384  # |x| values kept per tensor per ONNX Runtime call, for the histograms


def collect(model: onnx.ModelProto, tensors: list[str], data: np.ndarray) -> dict:
    """Per-tensor absmax, |x| histograms (BINS bins over [0, absmax]) and per-channel means (axis 1,
    for bias correction) over the calibration data, in one pass.

    The maxima and means see every value. The histograms are built at the end, once the maxima are
    known, from an evenly strided sample of each output (300 views give ~300k values per tensor): a
    second pass over the data would cost as much again for the same shape of histogram."""
    runner = _runner(model, tensors)
    absmax = np.zeros(len(tensors))
    sums: list = [0.0] * len(tensors)
    samples: list[list[np.ndarray]] = [[] for _ in tensors]
    count = 0
    for chunk in _batches(data):
        named = runner.run_outputs(chunk)[1]
        for k, o in enumerate(named[t] for t in tensors):
            a = np.abs(o)
            absmax[k] = max(absmax[k], float(a.max()))
            sums[k] = sums[k] + _channel_sum(o)
            flat = a.ravel()
            # float16 halves the samples' memory, but past its range (65504, seen in random-init networks)
            # a value would become inf and land in no bin: such a call keeps float32
            kept = np.float16 if absmax[k] < 65504 else np.float32
            samples[k].append(flat[:: max(1, flat.size // SAMPLES_PER_CALL)].astype(kept))
        count += len(chunk)
    hists = np.stack([_histogram(np.concatenate(v).astype(np.float32), top) for v, top in zip(samples, absmax)])
    means = {t: (s / count).astype(np.float32) for t, s in zip(tensors, sums)}
    return {"tensors": list(tensors), "absmax": absmax, "hist": hists, "means": means}


def _histogram(x: np.ndarray, top: float) -> np.ndarray:
    """|x| counted into BINS equal bins over [0, top]."""
    scale = BINS / top if top > 0 else 0.0
    idx = np.minimum((np.abs(x) * scale).astype(np.int64), BINS - 1)
    return np.bincount(idx, minlength=BINS).astype(np.float64)


def _channel_sum(x: np.ndarray) -> np.ndarray:
    """Per-sample channel means, summed over the batch (float64 accumulation across calls)."""
    if x.ndim == 2:
        return x.sum(axis=0, dtype=np.float64)
    return x.reshape(x.shape[0], x.shape[1], -1).mean(axis=2).sum(axis=0, dtype=np.float64)


def thresholds(stats: dict, method: str) -> dict[str, float]:
    out = {}
    for name, amax, hist in zip(stats["tensors"], stats["absmax"], stats["hist"]):
        if amax <= 0:
            out[name] = 1e-8
        elif method == "minmax":
            out[name] = float(amax)
        elif method == "percentile":
            out[name] = _percentile(hist, amax, PERCENTILE)
        elif method == "entropy":
            out[name] = _entropy(hist, amax)
        else:
            raise ValueError(method)
    return out


def _percentile(hist: np.ndarray, amax: float, pct: float) -> float:
    cdf = np.cumsum(hist) / max(hist.sum(), 1)
    i = int(np.searchsorted(cdf, pct / 100.0))
    return float(amax * min(i + 1, len(hist)) / len(hist))


def _smooth(d: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Move a little mass onto empty bins so KL(p||q) stays finite where q is empty but p is not."""
    zero = d == 0
    nz = (~zero).sum()
    if nz == 0 or zero.sum() == 0:
        return d
    d = d.astype(np.float64).copy()
    d[zero] = eps
    d[~zero] -= eps * zero.sum() / nz
    return d


def _entropy(hist: np.ndarray, amax: float, levels: int = 128, stride: int = 8) -> float:
    """TensorRT-style KL calibration: the threshold (in bins) whose 128-level version of the clipped
    histogram diverges least from it. Clipped values pile into the last bin of p but not into q, so
    clipping a heavy tail is penalised and the threshold settles where the tail thins out."""
    hist = hist.astype(np.float64)
    # ReLU/ReLU6 outputs put half their mass in the first bin; zero is exact at any scale, and merging
    # that spike with its neighbours would dominate the divergence and push every threshold to the max.
    hist[0] = 0
    n = len(hist)
    best_kl, best_i = np.inf, n
    for i in range(levels, n + 1, stride):
        sliced = hist[:i]
        p = sliced.copy()
        p[-1] += hist[i:].sum()
        nonzero = p != 0
        # Merge the i bins into `levels` groups, spread each group's mass over its non-empty bins.
        group = (np.arange(i) * levels) // i
        mass = np.bincount(group, weights=sliced, minlength=levels)
        norm = np.bincount(group, weights=nonzero, minlength=levels)
        q = np.where(nonzero, mass[group] / np.maximum(norm[group], 1), 0.0)
        if q.sum() == 0:
            continue
        ps, qs = _smooth(p / p.sum()), _smooth(q / q.sum())
        m = ps > 0
        kl = float(np.sum(ps[m] * np.log(ps[m] / np.maximum(qs[m], 1e-12))))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(amax * best_i / n)

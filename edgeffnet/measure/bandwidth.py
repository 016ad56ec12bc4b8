"""Sustained memory bandwidth of this host: the second ceiling of a roofline (peak.py has the first).

A streaming kernel over buffers well beyond the last-level cache (4x its size, at least 64 MiB), so
every pass goes to DRAM: numpy's copy (`b[:] = a`, one read and one write per element, STREAM's "copy")
and triad (`a = b + s*c`, two reads and one write, done as two numpy passes whose traffic is counted).
The best of N timed passes is the figure, as STREAM reports it: the sustained rate the hardware allows,
not the average a noisy machine happened to give. Measured once per process (a bench of many bundles
pays for it once).

Bytes are counted as STREAM counts them, and as the layer table counts a layer's: what the kernel reads
and writes, each once (copy 2 bytes per byte copied, the two-pass triad 5). What the memory moves depends
on the store: numpy's copy is glibc's memcpy, whose stores above its non-temporal threshold bypass the
cache (moved = counted); numpy's loops store normally, and a normal store first reads its line for
ownership, uncounted (the triad moves 6 for 5 counted), as OpenVINO's kernels do when they write outputs.
`benchmarks/memory_bandwidth.py` compares the figure with libc's memmove and a read-only stream.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

MIN_BUFFER = 64 << 20
# Three buffers live at once (triad): capped so a server with a huge LLC does not allocate gigabytes; at
# 512 MiB a buffer is still beyond any LLC shipped today by a factor of 1.5 or more.
MAX_BUFFER = 512 << 20


def llc_bytes() -> tuple[int | None, str]:
    """The last-level cache's size from sysfs (the highest cache index of cpu0), and where it came from."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    best, where = None, "unknown (no /sys/devices/system/cpu/cpu0/cache)"
    try:
        for index in sorted(base.glob("index*")):
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip().upper()
            size = int(text.rstrip("KMG")) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
            if best is None or level >= best[0]:
                best = (level, size)
        if best:
            return best[1], f"sysfs L{best[0]} of cpu0"
    except (OSError, ValueError):
        pass
    return None, where


def _best(fn, passes: int) -> float:
    fn()  # pages touched, threads up
    best = float("inf")
    for _ in range(passes):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def stream(kernel: str = "copy", buffer_bytes: int | None = None, passes: int = 10) -> dict:
    """GB/s of one streaming kernel over float64 arrays of `buffer_bytes` each (default: 4x LLC)."""
    llc, llc_source = llc_bytes()
    size = buffer_bytes or min(MAX_BUFFER, max(MIN_BUFFER, 4 * (llc or 0)))
    n = size // 8
    a = np.full(n, 1.0)
    b = np.empty(n)
    if kernel == "copy":
        seconds = _best(lambda: np.copyto(b, a), passes)
        moved = 2 * size  # read a, write b
        counts = (
            "2 bytes per byte copied (read a, write b); glibc memcpy, above its threshold non-temporal: moved = counted"
        )
    elif kernel == "triad":
        c = np.full(n, 2.0)

        def triad():
            np.multiply(c, 3.0, out=b)  # read c, write b
            np.add(b, a, out=b)  # read b and a, write b

        seconds = _best(triad, passes)
        moved = 5 * size
        counts = "5 bytes per element byte (read c, write b; read b and a, write b); normal stores: 6 moved"
    else:
        raise ValueError(f"unknown kernel {kernel!r}")
    return {
        "gbs": round(moved / seconds / 1e9, 2),
        "method": f"numpy {kernel} (single thread), best of {passes}",
        "buffer_bytes": size,
        "llc_bytes": llc,
        "llc_source": llc_source,
        "bytes_per_pass": moved,
        "counts": counts,
        "threads": 1,
        "cpus": os.cpu_count(),
    }


@lru_cache(maxsize=1)
def sustained() -> dict:
    """The host's figure for a roofline: the better of copy and triad over 4x the LLC (cached per process)."""
    runs = [stream("copy"), stream("triad")]
    best = max(runs, key=lambda r: r["gbs"])
    return best | {"kernels": {r["method"].split()[1]: r["gbs"] for r in runs}}

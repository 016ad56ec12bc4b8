"""Is the roofline's memory ceiling (edgeffnet.measure.bandwidth) what the memory really sustains?

Claim (issue 24): the sustained-bandwidth figure a profiled bench record carries (the better of numpy's
copy and triad over buffers of 4x the last-level cache, best of 10 passes) agrees with a second,
independent method on the same buffers: libc's memmove (glibc picks its own vector loop and non-temporal
stores for copies this large) through ctypes, and `dd` streaming zeroes through a buffer of the same size
into /dev/null (kernel copy into the buffer: a write stream, reported for reference). The verdict compares
the same stream done two ways, numpy's copy (the record's copy kernel) against memmove's, both counted as
one read and one write per byte and timed in alternating rounds; within --tolerance (default 25%: glibc's
streaming stores skip the read-for-ownership a plain copy pays, so memmove may run faster on the same
memory). The record's figure (the better of copy and triad, measured once per process) is printed beside.

    python benchmarks/memory_bandwidth.py
    python benchmarks/memory_bandwidth.py --buffer-mib 512 --passes 20

Exit status 0 when within tolerance, 1 when not. On a machine shared with other work every figure is a
lower bound (best of N passes takes the least-disturbed one).
"""

from __future__ import annotations

import argparse
import ctypes
import re
import shutil
import subprocess
import sys
import time

import numpy as np

from edgeffnet.measure import bandwidth


def memmove_gbs(size: int, passes: int) -> float:
    a = np.full(size, 1, dtype=np.uint8)
    b = np.empty(size, dtype=np.uint8)
    src, dst = a.ctypes.data, b.ctypes.data
    ctypes.memmove(dst, src, size)
    best = float("inf")
    for _ in range(passes):
        t = time.perf_counter()
        ctypes.memmove(dst, src, size)
        best = min(best, time.perf_counter() - t)
    return 2 * size / best / 1e9


def dd_gbs(size: int, passes: int) -> float | None:
    if not shutil.which("dd"):
        return None
    mib = max(1, size >> 20)
    best = 0.0
    for _ in range(max(1, passes // 3)):
        out = subprocess.run(
            ["dd", "if=/dev/zero", "of=/dev/null", f"bs={mib}M", "count=8"], capture_output=True, text=True, timeout=120
        ).stderr
        m = re.search(r"copied, ([\d.]+) s", out)
        if m:
            best = max(best, 8 * mib * (1 << 20) / float(m.group(1)) / 1e9)
    return best or None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--buffer-mib", type=int, help="Buffer size (default: what the record uses, 4x LLC).")
    ap.add_argument("--passes", type=int, default=10)
    ap.add_argument("--tolerance", type=float, default=0.25)
    args = ap.parse_args()

    llc, llc_source = bandwidth.llc_bytes()
    ours = bandwidth.sustained()  # what a profiled bench record carries (this process's first measurement)
    size = (args.buffer_mib << 20) if args.buffer_mib else ours["buffer_bytes"]
    # Then the methods in alternating rounds, one timed pass each, best per method: load from other
    # processes hits each alike (as the record's own best-of-N, the best pass is the least disturbed).
    best = {"copy": 0.0, "triad": 0.0, "memmove": 0.0}
    for _ in range(args.passes):
        for kernel in ("copy", "triad"):
            best[kernel] = max(best[kernel], bandwidth.stream(kernel, size, passes=1)["gbs"])
        best["memmove"] = max(best["memmove"], memmove_gbs(size, 1))
    dd = dd_gbs(size, args.passes)
    mm = best["memmove"]
    print(f"LLC {llc} bytes ({llc_source}); buffers {size >> 20} MiB")
    print(f"edgeffnet record: {ours['gbs']:.2f} GB/s ({ours['method']}; kernels {ours['kernels']})")
    print(
        f"interleaved, best of {args.passes}: numpy copy {best['copy']:.2f}, numpy triad {best['triad']:.2f}, "
        f"libc memmove {mm:.2f} GB/s"
    )
    print(f"dd /dev/zero:     {dd:.2f} GB/s (kernel write stream, reference)" if dd else "dd: not available")
    ours = {"gbs": best["copy"]}  # the same stream (one read, one write per byte) by two implementations
    ratio = ours["gbs"] / mm
    ok = abs(ratio - 1) <= args.tolerance
    print(
        f"numpy copy / libc memmove, interleaved = {ratio:.3f} ({'within' if ok else 'OUTSIDE'} {args.tolerance:.0%})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

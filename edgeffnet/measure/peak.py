"""Peak compute of the device that measured, for the 'fraction of peak' a record states.

A profile gives its peak in GOP/s per precision; `targets/cpu.toml` says "host": computed here from the
CPU's cores, clock and instruction set.
"""

from __future__ import annotations

import re
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgeffnet.core import host

CPUINFO_CLOCK = "/proc/cpuinfo cpu MHz (no cpufreq)"


def _max_clock_ghz() -> tuple[float | None, str]:
    try:
        khz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text())
        return khz / 1e6, "cpufreq cpuinfo_max_freq"
    except (OSError, ValueError):
        mhz = host.cpu()["mhz"]
        # Without cpufreq (VMs, containers) /proc/cpuinfo's clock is all the OS says; see host_peak.
        return (mhz / 1e3 if mhz else None), CPUINFO_CLOCK


@lru_cache(maxsize=1)
def _sgemm_gflops(n: int = 1536, seconds: float = 1.0) -> float:
    """float32 matrix-product rate of this host through numpy's BLAS, best of repeated runs."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a  # threads up, caches warm
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        a @ a
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def _amd_zen4() -> bool:
    info = host._cpuinfo()
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", info, re.M)
    family = re.search(r"^cpu family\s*:\s*(\d+)", info, re.M)
    # Family 19h with AVX-512 is Zen 4, which executes a 512-bit FMA as two 256-bit halves.
    return bool(vendor and family and vendor.group(1) == "AuthenticAMD" and int(family.group(1)) == 0x19)


def host_peak(precision: str, compute: str | None = "f32") -> dict | None:
    """Compute peak of this CPU in G(FL)OP/s: usable physical cores x max clock x FLOP/cycle/core.

    FLOP/cycle/core for fp32 is 2 FMA pipes x lanes x 2 (multiply and add): AVX-512 64 (32 on AMD Zen 4,
    whose pipes are 256 bits wide), AVX2+FMA 32, Arm NEON 16, else SSE's 8. INT8 counts 4x with
    VNNI/AMX (a 4-way dot product per lane), else 2x (pairwise vpmaddubsw). A reduced float type (bf16 or
    f16, as `compute`) counts 2x where the CPU has native instructions for it, else it runs at the fp32 rate.
    """
    c = host.cpu()
    ghz, clock_source = _max_clock_ghz()
    if not ghz:
        return None
    isa = set(c["isa"])
    cores = min(c["physical_cores"], c["usable_cpus"])
    if "avx512f" in isa:
        per_cycle, why = (
            (32, "AVX-512 on AMD Zen 4 (2x256-bit FMA)") if _amd_zen4() else (64, "AVX-512 (2 FMA x 16 lanes x 2)")
        )
    elif {"avx2", "fma"} <= isa:
        per_cycle, why = 32, "AVX2 (2 FMA x 8 lanes x 2)"
    elif "asimd" in isa:
        per_cycle, why = 16, "NEON (2 FMA x 4 lanes x 2)"
    else:
        per_cycle, why = 8, "SSE (4 lanes x add + multiply)"
    if clock_source == CPUINFO_CLOCK:
        # A VM's /proc/cpuinfo shows the nominal clock, not the boost one (measured here: 2.596 GHz, with a
        # float32 matrix product at 205 GFLOP/s, which 2 cores x 32 FLOP/cycle only reach above 3.2 GHz).
        # A BLAS product never beats the FMA peak, so its rate gives a lower bound on the real clock.
        measured = _sgemm_gflops()
        implied = measured / (cores * per_cycle)
        if implied > ghz:
            clock_source = (
                f"a measured float32 matrix product ({measured:.0f} GFLOP/s), which needs at least "
                f"{implied:.3f} GHz where /proc/cpuinfo says {ghz:.3f} GHz (no cpufreq: the boost "
                f"clock is hidden)"
            )
            ghz = implied
    factor = 1
    if precision == "int8":
        factor = 4 if isa & {"avx512_vnni", "avx_vnni", "amx_int8"} else 2
        why += f", int8 x{factor}"
    elif compute in ("f16", "bf16") and isa & {"avx512_fp16", "avx512_bf16", "amx_bf16"}:
        factor = 2
        why += f", {compute} x2"
    return {
        "gflops": round(cores * ghz * per_cycle * factor, 1),
        "detail": f"{cores} cores x {ghz:.3f} GHz x {per_cycle * factor} FLOP/cycle ({why})",
        "source": f"computed from this host: clock from {clock_source}; see edgeffnet/measure/peak.py host_peak",
    }


def peak(manifest: dict, precision: str, baseline: bool) -> dict | None:
    """The profile's peak for what ran: a number (GOP/s) from its file, or 'host' computed here.

    Baselines run in fp32 on this host's CPU whatever the bundle's target is."""
    if baseline:
        return host_peak("fp32")
    t = manifest["target"]
    value = t.get("peak", {}).get(precision)
    if value == "host":
        return host_peak(precision, t.get("options", {}).get("inference_precision", {}).get(precision, "f32"))
    if isinstance(value, (int, float)):
        return {
            "gflops": float(value),
            "detail": f"{t['name']} profile, {precision}",
            "source": t["peak"].get("source", ""),
        }
    return None

"""Facts about this machine and the tools on it, for manifests and bench records."""

from __future__ import annotations

import os
import platform
import re
import socket
from functools import lru_cache
from importlib import metadata


@lru_cache(maxsize=1)
def tools() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("edgeffnet", "torch", "onnx", "onnxsim", "onnxruntime", "openvino", "nncf", "tensorrt", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (x86 "flags", Arm "Features"), read once: every rule that depends on the
    instruction set asks here. Empty where /proc/cpuinfo cannot be read."""
    found = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", _cpuinfo(), re.M)
    return frozenset(found.group(1).split()) if found else frozenset()


@lru_cache(maxsize=1)
def cpu() -> dict:
    info = _cpuinfo()
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)$", info, re.M)]
    physical = {(p, c) for p, c in re.findall(r"physical id\s*:\s*(\d+).*?core id\s*:\s*(\d+)", info, re.S)}
    logical = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = logical
    flagset = cpu_flags()
    return {
        "model": model.group(1).strip() if model else platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "logical_cpus": logical,
        "usable_cpus": usable,
        "physical_cores": len(physical) or logical,
        "mhz": round(max(mhz), 1) if mhz else None,
        "isa": [
            f
            for f in (
                "avx2",
                "fma",
                "avx512f",
                "avx512_vnni",
                "avx512_bf16",
                "avx512_fp16",
                "amx_tile",
                "amx_bf16",
                "amx_int8",
                "avx_vnni",
                "asimd",
            )
            if f in flagset
        ],
    }


def memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            m = re.search(r"MemTotal:\s+(\d+) kB", f.read())
        return round(int(m.group(1)) / 1024**2, 1) if m else None
    except OSError:
        return None


def describe() -> dict:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "cpu": cpu(), "memory_gb": memory_gb()}

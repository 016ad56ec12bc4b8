"""What a latency model describes, and where a device's model and data live under the cache.

A model is only as good as the device it was measured on: another CPU, core count, runtime version or
target profile runs other kernels. The identity below is recorded in every model file and compared
when one is loaded; clocks and the frequency governor are recorded (they say how the device was set
up) but not compared, because they move while a machine runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgeffnet.core import files, host
from edgeffnet.specs import targets

# The fields that must agree for a model to describe this device (in the order a refusal names them).
COMPARED = ("cpu", "logical_cpus", "usable_cpus", "runtime", "runtime_version", "target", "target_hash")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _profile_hash(target: targets.Target) -> str:
    """The target profile's content: an edited profile (other peak, other options) is another target."""
    try:
        data = Path(target.path).read_bytes()
    except OSError:
        data = json.dumps([target.name, target.backend, target.device, target.options], sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def identity(target_name: str) -> dict:
    """This machine, its runtime and the target profile, as a model file records them."""
    target = targets.load(target_name)
    cpu = host.cpu()
    freq = "/sys/devices/system/cpu/cpu0/cpufreq"
    return {
        "cpu": cpu["model"],
        "arch": cpu["arch"],
        "logical_cpus": cpu["logical_cpus"],
        "usable_cpus": cpu["usable_cpus"],
        "isa": cpu["isa"],
        "mhz": cpu["mhz"],
        "governor": _read(f"{freq}/scaling_governor"),
        "max_khz": _read(f"{freq}/cpuinfo_max_freq"),
        "runtime": target.backend,
        "runtime_version": host.tools().get(target.backend, "not installed"),
        "target": target.name,
        "target_hash": _profile_hash(target),
    }


def key(ident: dict) -> str:
    """A folder name per device: the target's name and a hash of the compared fields."""
    digest = hashlib.sha256(json.dumps([ident.get(k) for k in COMPARED]).encode()).hexdigest()[:12]
    return f"{ident['target']}-{digest}"


def mismatch(recorded: dict, here: dict) -> str | None:
    """The first compared field that differs, said as 'cpu X, not Y'; None when the model fits here."""
    for k in COMPARED:
        if recorded.get(k) != here.get(k):
            return f"{k} {recorded.get(k)!r}, not this device's {here.get(k)!r}"
    return None


def folder(ident: dict, precision: str) -> Path:
    return files.cache_root() / "latency" / key(ident) / precision


def model_path(ident: dict, precision: str) -> Path:
    return folder(ident, precision) / "model.json"


def data_path(ident: dict, precision: str) -> Path:
    return folder(ident, precision) / "measurements.jsonl"


def check_precision(target_name: str, precision: str | None) -> str:
    return targets.load(target_name).check_precision(precision)

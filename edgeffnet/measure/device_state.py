"""The device's state around a measurement, and the process's memory: what a record needs to be judged by.

Every probe reads what this machine offers and gives None where it offers nothing (no cpufreq in a
container, no thermal zones in a VM, no nvpmodel off a Jetson): a probe never raises and never waits
unbounded. Files are small kernel files read once; the two Jetson tools run as subprocesses with a
timeout.

Busy: a record is taken on a busy machine when other processes held at least BUSY_SHARE of the CPUs this
process may run on while it measured. That is counted from /proc/stat (the time those CPUs were not
idle, less this process's own CPU time), because the load average cannot tell the bench's own threads
from a neighbour's and lags by a minute, so it also counts the stage that ran just before (a build, the
previous runtime). Where /proc/stat is unreadable the load average decides (rule in `busy`). Both are
recorded.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

CPU_ROOT = Path("/sys/devices/system/cpu")
THERMAL_ROOT = Path("/sys/class/thermal")
DEVFREQ_ROOT = Path("/sys/class/devfreq")
PROC = Path("/proc")
TOOL_TIMEOUT_S = 5.0
MAX_ENTRIES = 256  # cpus, thermal zones or devfreq devices read at most: a bound on the probe's time

# A synchronous inference waits for its slowest thread, so a core that a neighbour holds for a share of the
# time slows it by more than that share; a quarter of the CPUs taken by others is where measurements here
# started to drift visibly (B0 fp32 at 21 ms instead of ~10 ms with five processes on two cores).
BUSY_SHARE = 0.25
# The load-average fallback: before loading, nothing of ours runs, so half the CPUs queued means others;
# after, our own threads add at most one per CPU, so more than 1.5 per CPU means others were queued too.
BUSY_LOAD_BEFORE, BUSY_LOAD_AFTER = 0.5, 1.5
BUSY_RULE = (
    f"busy when other processes used at least {BUSY_SHARE:.0%} of this process's CPUs while it measured "
    f"(/proc/stat less this process's CPU time); without /proc/stat, when the 1-minute load average "
    f"exceeded {BUSY_LOAD_BEFORE} per CPU before loading or {BUSY_LOAD_AFTER} per CPU after measuring"
)


def _read(path: Path) -> str | None:
    try:
        with open(path) as f:
            return f.read(65536).strip()
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _number(path: Path) -> float | None:
    text = _read(path)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _entries(root: Path, pattern: str) -> list[Path]:
    try:
        found = [p for p in root.iterdir() if re.fullmatch(pattern, p.name)]
    except OSError:
        return []
    return sorted(found, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])[:MAX_ENTRIES]


# -- the probes ---------------------------------------------------------------------------------------


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (runnable and uninterruptible tasks, the whole system)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def usable_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def cpu_frequency(root: Path | None = None) -> dict | None:
    """The governors in use, the current clocks (min/mean/max over CPUs), the hardware's maximum and the
    policy's cap, in MHz; `pinned` when every CPU's minimum equals its maximum (jetson_clocks, or a
    `performance` setup that locks the clock)."""
    root = root or CPU_ROOT
    governors: dict[str, int] = {}
    cur, hw_max, cap, pinned = [], [], [], []
    for cpu in _entries(root, r"cpu\d+"):
        freq = cpu / "cpufreq"
        governor = _read(freq / "scaling_governor")
        if governor is None:
            continue
        governors[governor] = governors.get(governor, 0) + 1
        for path, into in (
            (freq / "scaling_cur_freq", cur),
            (freq / "cpuinfo_max_freq", hw_max),
            (freq / "scaling_max_freq", cap),
        ):
            v = _number(path)
            if v is not None:
                into.append(v / 1000)  # kHz -> MHz
        low, high = _number(freq / "scaling_min_freq"), _number(freq / "scaling_max_freq")
        if low is not None and high is not None:
            pinned.append(low == high)
    if not governors:
        return None
    return {
        "governors": governors,
        "cur_mhz": {"min": min(cur), "mean": round(sum(cur) / len(cur), 1), "max": max(cur)} if cur else None,
        "max_mhz": max(hw_max) if hw_max else None,
        "scaling_max_mhz": max(cap) if cap else None,
        "pinned": all(pinned) if pinned else None,
    }


def temperatures(root: Path | None = None) -> list[dict] | None:
    """Each thermal zone's type and temperature in degrees Celsius (the kernel reports millidegrees)."""
    out = []
    for zone in _entries(root or THERMAL_ROOT, r"thermal_zone\d+"):
        milli = _number(zone / "temp")
        if milli is not None:
            out.append({"zone": zone.name, "type": _read(zone / "type"), "celsius": round(milli / 1000, 1)})
    return out or None


def _tool(*args: str) -> str | None:
    """A tool's output where it exists, answers within TOOL_TIMEOUT_S and succeeds; else None."""
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return done.stdout if done.returncode == 0 else None


def jetson_power_mode() -> dict | None:
    """`nvpmodel -q`: the power mode's name and number (e.g. MAXN, 0)."""
    text = _tool("nvpmodel", "-q")
    if not text:
        return None
    name = re.search(r"NV Power Mode:\s*(\S+)", text)
    number = re.search(r"^\s*(\d+)\s*$", text, re.MULTILINE)
    return {
        "name": name.group(1) if name else None,
        "id": int(number.group(1)) if number else None,
        "raw": text.strip()[:200],
    }


_GPU = re.compile(r"gpu|ga10b|gv11b|gp10b|gm20b")  # the Jetson GPUs' devfreq names (Orin, Xavier, TX2, Nano)


def jetson_clocks(cpu_root: Path | None = None, devfreq_root: Path | None = None) -> dict | None:
    """Whether jetson_clocks is on: every CPU's and the GPU's minimum clock raised to its maximum. From
    `jetson_clocks --show` where it answers (it wants root), else from cpufreq and devfreq directly."""
    text = _tool("jetson_clocks", "--show")
    if text:
        pairs = re.findall(r"MinFreq=(\d+)\s+MaxFreq=(\d+)", text)
        if pairs:
            return {"on": all(a == b for a, b in pairs), "how": "jetson_clocks --show: MinFreq == MaxFreq everywhere"}
    cpus = cpu_frequency(cpu_root)
    gpus = []
    for dev in _entries(devfreq_root or DEVFREQ_ROOT, r".+"):
        if _GPU.search(dev.name):
            low, high = _number(dev / "min_freq"), _number(dev / "max_freq")
            if low is not None and high is not None:
                gpus.append(low == high)
    if not cpus or cpus["pinned"] is None:
        return None
    return {
        "on": bool(cpus["pinned"] and all(gpus)),
        "how": "cpufreq" + (" and GPU devfreq" if gpus else "") + " minimum == maximum",
    }


def is_jetson() -> bool:
    return Path("/etc/nv_tegra_release").is_file() or shutil.which("nvpmodel") is not None


def _cpu_times(cpus: list[int]) -> tuple[float, float] | None:
    """(busy, total) seconds of the given CPUs since boot, from /proc/stat. Busy counts user, nice, system,
    irq, softirq and steal (time the hypervisor gave away is time this process could not have)."""
    text = _read(PROC / "stat")
    if not text:
        return None
    want = {f"cpu{i}" for i in cpus}
    busy = total = 0
    seen = 0
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] in want and len(parts) >= 9:
            try:
                user, nice, system, idle, iowait, irq, softirq, steal = map(int, parts[1:9])
            except ValueError:
                return None
            busy += user + nice + system + irq + softirq + steal
            total += user + nice + system + idle + iowait + irq + softirq + steal
            seen += 1
    if not seen:
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return busy / tick, total / tick


def _own_cpu_seconds() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def snapshot(jetson: bool | None = None) -> dict:
    """The device's state now: load average, CPU clocks and governor, temperatures, on a Jetson its power
    mode and jetson_clocks. Every entry is None where this machine does not say."""
    state = {
        "load_average": load_average(),
        "cpus": os.cpu_count(),
        "cpu_frequency": cpu_frequency(),
        "temperatures": temperatures(),
    }
    if jetson is None:
        jetson = is_jetson()
    if jetson:
        state["jetson"] = {"power_mode": jetson_power_mode(), "jetson_clocks": jetson_clocks()}
    return state


class Window:
    """The span of one measurement: the state before and after it, and how much of this process's CPUs
    other processes used in between."""

    def __init__(self):
        self.cpus = usable_cpus()
        self.before = snapshot()
        self._start = (time.monotonic(), _cpu_times(self.cpus), _own_cpu_seconds())

    def close(self) -> dict:
        after = snapshot()
        wall0, times0, own0 = self._start
        others = None
        times1 = _cpu_times(self.cpus)
        if times0 and times1 and times1[1] > times0[1]:
            used = (times1[0] - times0[0]) - (_own_cpu_seconds() - own0)
            others = round(max(0.0, min(1.0, used / (times1[1] - times0[1]))), 3)
        return {
            "before": self.before,
            "after": after,
            "usable_cpus": len(self.cpus),
            "seconds": round(time.monotonic() - wall0, 3),
            "others_cpu_share": others,
            "busy": busy(self.before.get("load_average"), after.get("load_average"), others, self.before.get("cpus")),
            "busy_rule": BUSY_RULE,
        }


def busy(
    load_before: list | None, load_after: list | None, others_share: float | None, cpus: int | None
) -> bool | None:
    """BUSY_RULE; None where neither signal was readable."""
    if others_share is not None:
        return others_share >= BUSY_SHARE
    if not cpus or (not load_before and not load_after):
        return None
    return bool(
        (load_before and load_before[0] > BUSY_LOAD_BEFORE * cpus)
        or (load_after and load_after[0] > BUSY_LOAD_AFTER * cpus)
    )


# -- the process's memory -------------------------------------------------------------------------------


def _status_kib(field: str, proc: Path) -> int | None:
    text = _read(proc / "self" / "status")
    m = re.search(rf"^{field}:\s+(\d+)\s+kB", text or "", re.MULTILINE)
    return int(m.group(1)) if m else None


def _max_rss_mib() -> float:
    """getrusage's peak resident set of the whole process's life (KiB on Linux, bytes on macOS)."""
    v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return v / 2**20 if sys.platform == "darwin" else v / 1024


class Memory:
    """The process's peak resident memory from here on. On Linux the kernel's high-water mark (VmHWM) is
    reset first (writing 5 to /proc/self/clear_refs), so the peak is this span's, not a build's before it;
    where that is not possible the peak is getrusage's ru_maxrss over the process's life, and says so."""

    def __init__(self, proc: Path | None = None):
        self._proc = proc = proc or PROC
        try:
            with open(proc / "self" / "clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        rss = _status_kib("VmRSS", proc)
        self.baseline_mib = round(rss / 1024, 1) if rss is not None else round(_max_rss_mib(), 1)

    def rss_mib(self) -> float | None:
        rss = _status_kib("VmRSS", self._proc)
        return round(rss / 1024, 1) if rss is not None else None

    def peak(self) -> dict:
        hwm = _status_kib("VmHWM", self._proc)
        lifetime = round(_max_rss_mib(), 1)
        if self.reset and hwm is not None:
            peak, method = round(hwm / 1024, 1), "VmHWM of /proc/self/status, reset before loading"
        else:
            peak, method = lifetime, "getrusage ru_maxrss: the process's peak since it started"
        return {
            "baseline_mib": self.baseline_mib,
            "peak_mib": peak,
            "increase_mib": round(peak - self.baseline_mib, 1),
            "process_max_rss_mib": lifetime,
            "method": method,
        }

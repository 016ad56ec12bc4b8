"""The README's Run command, timed from an empty cache as a new user runs it: does it finish in 10 minutes,
and does its output never fall silent for 30 s?

    PYTHONPATH=. python benchmarks/run_command.py [--keep DIR] [--json out.json]

Runs `edgeffnet sweep --models b0-b3,lite0 --precision fp32,int8 -o OUT` (the README's Run command after
the install) in a subprocess, with an empty temporary stage cache (EDGEFFNET_CACHE) and output directory,
its stdout and stderr read through a pipe (not a terminal: what a CI log or `nohup` sees). Records the wall
time, the CPU time and peak RSS of the command (its process and its children), and the longest gap between
two output lines; prints each against its limit and PASS or FAIL. The machine's load is printed beside them:
a shared machine makes the wall time say more about the neighbours than about the command.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = ["sweep", "--models", "b0-b3,lite0", "--precision", "fp32,int8"]  # the README's Run command, less -o
WALL_LIMIT_S = 600.0  # "about 10 minutes on 2 cores"
GAP_LIMIT_S = 30.0  # a line of progress at least this often on a non-terminal output


def run(out: Path, cache: Path, echo) -> dict:
    env = {**os.environ, "EDGEFFNET_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "edgeffnet.cli", *RUN, "-o", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()
    t0 = last = time.monotonic()
    gaps: list[tuple[float, str]] = []
    lines = 0
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, bufsize=0)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    try:
        while True:
            if not sel.select(timeout=5.0):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            for raw in done:
                now = time.monotonic()
                text = raw.decode(errors="replace").rstrip("\r")
                gaps.append((now - last, text))
                last = now
                lines += 1
                echo(f"[{now - t0:7.1f}s] {text}")
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=60)
        raise
    finally:
        sel.close()
    wall = time.monotonic() - t0
    gaps.append((time.monotonic() - last, "(end)"))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    longest = max(gaps, key=lambda g: g[0])
    return {
        "command": "edgeffnet " + " ".join(RUN) + " -o OUT",
        "exit_code": code,
        "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "peak_rss_mb": round(after.ru_maxrss / 1024, 1),  # the largest child's (Linux: KiB)
        "lines": lines,
        "longest_gap_s": round(longest[0], 1),
        "longest_gap_before": longest[1][:120],
        "load_avg_at_start": [round(v, 2) for v in load],
        "load_avg_at_end": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--keep", help="Write the sweep's output here (an empty or new directory) instead of a temporary one."
    )
    ap.add_argument("--json", help="Also write the result here.")
    ap.add_argument("--quiet", action="store_true", help="Do not echo the command's output.")
    a = ap.parse_args()
    echo = (lambda line: None) if a.quiet else (lambda line: print(line, flush=True))
    with tempfile.TemporaryDirectory(prefix="edgeffnet-run-command-") as tmp:
        out = Path(a.keep) if a.keep else Path(tmp) / "results"
        if out.exists() and any(out.iterdir()):
            print(f"--keep {out} is not empty: the measurement needs an empty output directory", file=sys.stderr)
            return 2
        r = run(out, Path(tmp) / "cache", echo)
    r["wall_pass"] = r["exit_code"] == 0 and r["wall_s"] <= WALL_LIMIT_S
    r["gap_pass"] = r["longest_gap_s"] <= GAP_LIMIT_S
    print(f"\n{r['command']}: exit {r['exit_code']}")
    print(f"wall {r['wall_s'] / 60:.1f} min (limit {WALL_LIMIT_S / 60:.0f}): {'PASS' if r['wall_pass'] else 'FAIL'}")
    print(
        f"longest silence {r['longest_gap_s']:.1f} s (limit {GAP_LIMIT_S:.0f}), before "
        f"'{r['longest_gap_before']}': {'PASS' if r['gap_pass'] else 'FAIL'}"
    )
    print(
        f"CPU {r['cpu_s']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB, {r['lines']} lines; load average "
        f"{r['load_avg_at_start'][0]:.1f} at start, {r['load_avg_at_end'][0]:.1f} at end on {r['cpus']} CPUs"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1) + "\n")
    return 0 if r["wall_pass"] and r["gap_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Does report.html render on its own in a real browser? Headless Chromium, a screenshot, and checks on it.

Claim (issue 5): the report's HTML page is self-contained (plots embedded as base64 PNG, no network) and
renders in headless Chromium with its plots and tables. This script makes a report (a small real sweep,
or the one you pass), loads it from file:// with networking off, and checks:
  - the DOM Chromium built has the report's tables and its <img> elements with data: sources;
  - the screenshot is not blank, and shows the plot (pixels of matplotlib's first series colour, which
    nothing else on the page uses).

    apt-get install -y chromium
    python benchmarks/render_report_html.py                         # a two-model sweep into a temp dir
    python benchmarks/render_report_html.py --report results/      # an existing report
    python benchmarks/render_report_html.py --screenshot shot.png   # keep the screenshot to look at
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

# As root and offline: no sandbox, no GPU, and no background connections (they are refused here and slow
# every start).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
SERIES_COLOUR = (0x1F, 0x77, 0xB4)  # matplotlib's C0


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not exe:
        raise SystemExit("no Chromium found: apt-get install -y chromium")
    return subprocess.run(
        [exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )


def make_report(out: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "edgeffnet.cli",
        "sweep",
        "--spec",
        "lite0,res=96",
        "--spec",
        "b0,res=96",
        "--spec",
        "lite0,res=160",
        "-n",
        "30",
        "-s",
        "0.5",
        "--warmup",
        "0.2",
        "-o",
        str(out),
    ]
    print("making a report:", " ".join(cmd[2:]))
    subprocess.run(cmd, check=True, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", help="Directory holding report.html (default: make one with a small sweep).")
    ap.add_argument("--screenshot", help="Where to keep the screenshot (default: beside the report).")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="render-report-"))
    folder = Path(args.report) if args.report else work / "results"
    if not args.report:
        make_report(folder)
    page = (folder / "report.html").resolve()
    if not page.is_file():
        raise SystemExit(f"{page} does not exist")
    shot = Path(args.screenshot or folder / "report_screenshot.png").resolve()

    dom = chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri(), profile=work / "profile").stdout
    tables = len(re.findall(r"<table", dom))
    images = re.findall(r'<img[^>]*src="([^"]{0,30})', dom)
    external = re.findall(r'(?:src|href)="(?!data:)([^"]+)"', dom)
    r = chromium("--window-size=1400,2200", f"--screenshot={shot}", page.as_uri(), profile=work / "profile")
    if not shot.is_file():
        raise SystemExit(f"Chromium wrote no screenshot:\n{r.stderr[-2000:]}")
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    ink = float(np.mean(pixels.sum(axis=2) < 720))  # anything not (near) white
    series = int(np.sum(np.abs(pixels - SERIES_COLOUR).sum(axis=2) < 30))

    checks = {
        "DOM has the report's tables (>= 3)": tables >= 3,
        "DOM has the plots as data: images": bool(images) and all(s.startswith("data:image/png") for s in images),
        "no external resources": not external,
        "screenshot is not blank (>= 2% ink)": ink >= 0.02,
        "screenshot shows the plot's first series (>= 100 px of C0)": series >= 100,
    }
    print(f"page {page} ({page.stat().st_size / 1024:.0f} KiB)")
    print(f"DOM: {tables} tables, {len(images)} images; screenshot {shot}: {ink:.1%} ink, {series} px of series colour")
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

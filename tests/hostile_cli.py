"""Shared by the untrusted-input batteries: one small bundle per module, copies of it to damage, photos.
The CLI runs through conftest's `cli` fixture and refusals are checked by its `assert_refused`.

A refusal is: a non-zero exit, no traceback, one `edgeffnet: error:` line under 500 characters that
names what was wrong, and nothing half-written (each test checks its own files).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SPEC = "b0,res=64"  # the cheapest bundle: a 64-pixel B0 builds in seconds


def build_bundle(dest: Path, cache: Path, *args: str) -> Path:
    env = {**os.environ, "EDGEFFNET_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-m", "edgeffnet.cli", "build", SPEC, "-o", str(dest), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    return dest


def copy_bundle(built: Path, where: Path) -> Path:
    dest = where / "bundle"
    shutil.copytree(built, dest, symlinks=True)
    return dest


def png(path: Path, size: tuple[int, int] = (50, 40), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)).save(path)
    return path


def files_under(root: Path) -> dict[str, int]:
    """Every file below root with its size: 'nothing half-written' is this, unchanged."""
    return {str(p.relative_to(root)): p.lstat().st_size for p in sorted(root.rglob("*"))}

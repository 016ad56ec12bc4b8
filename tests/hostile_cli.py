"""Shared by the untrusted-input batteries (issue 22): run the CLI in-process as the console script does,
assert the one-line refusal, and build one small bundle per module.

A refusal is: a non-zero exit, no traceback, one `edgeffnet: error:` line under 500 characters that
names what was wrong, and nothing half-written (each test checks its own files).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeffnet import cli as edgeffnet_cli
from edgeffnet import logs

REPO = Path(__file__).resolve().parents[1]
SPEC = "b0,res=64"  # the cheapest bundle: a 64-pixel B0 builds in seconds


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def make_cli(capsys, monkeypatch):
    def run(*args: str) -> Ran:
        log = logs.logger()
        handlers = list(log.handlers)
        monkeypatch.setattr(sys, "argv", ["edgeffnet", *map(str, args)])
        capsys.readouterr()
        try:
            edgeffnet_cli.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        finally:
            log.handlers[:] = handlers  # main() adds a console handler per call
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


def refused(r: Ran, *needles: str, stdout_ok: bool = False) -> str:
    """One clear line, a non-zero exit, no traceback; the line names what was wrong."""
    assert r.code not in (0, None), r
    assert "Traceback" not in r.err and "Traceback" not in r.out, r
    if not stdout_ok:
        assert r.out == "", r
    last = r.lines[-1]
    assert last.startswith("edgeffnet: error: "), r.err
    assert sum("error" in line.lower() for line in r.lines) == 1, r.err
    assert len(last) < 500, last
    for n in needles:
        assert n in last, (n, last)
    return last


def build_bundle(dest: Path, cache: Path, *args: str) -> Path:
    env = {**os.environ, "EDGEFFNET_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "edgeffnet.cli", "build", SPEC, "-o", str(dest), *args],
                       capture_output=True, text=True, env=env, timeout=600)
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


@pytest.fixture
def cli(capsys, monkeypatch):
    return make_cli(capsys, monkeypatch)

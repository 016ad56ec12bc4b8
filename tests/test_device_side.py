"""The device side installs without PyTorch: a fresh venv with `edgeffnet[openvino]` alone runs bench,
predict, report and refuses compile and build, each in one line, on a bundle the full install built."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import edgeffnet

pytestmark = pytest.mark.device_side  # a device-only install in its own environment

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("device") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"{REPO}[openvino]"], capture_output=True, text=True, timeout=1200
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    return venv


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("full")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEFFNET_CACHE", str(root / "cache"))
        return edgeffnet.build("lite0,res=64", output=root / "lite0", views=2).path


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(venv / "bin" / "edgeffnet"), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def test_device_install_has_no_build_side(device_venv):
    code = "import importlib.util as u; print([m for m in ('torch','onnxsim','nncf','onnx') if u.find_spec(m)])"
    r = subprocess.run([str(device_venv / "bin" / "python"), "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_device_side_runs_the_bundle(device_venv, bundle_dir, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(bundle_dir, work)  # what a board receives
    r = _run(device_venv, "bench", str(work), "-n", "3", "-s", "0", "--warmup", "0", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (rec,) = json.loads(r.stdout)
    assert rec["runtime"] == "openvino" and rec["stats"]["count"] >= 3 and "torch" not in rec["tools"]

    from edgeffnet.network.photos import load_photo

    load_photo("skimage:chelsea").save(tmp_path / "cat.png")
    r = _run(device_venv, "predict", str(work), str(tmp_path / "cat.png"), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["random_weights"] is True
    r = _run(device_venv, "report", str(work), "-o", str(tmp_path / "report"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "report" / "report.html").is_file() and (tmp_path / "report" / "report.csv").is_file()


@pytest.mark.parametrize(
    "args, words",
    [
        (["compile", "{bundle}"], "nothing to compile"),
        (["build", "b0,res=64", "-o", "{tmp}/b"], "edgeffnet[build]"),
        (["info", "b0"], "edgeffnet[build]"),
    ],
)
def test_device_side_refusals_are_one_line(device_venv, bundle_dir, tmp_path, args, words):
    args = [a.format(bundle=bundle_dir, tmp=tmp_path) for a in args]
    r = _run(device_venv, *args, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeffnet: error:") and words in lines[0], r.stderr
    assert not (tmp_path / "b").exists()

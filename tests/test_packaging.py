"""The installed wheel carries everything the package reads at run time (targets/, calibration/, data/)."""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds and installs the wheel

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_in_the_wheel_list():
    """A subpackage missing from pyproject's list is missing from the wheel (an install's `report` failed
    with ModuleNotFoundError once report.py became a package): the list names every folder of edgeffnet/
    that has an __init__.py."""
    text = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^packages = \[(.*?)\]", text, re.S | re.M)  # tomllib is 3.11+; the package runs on 3.10
    assert block, "pyproject.toml has no [tool.setuptools] packages list"
    listed = set(re.findall(r'"([\w.]+)"', block.group(1)))
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "edgeffnet").rglob("__init__.py")}
    assert found, "no package folders found"
    assert found <= listed, f"not in pyproject's packages: {sorted(found - listed)}"


def test_wheel_runs_info_and_targets_from_another_directory(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(REPO),
            "-w",
            str(tmp_path / "dist"),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("edgeffnet-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    sources = {str(p.relative_to(REPO)) for p in (REPO / "edgeffnet").rglob("*.py")}
    assert sources - set(names) == set()  # every module of every subpackage, none forgotten in pyproject
    for needed in (
        "edgeffnet/data/targets/cpu.toml",
        "edgeffnet/data/targets/jetson-orin-nano.toml",
        "edgeffnet/data/calibration/photos.toml",
        "edgeffnet/data/imagenet_classes.txt",
    ):
        assert needed in names, needed
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = (
        "import edgeffnet, sys; from edgeffnet.cli import main; "
        f"assert edgeffnet.__file__.startswith({str(site)!r}), edgeffnet.__file__; main()"
    )
    for args, expect in ((["info", "b0"], "5,288,548"), (["targets", "--json"], "jetson-orin-nano")):
        r = subprocess.run([sys.executable, "-c", code, *args], cwd=elsewhere, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert expect in r.stdout
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from edgeffnet.network.photos import recipe; print(len(recipe()['verification']['photos']))",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and int(r.stdout) > 0, r.stderr

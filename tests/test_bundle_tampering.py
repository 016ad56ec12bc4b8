"""Issue 22: a bundle is a file someone sends you. Every number a reader takes from its manifest is
checked against the model before use, every path in it stays inside the bundle, and every damaged file
(manifest, graph, IR, reference.npz) is one line naming it, with nothing written into the bundle.

One 64-pixel B0 bundle is built per module and copied for each kind of damage.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_refused as refused
from hostile_cli import build_bundle, copy_bundle, files_under, png


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tampering")
    return build_bundle(root / "b0-64", root / "cache")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    return png(tmp_path_factory.mktemp("photo") / "cat.png", (120, 90))


def _edit(b: Path, change) -> Path:
    m = json.loads((b / "manifest.json").read_text())
    change(m)
    (b / "manifest.json").write_text(json.dumps(m))
    return b


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(m):
        d = m
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return change


# -- numbers checked against the model ----------------------------------------------------------------------

NUMBERS = {
    "resize 100000": (_set("preprocess", "resize", 100000), "'resize' is 100000, outside"),
    "resize 5000 (inside the side bound, 78x the crop)": (_set("preprocess", "resize", 5000), "resizes to 5000"),
    "resize below the crop": (_set("preprocess", "resize", 10), "resizes to 10 pixels for a 64-pixel crop"),
    "crop 128 on a 64-pixel model": (_set("preprocess", "crop", 128), "crops 128 pixels but the model takes 64x64"),
    "crop 32 on a 64-pixel model": (_set("preprocess", "crop", 32), "crops 32 pixels"),
    "crop as text": (_set("preprocess", "crop", "64"), "'crop' is str, not int"),
    "crop as a float": (_set("preprocess", "crop", 64.0), "'crop' is float, not int"),
    "crop as true": (_set("preprocess", "crop", True), "'crop' is bool, not int"),
    "crop of 4300 digits": (_set("preprocess", "crop", 10**4299), "outside 1..4,096"),
    "mean as text": (_set("preprocess", "mean", ["a", "b", "c"]), "mean is not three numbers"),
    "std zero": (_set("preprocess", "std", [0, 1, 1]), "std has a zero"),
    "num_classes as text": (_set("num_classes", "1000"), "'num_classes' is str, not int"),
    "num_classes zero": (_set("num_classes", 0), "'num_classes' is 0, outside 1..100,000"),
    "num_classes of another head": (_set("num_classes", 10), "10 classes"),
    "input shape of another model": (
        _set("input", "shape", [1, 3, 96, 96]),
        "crops 64 pixels but the model takes 96x96",
    ),
    "input shape not a list": (_set("input", "shape", "1x3x64x64"), "input shape is not [batch, 3, H, W]"),
    "input batch huge": (_set("input", "batch", 10**9), "input batch is not a whole number"),
    "precision as a list": (_set("precision", ["fp32"]), "'precision' entry is not a str"),
    "files as a dict": (_set("files", {"a": 1}), "'files' entry is not a list"),
    "graph as a number": (_set("graph", 7), "'graph' is int, not str"),
    "fidelity as a list": (_set("fidelity", [1, 2]), "'fidelity' is list, not dict"),
    "build_seconds as text": (_set("build_seconds", "fast"), "'build_seconds' is str"),
}


# bench reads no class (a latency is a latency whatever the head's size): the head's size is checked where
# classes are named, by predict and eval.
READERS = [
    (kind, command)
    for kind in sorted(NUMBERS)
    for command in ("predict", "bench", "eval")
    if not (kind == "num_classes of another head" and command == "bench")
]


@pytest.mark.parametrize("kind,command", READERS)
def test_a_manifest_number_that_disagrees_with_the_model_is_one_line(cli, built, photo, tmp_path, command, kind):
    change, why = NUMBERS[kind]
    b = _edit(copy_bundle(built, tmp_path), change)
    before = files_under(b)
    args = {
        "predict": ("predict", b, photo),
        "bench": ("bench", b, "-n", "2", "-s", "0", "--warmup", "0"),
        "eval": ("eval", b, "--data", photo.parent),
    }[command]
    refused(cli(*args), why)
    assert files_under(b) == before


# -- paths confined to the bundle ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "graph,why",
    [
        ("../model.sim.onnx", "leads outside"),
        ("/etc/hostname", "is not a path inside it"),
        ("sub/../../x.onnx", "leads outside"),
        ("", "is not a path inside it"),
        ("link.onnx", "leads outside"),  # a symlink in the bundle pointing out of it
    ],
)
def test_a_manifest_graph_outside_the_bundle_is_refused(cli, built, tmp_path, graph, why):
    outside = tmp_path / "model.sim.onnx"
    b = copy_bundle(built, tmp_path)
    (outside).write_bytes((b / "model.sim.onnx").read_bytes())
    (b / "link.onnx").symlink_to(outside)
    _edit(b, _set("graph", graph))
    before = files_under(b)
    data = png(tmp_path / "data" / "a.png")
    refused(cli("eval", b, "--data", data.parent), why)
    refused(cli("predict", b, data), why)
    assert files_under(b) == before


# -- unreadable or hostile manifest files ---------------------------------------------------------------------


def _manifest_is(kind: str, b: Path, tmp_path: Path) -> None:
    m = b / "manifest.json"
    if kind == "a link to /dev/zero":
        m.unlink()
        m.symlink_to("/dev/zero")
    elif kind == "a FIFO":
        m.unlink()
        os.mkfifo(m)
    elif kind == "a directory":
        m.unlink()
        m.mkdir()
    elif kind == "20 MB":
        m.write_text(json.dumps({"bundle_format": 1, "pad": "x" * (20 << 20)}))
    elif kind == "nested 100000 deep":
        m.write_text("[" * 100000 + "]" * 100000)
    elif kind == "NaN in it":
        m.write_text(m.read_text().replace('"params": ', '"params": NaN, "x": '))
    elif kind == "not UTF-8":
        m.write_bytes(b"\xff\xfe" + m.read_bytes())


@pytest.mark.parametrize(
    "kind,why",
    [
        ("a link to /dev/zero", "not a regular file"),
        ("a FIFO", "not a regular file"),
        ("a directory", "is a directory, not a file"),
        ("20 MB", "over the 16,777,216-byte limit"),
        ("nested 100000 deep", "nests deeper than 64 levels"),
        ("NaN in it", "not an edgeffnet bundle"),
        ("not UTF-8", "not UTF-8 text"),
    ],
)
def test_a_manifest_that_cannot_be_read_safely_is_one_line(cli, built, photo, tmp_path, kind, why):
    b = copy_bundle(built, tmp_path)
    _manifest_is(kind, b, tmp_path)
    for args in (("predict", b, photo), ("bench", b, "-n", "2", "-s", "0"), ("eval", b, "--data", photo.parent)):
        refused(cli(*args), why)
    assert not (b / "bench").exists() and not (b / "eval").exists()


# -- damaged artifacts -------------------------------------------------------------------------------------


def _damage(kind: str, b: Path, other: Path) -> None:
    if kind == "empty model.sim.onnx":
        (b / "model.sim.onnx").write_bytes(b"")
    elif kind == "garbage model.sim.onnx":
        (b / "model.sim.onnx").write_bytes(np.random.default_rng(1).bytes(5000))
    elif kind == "model.sim.onnx of another resolution":
        (b / "model.sim.onnx").write_bytes((other / "model.sim.onnx").read_bytes())
    elif kind == "garbage model.xml":
        (b / "model.xml").write_text("<?xml version='1.0'?><net><layers><layer id='0' type='Nope'/></layers></net>")
    elif kind == "model.xml with no inputs":
        xml = (b / "model.xml").read_text()
        (b / "model.xml").write_text(xml.replace('type="Parameter"', 'type="Nonsense"', 1))
    elif kind == "model.xml of another resolution":
        for name in ("model.xml", "model.bin"):
            (b / name).write_bytes((other / name).read_bytes())
    elif kind == "reference.npz not a zip":
        (b / "reference.npz").write_bytes(b"PK not really" + bytes(1000))
    elif kind == "reference.npz holding a pickle":
        with zipfile.ZipFile(b / "reference.npz", "w") as z:
            z.writestr(
                "views.npy",
                b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (1,), }".ljust(128 - 1)
                + b"\n"
                + b"cos\nsystem\n(S'true'\ntR.",
            )
            z.writestr("logits.npy", b"")
    elif kind == "reference.npz of other shapes":
        np.savez(b / "reference.npz", views=np.zeros((2, 32, 32, 3), np.uint8), logits=np.zeros((2, 10), np.float32))
    elif kind == "reference.npz a link to /dev/zero":
        (b / "reference.npz").unlink()
        (b / "reference.npz").symlink_to("/dev/zero")


ARTIFACTS = {  # kind: (the commands that read that file, what the line says)
    "empty model.sim.onnx": (("eval",), "model.sim.onnx: it is damaged or not an ONNX graph"),
    "garbage model.sim.onnx": (("eval",), "model.sim.onnx: it is damaged or not an ONNX graph"),
    "model.sim.onnx of another resolution": (("eval",), "takes input 3x96x96 but the manifest says 3x64x64"),
    "garbage model.xml": (("predict", "bench", "eval"), "the IR is damaged or not an OpenVINO IR"),
    "model.xml with no inputs": (("predict", "bench", "eval"), "the IR is damaged or not an OpenVINO IR"),
    "model.xml of another resolution": (
        ("predict", "bench", "eval"),
        "takes input 3x96x96 but the manifest says 3x64x64",
    ),
}


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> Path:
    """Another model's bundle (96 pixels) whose files are swapped in."""
    root = tmp_path_factory.mktemp("other")
    import subprocess
    import sys

    from hostile_cli import REPO  # noqa: F401

    env = {**os.environ, "EDGEFFNET_CACHE": str(root / "cache")}
    r = subprocess.run(
        [sys.executable, "-m", "edgeffnet.cli", "build", "b0,res=96", "-o", str(root / "b")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    return root / "b"


@pytest.mark.parametrize("kind", sorted(ARTIFACTS))
def test_a_damaged_artifact_is_one_line_naming_it(cli, built, other, photo, tmp_path, kind):
    commands, why = ARTIFACTS[kind]
    b = copy_bundle(built, tmp_path)
    _damage(kind, b, other)
    before = files_under(b)
    for command in commands:
        args = {
            "predict": ("predict", b, photo),
            "bench": ("bench", b, "-n", "2", "-s", "0", "--warmup", "0"),
            "eval": ("eval", b, "--data", photo.parent),
        }[command]
        r = refused(cli(*args), why)
        assert "Exception from src" not in r and "Check '" not in r
    assert files_under(b) == before


REFERENCE = {
    "reference.npz not a zip": "reference.npz is damaged (not an .npz archive)",
    "reference.npz holding a pickle": "reference.npz is damaged (ValueError)",
    "reference.npz of other shapes": "not what the manifest says",
    "reference.npz a link to /dev/zero": "not a regular file",
}


@pytest.mark.parametrize("kind", sorted(REFERENCE))
def test_a_damaged_reference_is_one_line_and_never_unpickled(cli, built, other, tmp_path, kind):
    """What verifies a bundle (a farm device, compile on the device) refuses it in one line; bench, which
    only wants a realistic input, falls back to a seeded one and still measures."""
    from edgeffnet.bundle import Bundle
    from edgeffnet.core.errors import UserError

    b = copy_bundle(built, tmp_path)
    _damage(kind, b, other)
    with pytest.raises(UserError) as e:
        Bundle.open(b).reference()
    assert REFERENCE[kind] in str(e.value) and "\n" not in str(e.value)
    r = cli("bench", b, "-n", "2", "-s", "0", "--warmup", "0")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r


@pytest.mark.parametrize(
    "kind,command",
    [("garbage model.xml", "predict"), ("model.xml with no inputs", "bench"), ("garbage model.sim.onnx", "eval")],
)
def test_the_runtime_prints_nothing_of_its_own_before_the_line(built, other, photo, tmp_path, kind, command):
    """Run as a process: what the runtimes' C++ writes to the terminal (file descriptor 2) counts too."""
    import subprocess
    import sys

    from hostile_cli import REPO

    b = copy_bundle(built, tmp_path)
    _damage(kind, b, other)
    args = {
        "predict": ("predict", b, photo),
        "bench": ("bench", b, "-n", "2", "-s", "0"),
        "eval": ("eval", b, "--data", photo.parent),
    }[command]
    r = subprocess.run(
        [sys.executable, "-m", "edgeffnet.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.endswith(": loading")]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("edgeffnet: error: "), r.stderr
    assert "damaged" in lines[0] and r.stdout == ""

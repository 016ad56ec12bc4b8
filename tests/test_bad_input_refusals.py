"""Hostile and careless inputs, as a person at a terminal would give them.

Every bad input must end in one clear line on stderr (`edgeffnet: error: ...`, click's usage errors
included), a non-zero exit, no traceback and nothing half-written; the few inputs that
are odd but fine (a path with spaces and commas, a 1x1 or a 12000x12000 photo) must work.

The CLI runs in-process through `edgeffnet.cli.main`, exactly as the console script calls it, so a
traceback fails the test with the exception itself. One small bundle is built once (in a subprocess, at
a path with spaces and commas) and copied for every kind of damage.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from conftest import Ran, assert_refused, run_cli_process
from PIL import Image

from edgeffnet import cli as edgeffnet_cli
from edgeffnet.core.errors import UserError
from edgeffnet.core.preprocess import MAX_PIXELS, ImageTooLarge, imagenet_recipe, read_image
from edgeffnet.measure import report
from edgeffnet.network import weights
from edgeffnet.precision import calibration
from edgeffnet.specs.scaling import parse_spec

SPEC = "b0,res=96"
STAGE_NAMES = ("reference", "export", "simplify", "precision", "compile")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _own_cache(cache_dir, monkeypatch):
    monkeypatch.setenv("EDGEFFNET_CACHE", str(cache_dir))


def no_stage_ran(r: Ran) -> None:
    """Refused in prepare: no stage line (the first stage prints `reference  N.NNs ...`)."""
    assert not any(line.split()[0] in STAGE_NAMES for line in r.stderr.splitlines() if line.split()), r.stderr


# -- 1. specs ------------------------------------------------------------------------------------

LONG_SPEC = "b0," + "w=1," * 5000 + "res=96"


@pytest.mark.parametrize(
    "spec,why",
    [
        ("phi=nan", "not a plain decimal"),
        ("phi=inf", "not a plain decimal"),
        ("phi=-inf", "not a plain decimal"),
        ("phi=1e9", "outside -12..12"),
        ("phi=-50", "outside -12..12"),
        ("b0,res=0", "must be a positive number"),
        ("b0,res=-3", "must be a positive number"),
        ("b0,res=100000", "outside 32..4096"),
        ("b0,res=96.5", "whole number of pixels"),
        ("b0,w=0", "must be a positive number"),
        ("b0,d=0", "must be a positive number"),
        ("b0,w=1,w=2", "'w' given twice"),
        ("b0,width=1,w=2", "'w' given twice"),
        ("b0,res=\uff19\uff16", "not a plain decimal"),  # full-width digits: float() would take them
        ("b0,res=1_28", "not a plain decimal"),  # so would it underscores
        ("b0,res=\u0669\u0666", "not a plain decimal"),  # Arabic-Indic digits
        ("\uff42\uff10", "unknown model"),  # full-width b0
        ("b0,\uff57=1", "is not KEY=VALUE"),
        ("", "empty spec"),
        ("   ", "empty spec"),
        (",", "unknown model"),
        (LONG_SPEC, "longer than 256 characters"),
        ("phi=12,alpha=1e300", "alpha=1e+300 is outside 0.1..10"),
        ("phi=-12,gamma=1e-300", "gamma=1e-300 is outside 0.1..10"),
        ("phi=1,alpha=0", "must be a positive number"),
    ],
)
def test_a_bad_spec_is_one_line_before_any_work(cli, tmp_path, spec, why):
    assert_refused(cli("info", spec), why)
    dest = tmp_path / "b"
    assert_refused(cli("build", spec, "-o", str(dest)), why)
    assert list(tmp_path.iterdir()) == []


def test_a_long_spec_is_shown_shortened():
    with pytest.raises(UserError) as e:
        parse_spec(LONG_SPEC)
    assert len(str(e.value)) < 400 and f"({len(LONG_SPEC)} characters)" in str(e.value)


def test_plain_decimals_still_parse():
    assert parse_spec("b0,res=96.0").resolution == 96
    assert parse_spec("phi=-1").phi == -1 and parse_spec("phi=+.5").phi == 0.5 and parse_spec("phi=2E-1").phi == 0.2


def test_a_network_too_large_to_export_is_refused_before_any_memory_is_taken(cli, tmp_path):
    # `info` describes it (counting needs no memory); a build would hold 38 billion parameters.
    assert cli("info", "b0,w=16,d=32", "--json").returncode == 0
    r = cli("build", "b0,w=16,d=32", "-o", str(tmp_path / "b"))
    assert_refused(r, "parameters", "at most 400,000,000")
    no_stage_ran(r)
    assert list(tmp_path.iterdir()) == []


# -- 5. numbers: whole-number and float options ---------------------------------------------------


@pytest.mark.parametrize(
    "args,option",
    [
        (("build", SPEC, "--num-classes", "99999999999999999999"), "--num-classes"),
        (("build", SPEC, "--num-classes", "1e7"), "--num-classes"),
        (("build", SPEC, "--num-classes", "0"), "--num-classes"),
        (("info", SPEC, "--num-classes", "99999999999999999999"), "--num-classes"),
        (("info", SPEC, "--num-classes", "1e7"), "--num-classes"),
        (("build", SPEC, "--views", "100000000"), "--views"),
        (("build", SPEC, "--calib-size", "100000000"), "--calib-size"),
        (("build", SPEC, "--fidelity-views", "100000000"), "--fidelity-views"),
        (("build", SPEC, "--batch", "1e9"), "--batch"),
        (("build", SPEC, "--batch", "1000000000"), "--batch"),
        (("build", SPEC, "--resolution", "100000"), "--resolution"),
        (("build", SPEC, "--seed", "-1"), "--seed"),
        (("build", SPEC, "--opset", "99999999999999999999"), "--opset"),
        (("build", SPEC, "--min-agreement", "nan"), "--min-agreement"),
        (("build", SPEC, "--min-agreement", "2"), "--min-agreement"),
        (("bench", "x", "-s", "nan"), "--seconds"),
        (("bench", "x", "-s", "inf"), "--seconds"),
        (("bench", "x", "--warmup", "nan"), "--warmup"),
        (("bench", "x", "-n", "1e9"), "--iterations"),
        (("bench", "x", "--threads", "0"), "--threads"),
        (("predict", "x", "y.jpg", "--top", "1e3"), "--top"),
        (("cam", "x", "y.jpg", "-o", "z", "--top", "99999999999999999999"), "--top"),
        (("sweep", "-s", "nan"), "--seconds"),
        (("sweep", "--task-timeout", "nan"), "--task-timeout"),
        (("search", "--phi", "nan"), "--phi"),
        (("search", "--lr", "inf"), "--lr"),
        (("fit", "b0", "--latency-ms", "inf"), "--latency-ms"),
        (("fit", "b0", "--phi-max", "nan"), "--phi-max"),
    ],
)
def test_an_out_of_range_number_is_a_usage_error(cli, args, option):
    assert_refused(cli(*args), "Invalid value for", option)


def _options(group: click.Group, path=()) -> list[tuple[tuple[str, ...], click.Option]]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _options(command, path + (name,))
        else:
            found += [(path + (name,), p) for p in command.params if isinstance(p, click.Option)]
    return found


def test_every_float_option_refuses_nan_and_inf(cli):
    floats = [(path, o) for path, o in _options(edgeffnet_cli.cli) if isinstance(o.type, click.types.FloatParamType)]
    assert len(floats) >= 15
    for path, option in floats:
        assert isinstance(option.type, edgeffnet_cli.FiniteFloat), (path, option.name)
        for bad in ("nan", "inf", "-inf"):
            assert_refused(cli(*path, option.opts[0], bad), "Invalid value for", option.opts[0])


def test_every_whole_number_option_is_bounded(cli):
    ints = [(path, o) for path, o in _options(edgeffnet_cli.cli) if isinstance(o.type, click.types.IntParamType)]
    assert len(ints) >= 20
    for path, option in ints:
        assert isinstance(option.type, click.IntRange) and option.type.max is not None, (path, option.name)
        assert_refused(cli(*path, option.opts[0], "99999999999999999999"), "Invalid value for", option.opts[0])


def test_sets_that_no_memory_holds_are_refused_before_any_work(cli, tmp_path):
    r = cli("build", "b0,res=2048", "-p", "int8", "--calib-size", "5000", "-o", str(tmp_path / "b"))
    assert_refused(r, "--calib-size 5000 at 2048 px", "GiB")
    no_stage_ran(r)
    assert list(tmp_path.iterdir()) == []


# -- 2. checkpoints --------------------------------------------------------------------------------


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class _RunsCode:
    """Unpickling this touches the marker file: what a hostile checkpoint would do, harmlessly."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.fixture(scope="module")
def b0_state() -> dict:
    from edgeffnet.network.reference import create_model

    return create_model(SPEC).state_dict()


@pytest.mark.parametrize(
    "kind,why",
    [
        ("missing", "does not exist"),
        ("empty", "cannot read checkpoint"),
        ("random", "cannot read checkpoint"),
        ("text", "cannot read checkpoint"),
        ("truncated", "cannot read checkpoint"),
        ("directory", "is a directory"),
        ("resnet", "not an EfficientNet"),
        ("other-shapes", ""),
        ("no-tensors", "holds no state_dict"),
        ("non-string-keys", "holds no state_dict"),
    ],
)
def test_a_bad_checkpoint_is_one_line_before_any_work(cli, tmp_path, b0_state, kind, why):
    ckpt = tmp_path / "weights.pth"
    if kind == "empty":
        ckpt.write_bytes(b"")
    elif kind == "random":
        ckpt.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "text":
        ckpt.write_text("these are not the weights you are looking for\n" * 20)
    elif kind == "truncated":
        ckpt.write_bytes(_torch_bytes(b0_state)[:100_000])
    elif kind == "directory":
        ckpt.mkdir()
    elif kind == "resnet":
        torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}, ckpt)
    elif kind == "other-shapes":  # an edgeffnet b0 checkpoint given for b2: same keys, other shapes
        torch.save(b0_state, ckpt)
    elif kind == "no-tensors":
        torch.save({"epoch": 3, "lr": 0.1}, ckpt)
    elif kind == "non-string-keys":
        torch.save({1: torch.zeros(1), 2: torch.zeros(1)}, ckpt)
    dest = tmp_path / "b"
    r = cli("build", "b2,res=96" if kind == "other-shapes" else SPEC, "-w", str(ckpt), "-o", str(dest))
    line = assert_refused(r, why)
    assert "weights_only" not in line and "Weights only load failed" not in line
    no_stage_ran(r)
    assert not dest.exists()


def test_fuzzed_checkpoints_are_refused_as_unreadable(tmp_path, b0_state):
    """Fifty random and short files, each shaped a little like a checkpoint, never a traceback."""
    rng = np.random.default_rng(15)
    whole = _torch_bytes({"a": torch.zeros(3)})
    real = _torch_bytes(b0_state)
    makers = [
        lambda n: rng.bytes(n),
        lambda n: bytes(rng.integers(32, 127, n, dtype=np.uint8)),  # printable text
        lambda n: b"\x80\x02" + rng.bytes(n),  # a pickle's header, then junk
        lambda n: b"PK\x03\x04" + rng.bytes(n),  # a zip's header, then junk
        lambda n: whole[: n % len(whole)],  # a small checkpoint cut short
        lambda n: real[: 1000 + 997 * n],  # a real one cut short
        lambda n: pickle.dumps(rng.bytes(n))[: max(1, n // 2)],
    ]
    spec = parse_spec(SPEC)
    for i in range(50):
        path = tmp_path / f"fuzz{i}.pth"
        path.write_bytes(makers[i % len(makers)](int(rng.integers(0, 300))))
        with pytest.raises(UserError, match="cannot read checkpoint|holds no state_dict"):
            weights.load_file(path, spec)


@pytest.mark.parametrize("container", ["torch-zip", "plain-pickle"])
def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(cli, tmp_path, container):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pth"
    payload = {"state_dict": {"stem.conv.weight": torch.zeros(1)}, "hook": _RunsCode(marker)}
    if container == "torch-zip":
        torch.save(payload, ckpt)
    else:
        ckpt.write_bytes(pickle.dumps(payload))
    assert not marker.exists()
    dest = tmp_path / "b"
    assert_refused(cli("build", SPEC, "-w", str(ckpt), "-o", str(dest)), "cannot read checkpoint")
    assert not marker.exists() and not dest.exists()
    pickle.loads(pickle.dumps(_RunsCode(marker)))  # the marker works: plain unpickling would have made it
    assert marker.exists()


# -- 3. calibration and evaluation data --------------------------------------------------------------


def _png(path: Path, width: int, height: int, bits: int = 1, colour: int = 0) -> Path:
    """A valid PNG of one flat colour, written row by row: a 30000x30000 one is a 100 kB file."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    channels = {0: 1, 2: 3}[colour]
    row = b"\0" * (1 + (width * bits * channels + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def hostile_images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("images")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(d / "one_pixel.png")
    Image.new("RGB", (12000, 12000), (120, 30, 200)).save(d / "huge.jpg", quality=40)
    Image.new("RGB", (64, 48), (10, 200, 30)).save(d / "ok.jpg")
    Image.fromarray(np.full((40, 50), 40000, np.uint16)).save(d / "sixteen_bit.png")
    Image.new("CMYK", (40, 50), (0, 255, 0, 0)).save(d / "cmyk.jpg")
    _png(d / "bomb.png", 30000, 30000)  # 900 megapixels: PIL's own bomb bound
    _png(d / "huge_rgb.png", 12000, 12000, bits=8, colour=2)  # 144 megapixels: over the 89 a PNG may decode to
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + np.random.default_rng(1).bytes(500))
    (d / "not_an_image.jpg").write_text("a text file named like a photo\n")
    return {p.stem: p for p in d.iterdir()}


def _folder(tmp_path: Path, name: str, files: dict[str, bytes | Path]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for fname, content in files.items():
        if isinstance(content, Path):
            shutil.copy(content, folder / fname)
        else:
            (folder / fname).write_bytes(content)
    return folder


def _npy(tmp_path: Path, name: str, x: np.ndarray) -> Path:
    np.save(tmp_path / name, x)
    return tmp_path / name


@pytest.mark.parametrize(
    "kind,why",
    [
        ("empty folder", "no readable image"),
        ("only text files", "'not an image': 2"),
        ("only corrupt JPEGs", "'corrupt': 2"),
        ("a decompression bomb", "over 89 megapixels"),
        ("a 144-megapixel PNG", "over 89 megapixels"),
        ("npy of the wrong shape", "expected N x 3 x 96 x 96"),
        ("npy of integers", "expected N x 3 x 96 x 96 floats"),
        ("npy with NaN", "hold NaN or Inf"),
        ("npy with Inf", "hold NaN or Inf"),
        ("npz with no arrays", "holds no arrays"),
        ("npy of no samples", "holds no samples"),
        ("npy that is text", "cannot read calibration tensors"),
        ("missing", "does not exist"),
        ("a text file", "not .npy/.npz"),
    ],
)
def test_bad_calibration_data_is_refused_before_the_first_stage(cli, tmp_path, hostile_images, kind, why):
    x = np.zeros((4, 3, 96, 96), np.float32)
    if kind == "empty folder":
        source = _folder(tmp_path, "calib", {})
    elif kind == "only text files":
        source = _folder(tmp_path, "calib", {"a.txt": b"hello", "notes.md": b"# notes"})
    elif kind == "only corrupt JPEGs":
        source = _folder(
            tmp_path, "calib", {"a.jpg": hostile_images["corrupt"], "b.jpg": hostile_images["not_an_image"]}
        )
    elif kind == "a decompression bomb":
        source = _folder(tmp_path, "calib", {"bomb.png": hostile_images["bomb"]})
    elif kind == "a 144-megapixel PNG":
        source = _folder(tmp_path, "calib", {"huge.png": hostile_images["huge_rgb"]})
    elif kind == "npy of the wrong shape":
        source = _npy(tmp_path, "c.npy", np.zeros((4, 3, 32, 32), np.float32))
    elif kind == "npy of integers":
        source = _npy(tmp_path, "c.npy", np.zeros((4, 3, 96, 96), np.int64))
    elif kind == "npy with NaN":
        x[2, 1, 5, 5] = np.nan
        source = _npy(tmp_path, "c.npy", x)
    elif kind == "npy with Inf":
        x[0, 0, 0, 0] = -np.inf
        source = _npy(tmp_path, "c.npy", x)
    elif kind == "npz with no arrays":
        np.savez(tmp_path / "c.npz")
        source = tmp_path / "c.npz"
    elif kind == "npy of no samples":
        source = _npy(tmp_path, "c.npy", np.zeros((0, 3, 96, 96), np.float32))
    elif kind == "npy that is text":
        source = tmp_path / "c.npy"
        source.write_text("not numpy")
    elif kind == "missing":
        source = tmp_path / "nowhere"
    else:
        source = tmp_path / "c.txt"
        source.write_text("1 2 3")
    dest = tmp_path / "out"
    r = cli("build", SPEC, "-p", "int8", "--calib", str(source), "-o", str(dest))
    assert_refused(r, why)
    no_stage_ran(r)
    assert not dest.exists()


def test_odd_photos_calibrate_and_are_counted(tmp_path, hostile_images):
    folder = _folder(tmp_path, "calib", {f"{k}{p.suffix}": p for k, p in hostile_images.items()})
    cal = calibration.load(folder, 12, imagenet_recipe(96))
    assert cal.data.shape == (12, 3, 96, 96) and np.isfinite(cal.data).all()
    assert cal.images == 5  # one_pixel, huge.jpg, ok, sixteen_bit, cmyk
    assert cal.converted == {"16-bit": 1, "CMYK": 1}
    assert cal.skipped == {"corrupt": 2, f"over {MAX_PIXELS / 1e6:.0f} megapixels": 2}


def test_a_huge_jpeg_is_decoded_small(hostile_images):
    rgb, mode = read_image(hostile_images["huge"], short_side=110)
    assert mode == "RGB" and 220 <= min(rgb.size) < 440  # reduced while decoding, then to twice the side
    rgb, _ = read_image(hostile_images["huge"])  # predict: only as much as the pixel bound asks
    assert rgb.size[0] * rgb.size[1] <= MAX_PIXELS and rgb.size[0] >= 6000
    with pytest.raises(ImageTooLarge):
        read_image(hostile_images["bomb"])


def test_reading_a_huge_jpeg_takes_bounded_memory(hostile_images):
    # Decoded whole it is 432 MB of RGB; at the decoder's 1/8 scale, 7 MB. The peak resident memory of a
    # fresh process (VmHWM: getrusage's maxrss would carry this test process's peak across exec).
    code = (
        "import re, sys; from pathlib import Path; from edgeffnet.core.preprocess import read_image; "
        "read_image(sys.argv[1], short_side=110); "
        "print(int(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text())[1]) // 1024)"
    )
    peak_mb = int(
        subprocess.run(
            [sys.executable, "-c", code, str(hostile_images["huge"])], capture_output=True, text=True, check=True
        ).stdout
    )
    assert peak_mb < 300


# -- 4. outputs ----------------------------------------------------------------------------------------


def test_output_at_an_existing_directory_that_is_not_a_bundle_deletes_nothing(cli, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (mine / "sub").mkdir()
    assert_refused(cli("build", SPEC, "-o", str(mine)), str(mine), "not an edgeffnet bundle")
    assert (
        sorted(p.name for p in mine.iterdir()) == ["notes.txt", "sub"] and (mine / "notes.txt").read_text() == "keep me"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize(
    "kind,why",
    [
        ("a file", "is a file"),
        ("under a file", "is not a directory"),
        ("proc", "cannot write"),
        ("empty", "-o is empty"),
        ("dangling symlink", "does not exist"),
    ],
)
def test_an_output_that_cannot_be_a_bundle_is_one_line(cli, tmp_path, kind, why):
    before = None
    if kind == "a file":
        dest = tmp_path / "file"
        dest.write_text("keep me")
    elif kind == "under a file":
        (tmp_path / "file").write_text("keep me")
        dest = tmp_path / "file" / "b"
    elif kind == "proc":  # tests run as root, for whom no ordinary directory is read-only
        dest = Path("/proc/edgeffnet-bundle")
    elif kind == "empty":
        dest = ""
    else:
        dest = tmp_path / "link"
        dest.symlink_to(tmp_path / "gone" / "bundle")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_refused(cli("build", SPEC, "-o", str(dest)), why)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if kind in ("a file", "under a file"):
        assert (tmp_path / "file").read_text() == "keep me"


def test_output_dot_in_an_empty_directory_is_refused(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for dest in (".", str(tmp_path)):
        assert_refused(cli("build", SPEC, "-o", dest), "the current directory", "bundle")
    assert list(tmp_path.iterdir()) == []


def test_output_at_a_mount_point_is_refused(cli, tmp_path, monkeypatch):
    # An empty mount point exists and cannot be renamed over (EBUSY); mounting needs privileges a test
    # may lack, so ismount answers for it.
    mount = tmp_path / "mnt"
    mount.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == mount or real(p))
    assert_refused(cli("build", SPEC, "-o", str(mount)), "a mount point", str(mount / "bundle"))
    assert list(mount.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["mnt"]


# -- 6. bundles ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory, cache_dir) -> Path:
    """A bundle at a path with spaces and commas: a real build through the console entry point works."""
    dest = tmp_path_factory.mktemp("bundles") / "my bundle, v1"
    r = run_cli_process("build", SPEC, "-o", str(dest), env={**os.environ, "EDGEFFNET_CACHE": str(cache_dir)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(dest) and (dest / "manifest.json").is_file()
    return dest


def test_an_output_with_spaces_and_commas_works(cli, built, hostile_images):
    r = cli("predict", str(built), str(hostile_images["ok"]), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["image"] == str(hostile_images["ok"])


@pytest.mark.parametrize("image", ["one_pixel", "huge", "sixteen_bit", "cmyk"])
def test_predict_takes_odd_photos(cli, built, hostile_images, image):
    r = cli("predict", str(built), str(hostile_images[image]), "--json")
    assert r.returncode == 0, r.stderr
    assert np.isfinite([c["probability"] for c in json.loads(r.stdout)[0]["top"]]).all()


@pytest.mark.parametrize(
    "image,why",
    [
        ("not_an_image", "cannot read image"),
        ("corrupt", "cannot read image"),
        ("missing", "does not exist"),
        ("directory", "is a directory"),
        ("bomb", "too large"),
        ("huge.png", "too large (12000x12000 pixels"),
    ],
)
def test_predict_on_what_is_not_an_image(cli, built, hostile_images, tmp_path, image, why):
    path = {"missing": tmp_path / "nowhere.jpg", "directory": tmp_path, "huge.png": hostile_images["huge_rgb"]}.get(
        image
    ) or hostile_images[image]
    assert_refused(cli("predict", str(built), str(path)), why)


def _damaged(built: Path, tmp_path: Path, kind: str) -> Path:
    b = tmp_path / "bundle"
    if kind == "not a bundle":
        b.mkdir()
        (b / "notes.txt").write_text("hello")
        return b
    shutil.copytree(built, b)
    manifest = json.loads((b / "manifest.json").read_text())
    if kind == "garbled manifest":
        (b / "manifest.json").write_text('{"bundle_format": 1, "spec": ')
    elif kind == "manifest is a list":
        (b / "manifest.json").write_text("[1, 2]")
    elif kind == "manifest lacks keys":
        del manifest["input"], manifest["preprocess"]
    elif kind == "target lacks backend":
        del manifest["target"]["backend"]
    elif kind == "input lacks batch":
        del manifest["input"]["batch"]
    elif kind == "preprocess lacks crop":
        del manifest["preprocess"]["crop"]
    elif kind == "entries of the wrong type":
        manifest.update(target="cpu", input=[1], preprocess=None)
    elif kind == "model.xml deleted":
        (b / "model.xml").unlink()
    elif kind == "model.bin deleted":
        (b / "model.bin").unlink()
    elif kind == "model.bin truncated":
        (b / "model.bin").write_bytes((b / "model.bin").read_bytes()[:1000])
    elif kind == "model.xml truncated":
        (b / "model.xml").write_bytes((b / "model.xml").read_bytes()[:3000])
    if kind in (
        "manifest lacks keys",
        "target lacks backend",
        "input lacks batch",
        "preprocess lacks crop",
        "entries of the wrong type",
    ):
        (b / "manifest.json").write_text(json.dumps(manifest))
    return b


DAMAGE = {
    "not a bundle": "not an edgeffnet bundle",
    "garbled manifest": "not an edgeffnet bundle",
    "manifest is a list": "not an edgeffnet manifest",
    "manifest lacks keys": "lacks input, preprocess",
    "target lacks backend": "'target' entry lacks backend",
    "input lacks batch": "'input' entry lacks batch",
    "preprocess lacks crop": "'preprocess' entry lacks crop",
    "entries of the wrong type": "entry is not an object",
    "model.xml deleted": "no complete OpenVINO IR",
    "model.bin deleted": "no complete OpenVINO IR",
    "model.bin truncated": "cannot load",
    "model.xml truncated": "cannot load",
}
ARTIFACT_DAMAGE = {k for k in DAMAGE if k.startswith("model.")}


@pytest.mark.parametrize("command", ["predict", "bench", "compile"])
@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_bundle_is_one_line(cli, built, hostile_images, tmp_path, command, kind):
    b = _damaged(built, tmp_path, kind)
    before = sorted(p.name for p in b.iterdir())
    args = {
        "predict": ("predict", str(b), str(hostile_images["ok"])),
        "bench": ("bench", str(b), "-n", "3", "-s", "0", "--warmup", "0"),
        "compile": ("compile", str(b)),
    }[command]
    r = cli(*args)
    # compile finishes TensorRT engines only: an OpenVINO bundle has nothing to compile, whole or damaged.
    why = "nothing to compile" if command == "compile" and kind in ARTIFACT_DAMAGE else DAMAGE[kind]
    assert_refused(r, why)
    assert sorted(p.name for p in b.iterdir()) == before  # no bench record of a damaged bundle


# -- 6. bench records and target profiles --------------------------------------------------------------


@pytest.fixture(scope="module")
def record(built, tmp_path_factory) -> dict:
    b = tmp_path_factory.mktemp("measured") / "b"
    shutil.copytree(built, b)
    r = run_cli_process("bench", str(b), "-n", "5", "-s", "0", "--warmup", "0", timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads((b / "bench" / "openvino-latency.json").read_text())


@pytest.mark.parametrize(
    "damage,why",
    [
        (lambda d: d.pop("stats"), "lacks stats"),
        (lambda d: d["stats"].pop("p50_ms"), "'stats' entry lacks p50_ms"),
        (lambda d: d["model"].pop("macs"), "'model' entry lacks macs"),
        (lambda d: d["device"].pop("name"), "'device' entry lacks name"),
        (lambda d: d.update(model="b0"), "'model' entry is not an object"),
        (lambda d: d["stats"].update(p50_ms="fast"), "p50_ms that is not a number"),
        (lambda d: d.update(format=7), "record format 7"),
        (lambda d: d.update(record="something else"), "not an edgeffnet bench record"),
    ],
)
def test_report_on_a_damaged_record_is_one_line(cli, record, tmp_path, damage, why):
    d = json.loads(json.dumps(record))
    damage(d)
    path = tmp_path / "record.json"
    path.write_text(json.dumps(d))
    assert_refused(cli("report", str(path), "-o", str(tmp_path / "report")), why)
    assert not (tmp_path / "report").exists()


def test_report_on_a_file_that_is_not_json(cli, tmp_path):
    path = tmp_path / "record.json"
    path.write_text("{not json")
    assert_refused(cli("report", str(path), "-o", str(tmp_path / "r")), "not an edgeffnet bench record")


@pytest.mark.parametrize(
    "profile,why",
    [
        ('name = "mine"\nbackend = "openvino"\ndevice = "CPU"\nprecisions = []\n', "at least one of"),
        ('name = "mine"\nbackend = "openvino"\ndevice = "CPU"\nprecisions = "fp32"\n', "at least one of"),
        ('name = "mine"\nbackend = "openvino"\ndevice = "CPU"\nprecisions = ["fp64"]\n', "precision fp64"),
        (
            'name = "mine"\nbackend = "openvino"\ndevice = "CPU"\nprecisions = ["fp32"]\ndefault_precision = "int8"\n',
            "default_precision 'int8'",
        ),
        ('name = 3\nbackend = "openvino"\ndevice = "CPU"\nprecisions = ["fp32"]\n', "name must be"),
        ('name = "mine"\nbackend = "openvino"\ndevice = "CPU"\nprecisions = ["fp32"]\npeak = 3\n', "[peak] must be"),
        ('name = "mine"\nbackend = "tpu"\ndevice = "CPU"\nprecisions = ["fp32"]\n', "backend 'tpu'"),
        ('name = "mine"\nprecisions = ["fp32"]\n', "lacks backend, device"),
        ("this is = not [toml\n", "cannot read target profile"),
    ],
)
def test_a_bad_target_profile_is_one_line(cli, tmp_path, profile, why):
    path = tmp_path / "mine.toml"
    path.write_text(profile)
    dest = tmp_path / "b"
    r = cli("build", SPEC, "--target", str(path), "-o", str(dest))
    assert_refused(r, why)
    no_stage_ran(r)
    assert not dest.exists()


# -- 7. the HTML report escapes what users wrote ------------------------------------------------------


def test_the_html_report_escapes_every_user_string(record, tmp_path):
    hostile = "<script>alert('{}')</script>"
    d = json.loads(json.dumps(record))
    d["model"]["spec"] = hostile.format("spec")
    d["bundle"] = "/tmp/<img src=x onerror=alert('path')>/b"
    d["device"]["name"] = hostile.format("device")
    d["device"]["kind"] = "<b>kind</b>"
    d["host"]["hostname"] = hostile.format("host")
    d["target"] = hostile.format("target")
    d["tools"] = {"<i>tool</i>": "<script>version</script>"}
    path = tmp_path / "record.json"
    path.write_text(json.dumps(d))
    rep = report.write(report.collect([path]), tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<script" not in page.lower() and "<img src=x" not in page and "<b>kind" not in page
    assert "<i>tool" not in page
    assert "&lt;script&gt;alert(&#x27;spec&#x27;)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(&#x27;device&#x27;)" in page and "&lt;script&gt;alert(&#x27;host&#x27;)" in page
    assert rep["rows"][0]["model"] == hostile.format("spec")  # the data keeps what was written; the page escapes it


@pytest.mark.parametrize(
    "bad,why", [("bomb", "too large"), ("huge_rgb", "too large"), ("corrupt", "cannot read image")]
)
def test_a_bad_image_in_search_training_data_is_one_error(tmp_path, hostile_images, bad, why):
    from edgeffnet.search.train import train_and_evaluate

    for split in ("train", "val"):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            shutil.copy(hostile_images["ok"], tmp_path / split / label / "ok.jpg")
    source = hostile_images[bad]
    shutil.copy(source, tmp_path / "train" / "dog" / f"bad{source.suffix}")
    with pytest.raises(UserError, match=why):
        train_and_evaluate("b0,res=32", tmp_path / "train", tmp_path / "val", epochs=1)

"""Issue 22: what one image may make edgeffnet allocate. Decoding is bounded (89 megapixels; a larger JPEG
is decoded at reduced scale), and so is the aspect-keeping resize, checked from the image's size and the
recipe before any memory is taken: a 2 KB PNG of 1 x 1,000,000 pixels is 1 megapixel, but resizing its
short side to 73 pixels would ask for 16 GB. Where a folder is read, such a file is skipped and counted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from conftest import assert_refused as refused
from hostile_cli import REPO, build_bundle, files_under, png
from PIL import Image

from edgeffnet.core.preprocess import (
    MAX_ASPECT,
    MAX_PIXELS,
    ImageTooLarge,
    Preprocess,
    imagenet_recipe,
    read_image,
    resize_and_crop,
    resized_size,
)


def _solid(path: Path, size: tuple[int, int], mode: str = "RGB", **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128).save(path, **save)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bombs")
    return build_bundle(root / "b0-64", root / "cache")


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bomb-images")
    return {
        "1 x 1,000,000 PNG (the issue's)": _solid(d / "tall.png", (1, 1_000_000)),
        "300,000 x 2 PNG (wide)": _solid(d / "wide.png", (300_000, 2)),
        "3 x 40,000 grey PNG": _solid(d / "strip.png", (3, 40_000), "L"),
        "2 x 65,000 JPEG": _solid(d / "strip.jpg", (2, 65_000), "L", quality=50),
        "1 x 20,000 BMP": _solid(d / "line.bmp", (1, 20_000)),
    }


# -- the bounds, from the numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize("w,h,resize", [(1, 1_000_000, 73), (900, 1, 600), (10, 9_000, 1000), (2, 2_000, 300)])
def test_a_resize_over_the_budget_is_refused_from_the_numbers(w, h, resize):
    recipe = Preprocess(resize, resize, "bicubic", (0.0,) * 3, (1.0,) * 3)
    with pytest.raises(ImageTooLarge, match="megapixels"):
        resized_size(w, h, recipe)


def test_ordinary_photos_resize_as_before():
    recipe = imagenet_recipe(224)
    assert resized_size(640, 480, recipe) == (341, 256) and resized_size(480, 640, recipe) == (256, 341)
    assert resized_size(1, MAX_ASPECT, imagenet_recipe(64)) == (73, 73 * MAX_ASPECT)  # at the bound, it fits
    img = Image.new("RGB", (4000, 10), 50)
    assert resize_and_crop(img, imagenet_recipe(64)).size == (64, 64)


# The child's own peak resident memory, in MiB. VmHWM belongs to the memory image execve made; getrusage's
# ru_maxrss is carried across execve, so it would count the parent that forked the child (pytest, ~1 GB in
# a full run).
PEAK_MIB = "print(next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM')) // 1024)"


@pytest.mark.parametrize(
    "kind",
    [
        "1 x 1,000,000 PNG (the issue's)",
        "300,000 x 2 PNG (wide)",
        "3 x 40,000 grey PNG",
        "2 x 65,000 JPEG",
        "1 x 20,000 BMP",
    ],
)
def test_an_elongated_image_is_refused_when_read_within_little_memory(bombs, kind):
    code = (
        "import sys\nfrom edgeffnet.core.preprocess import read_image, ImageTooLarge\n"
        "try:\n    read_image(sys.argv[1])\nexcept ImageTooLarge as e:\n    print('refused', e)\n" + PEAK_MIB
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(bombs[kind])],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("refused") and "elongated" in lines[0], lines
    assert int(lines[-1]) < 600, f"{kind}: peak {lines[-1]} MB"  # the interpreter and PIL, not the image


def test_a_jpeg_over_twice_the_pixel_bound_is_decoded_at_reduced_scale(tmp_path):
    """The README promises reduced-scale decoding for a large JPEG; over 179 MP PIL's own check refused it."""
    side = (15_000, 12_500)  # 187.5 MP: over PIL's 2 x 89 MP bomb bound
    path = _solid(tmp_path / "huge.jpg", side, "L", quality=30)
    code = (
        "import sys\nfrom edgeffnet.core.preprocess import read_image\n"
        "rgb, mode = read_image(sys.argv[1])\nprint(rgb.size[0], rgb.size[1], mode)\n" + PEAK_MIB
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    w, h, mode = r.stdout.split()[:3]
    assert int(w) * int(h) <= MAX_PIXELS and int(w) >= side[0] // 8 and mode == "L"
    assert int(r.stdout.split()[-1]) < 900  # decoded small, not at 187 MP


def test_a_png_over_twice_the_pixel_bound_is_refused_unread(tmp_path):
    # A PNG header claiming 20000 x 20000: PIL refuses at open; the line says no reduced-scale decoding exists
    path = _solid(tmp_path / "small.png", (10, 10))
    data = bytearray(path.read_bytes())
    data[16:24] = (20000).to_bytes(4, "big") + (20000).to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # the IHDR chunk's CRC, so PIL reads it
    path.write_bytes(bytes(data))
    with pytest.raises(ImageTooLarge, match="not a JPEG"):
        read_image(path)


# -- through the CLI ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["1 x 1,000,000 PNG (the issue's)", "300,000 x 2 PNG (wide)", "2 x 65,000 JPEG"])
def test_predict_refuses_a_bomb_in_one_line(cli, built, bombs, kind):
    before = files_under(built)
    refused(cli("predict", built, bombs[kind]), "too large", "elongated")
    assert files_under(built) == before


def test_eval_skips_and_counts_bombs_and_keeps_the_rest(cli, built, bombs, tmp_path):
    data = tmp_path / "mixed"
    for i in range(3):
        png(data / "n01440764" / f"ok{i}.png", seed=i)
    for i, kind in enumerate(["1 x 1,000,000 PNG (the issue's)", "3 x 40,000 grey PNG", "2 x 65,000 JPEG"]):
        target = data / "n01440764" / f"bomb{i}{bombs[kind].suffix}"
        target.write_bytes(bombs[kind].read_bytes())
    r = cli("eval", built, "--data", data, "--json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r
    result = json.loads(r.stdout)
    assert result["images"] == 3 and result["skipped_count"] == 3 and result["images_total"] == 6
    assert "3 unreadable image(s) skipped" in r.stderr


def test_build_val_of_only_unreadable_images_is_refused_before_the_stages(cli, tmp_path, bombs):
    val = tmp_path / "val"
    (val / "n01440764").mkdir(parents=True)
    (val / "n01440764" / "garbage.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (val / "n01440764" / "empty.png").write_bytes(b"")
    (val / "n01440764" / "bomb.png").write_bytes(bombs["1 x 1,000,000 PNG (the issue's)"].read_bytes())
    (val / "n02123159").mkdir()
    (val / "n02123159" / "text.webp").write_text("hello")
    dest = tmp_path / "b"
    r = cli("build", "b0,res=64", "-p", "fp16", "--val", val, "-o", dest)
    refused(r, "none of the 4 images in --val", "can be read")
    assert not any(
        line.split()[0] in ("reference", "export", "simplify") for line in r.stderr.splitlines() if line.split()
    )
    assert not dest.exists() and [p.name for p in tmp_path.iterdir()] == ["val"]

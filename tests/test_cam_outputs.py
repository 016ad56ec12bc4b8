"""What `edgeffnet cam` writes and where. Two photos of one name get two PNGs (names that are the
same on every run), -o under a file is one line, --compare keeps specs that hold commas, and an image
name with matplotlib maths or rich markup in it is drawn as text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_refused as refused
from PIL import Image

import edgeffnet
from edgeffnet.workflows import cam

SPEC = "lite0,res=64"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "lite0.pt"
    edgeffnet.save_weights(edgeffnet.create_model(SPEC), path)
    return path


def _photo(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (72, 90, 3), np.uint8)).save(path)
    return path


def _pngs(out: Path) -> list[str]:
    return [r["png"] for r in json.loads((out / "cam.json").read_text())["images"]]


def test_photos_of_one_name_get_one_png_each_and_the_same_names_again(cli, checkpoint, tmp_path):
    photos = [_photo(tmp_path / d / "same.png", i) for i, d in enumerate(("a", "b", "c/deeper"))]
    photos.append(_photo(tmp_path / "other.png", 9))
    out = tmp_path / "out"
    done = cli("cam", SPEC, "-w", checkpoint, *photos, "--top", "1", "-o", out)
    assert done.returncode == 0, done.stderr
    names = _pngs(out)
    assert len(set(names)) == 4 and names[3] == "other.cam.png"
    assert all(n.startswith("same-") for n in names[:3])
    assert all((out / n).is_file() for n in names)
    assert sorted(p.name for p in out.glob("*.cam.png")) == sorted(names)
    done = cli("cam", SPEC, "-w", checkpoint, *photos, "--top", "1", "-o", out)  # again: the same files
    assert done.returncode == 0 and _pngs(out) == names and len(list(out.glob("*.cam.png"))) == 4


def test_png_names_are_unique_for_any_list():
    images = ["x/a.jpg", "y/a.jpg", "x/a.jpg", "a.png", "z/a.jpeg", "x/b c.png", "x/b_c.png"]
    names = cam.png_names(images)
    assert len(set(names)) == len(names) == len(images)
    assert cam.png_names(images) == names  # deterministic
    assert cam.png_names(["only/one.jpg"]) == ["one.cam.png"]


@pytest.mark.parametrize(
    "name",
    [
        "$\\frac{1}{$.png",
        "[/bold] [link=http://example.com]x[/link].png",
        "price $5 and $6.png",
        ":cat: \x1b[31mred.png",
    ],
)
def test_an_image_name_is_drawn_as_text(cli, checkpoint, tmp_path, name):
    photo = _photo(tmp_path / name, 1)
    out = tmp_path / "out"
    done = cli("cam", SPEC, "-w", checkpoint, photo, "--top", "1", "-o", out)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "\x1b" not in done.stderr
    (png,) = _pngs(out)
    assert (out / png).is_file() and (out / "grid.png").is_file()


@pytest.mark.parametrize("under", ["file/sub", "file", "file/a/b"])
def test_output_under_a_file_is_one_line(cli, checkpoint, tmp_path, under):
    (tmp_path / "file").write_text("not a folder")
    photo = _photo(tmp_path / "p.png", 2)
    refused(cli("cam", SPEC, "-w", checkpoint, photo, "-o", tmp_path / under), "is a file, not a folder")
    assert (tmp_path / "file").read_text() == "not a folder"


@pytest.mark.parametrize(
    "values,specs",
    [
        (["lite0,res=64"], ["lite0,res=64"]),
        (["lite0,lite1,lite2"], ["lite0", "lite1", "lite2"]),
        (["lite0,res=64,lite1"], ["lite0,res=64", "lite1"]),
        (["lite0,res=64;lite0,res=96"], ["lite0,res=64", "lite0,res=96"]),
        (["b0,phi=1.5", "lite0, res=96"], ["b0,phi=1.5", "lite0,res=96"]),
        (["b0;phi=2"], ["b0", "phi=2"]),
        ([" ; ,"], []),
    ],
)
def test_compare_keeps_specs_with_commas(values, specs):
    assert cam.compare_specs(values) == specs


def test_compare_one_spec_with_a_comma_is_one_spec(cli, checkpoint, tmp_path):
    photo = _photo(tmp_path / "p.png", 3)
    refused(cli("cam", "--compare", SPEC, "-w", checkpoint, photo, "-o", tmp_path / "out"), "two or more")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "compare",
    [
        ("--compare", "lite0,res=64;lite0,res=96"),
        ("--compare", "lite0,res=64", "--compare", "lite0,res=96"),
        ("--compare", "lite0,res=64,lite0,res=96"),
    ],
)
def test_compare_models_at_two_resolutions(cli, checkpoint, tmp_path, compare):
    photo = _photo(tmp_path / "p.png", 4)
    out = tmp_path / "out"
    done = cli("cam", *compare, "-w", checkpoint, photo, "-o", out)
    assert done.returncode == 0, done.stderr
    (image,) = json.loads((out / "cam.json").read_text())["images"]
    assert [m["resolution"] for m in image["models"]] == [64, 96]

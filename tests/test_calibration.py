"""Calibration data (issue 4): sources, bad data, determinism, and the statistics cache."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from edgeffnet.core.errors import UserError
from edgeffnet.core.preprocess import imagenet_recipe, preprocess_image, tf_lite_recipe
from edgeffnet.precision import calibration, int8

RECIPE = tf_lite_recipe(32)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFFNET_CACHE", str(tmp_path / "cache"))


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def _photo(seed: int, size=(48, 40)) -> Image.Image:
    """A smooth colour image: gradients plus a seeded blob, distinct per seed."""
    h, w = size[1], size[0]
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    blob = 255 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 80.0)
    rgb = np.stack([xx * 255 / w, yy * 255 / h, blob], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _rgb_folder(root, formats=("jpg", "png", "bmp", "webp")):
    """One image per format, half of them in nested subfolders."""
    paths = []
    for k, fmt in enumerate(formats):
        folder = root / ["", "sub", "sub/deeper", "other"][k % 4]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img{k}.{fmt}"
        _photo(k).save(path)
        paths.append(path)
    return paths


# -- sources ---------------------------------------------------------------------------------------------


def test_folder_reads_every_format_recursively(tmp_path):
    paths = _rgb_folder(tmp_path / "imgs")
    cal = calibration.load(tmp_path / "imgs", 4, RECIPE)
    assert cal.data.shape == (4, 3, 32, 32) and cal.data.dtype == np.float32
    assert cal.images == 4 and cal.requested == 4
    assert cal.skipped == {} and cal.converted == {} and cal.warnings == []
    assert cal.source.startswith("folder:")
    # With as many views as images, view k is image k (sorted paths) through the plain recipe.
    for k, path in enumerate(sorted(paths)):
        with Image.open(path) as img:
            np.testing.assert_array_equal(cal.data[k], preprocess_image(img, RECIPE))


def test_folder_preprocessing_comes_from_the_recipe(tmp_path):
    paths = _rgb_folder(tmp_path / "imgs", ("png", "png"))
    tf = calibration.load(tmp_path / "imgs", 2, tf_lite_recipe(32))
    imnet = calibration.load(tmp_path / "imgs", 2, imagenet_recipe(40))
    assert tf.data.shape == (2, 3, 32, 32) and imnet.data.shape == (2, 3, 40, 40)
    assert tf.sha256 != imnet.sha256
    with Image.open(sorted(paths)[0]) as img:
        expected = preprocess_image(img, imagenet_recipe(40))
    np.testing.assert_array_equal(imnet.data[0], expected)
    # (x - 127) / 128 for the TF-ported Lite recipe
    assert tf.data.min() >= -127 / 128 - 1e-6 and tf.data.max() <= 128 / 128 + 1e-6


def test_npy_tensors(tmp_path):
    x = np.random.default_rng(0).standard_normal((10, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    cal = calibration.load(tmp_path / "x.npy", 6, RECIPE)
    np.testing.assert_array_equal(cal.data, x[:6])
    assert cal.source.startswith("tensors:") and cal.warnings == []
    assert cal.sha256 == calibration.load(tmp_path / "x.npy", 6, RECIPE).sha256
    assert cal.sha256 != calibration.load(tmp_path / "x.npy", 7, RECIPE).sha256


def test_npz_tensors_and_short_count_warns(tmp_path):
    x = np.random.default_rng(1).standard_normal((5, 3, 32, 32))  # float64 is accepted and cast
    np.savez(tmp_path / "x.npz", labels=np.arange(5), input=x)
    cal = calibration.load(tmp_path / "x.npz", 8, RECIPE)
    assert cal.data.dtype == np.float32 and cal.data.shape == (5, 3, 32, 32)
    np.testing.assert_allclose(cal.data, x, rtol=1e-6)
    assert len(cal.warnings) == 1 and "5" in cal.warnings[0] and "8" in cal.warnings[0]


@pytest.mark.parametrize(
    "shape,dtype",
    [
        ((4, 32, 32, 3), np.float32),  # NHWC
        ((4, 3, 48, 48), np.float32),  # another resolution than the recipe's
        ((3, 32, 32), np.float32),  # no batch axis
        ((4, 3, 32, 32), np.uint8),  # raw pixels, not preprocessed
    ],
)
def test_wrong_tensor_shape_is_one_line_error(tmp_path, shape, dtype):
    np.save(tmp_path / "bad.npy", np.zeros(shape, dtype))
    with pytest.raises(UserError) as e:
        calibration.load(tmp_path / "bad.npy", 4, RECIPE)
    msg = _one_line(e)
    assert str(shape).replace(" ", "") in msg.replace(" ", "") and "3 x 32 x 32" in msg


def test_unusable_tensor_files_are_one_line_errors(tmp_path):
    np.savez(tmp_path / "empty.npz")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    np.save(tmp_path / "none.npy", np.zeros((0, 3, 32, 32), np.float32))
    (tmp_path / "list.txt").write_text("a.jpg\n")
    for name in ("empty.npz", "junk.npy", "none.npy", "list.txt", "missing.npy"):
        with pytest.raises(UserError) as e:
            calibration.load(tmp_path / name, 4, RECIPE)
        assert name in _one_line(e)


def test_default_set_is_deterministic_and_honours_the_count():
    a = calibration.load(None, 20, RECIPE)
    b = calibration.load("default", 20, RECIPE)
    assert a.data.shape == (20, 3, 32, 32)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    assert a.images == len(calibration.calibration_photos()) and a.source.startswith("default")
    # Views beyond one per photo are distinct crops, not repeats.
    assert not np.array_equal(a.data[0], a.data[a.images])
    c = calibration.load(None, 5, RECIPE)
    assert len(c.data) == 5 and c.sha256 != a.sha256
    np.testing.assert_array_equal(c.data, a.data[:5])


def test_calib_size_must_be_positive():
    with pytest.raises(UserError) as e:
        calibration.load(None, 0, RECIPE)
    assert "--calib-size" in _one_line(e)


# -- bad data --------------------------------------------------------------------------------------------


def test_empty_folder_is_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as e:
        calibration.load(tmp_path / "empty", 4, RECIPE)
    assert "no readable image" in _one_line(e)


def test_folder_without_readable_image_is_one_line_error(tmp_path):
    d = tmp_path / "junk"
    (d / "sub").mkdir(parents=True)
    (d / "readme.txt").write_text("hello")
    (d / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (d / "sub" / "zero.png").write_bytes(b"")
    with pytest.raises(UserError) as e:
        calibration.load(d, 4, RECIPE)
    msg = _one_line(e)
    assert "no readable image" in msg and "3 files skipped" in msg


def test_non_images_and_corrupt_images_are_skipped_and_counted(tmp_path):
    d = tmp_path / "mixed"
    _rgb_folder(d, ("jpg", "png"))
    (d / "notes.txt").write_text("not an image")
    (d / "labels.csv").write_text("a,b\n")
    (d / "nested").mkdir(exist_ok=True)
    (d / "nested" / "garbage.jpg").write_bytes(b"definitely not a jpeg")
    good = d / "good.png"
    _photo(9).save(good)
    (d / "nested" / "truncated.png").write_bytes(good.read_bytes()[:200])
    cal = calibration.load(d, 3, RECIPE)
    assert cal.images == 3 and len(cal.data) == 3
    assert cal.skipped == {"not an image": 2, "corrupt": 2}
    assert cal.record()["skipped"] == {"not an image": 2, "corrupt": 2}
    assert np.isfinite(cal.data).all()


def test_unusual_modes_are_converted_and_counted(tmp_path):
    d = tmp_path / "modes"
    d.mkdir()
    base = _photo(3)
    files = {
        "grey.png": base.convert("L"),
        "rgba.png": base.convert("RGBA"),
        "deep.png": Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257),
        "palette.png": base.convert("P", palette=Image.Palette.ADAPTIVE),
        "cmyk.jpg": base.convert("CMYK"),
        "plain.bmp": base,
    }
    for name, img in files.items():
        img.save(d / name)
    opened = {}
    for name in files:
        with Image.open(d / name) as img:
            opened[name] = img.mode
    assert opened == {
        "grey.png": "L",
        "rgba.png": "RGBA",
        "deep.png": "I;16",
        "palette.png": "P",
        "cmyk.jpg": "CMYK",
        "plain.bmp": "RGB",
    }  # what the files really hold
    cal = calibration.load(d, 6, RECIPE)
    assert cal.record()["converted"] == {"grayscale": 1, "RGBA": 1, "16-bit": 1, "palette": 1, "CMYK": 1}
    assert cal.skipped == {} and cal.data.shape == (6, 3, 32, 32) and np.isfinite(cal.data).all()
    # Converted images are really images: the 16-bit grey one lands on the same pixels as the 8-bit grey one.
    order = sorted(files)
    grey, deep = cal.data[order.index("grey.png")], cal.data[order.index("deep.png")]
    assert np.abs(grey - deep).max() <= 2 / 128 + 1e-6
    # Grey channels stay equal after conversion to RGB.
    np.testing.assert_array_equal(grey[0], grey[1])


def test_fewer_images_than_asked_warns_with_the_counts(tmp_path):
    _rgb_folder(tmp_path / "few", ("png", "jpg", "bmp"))
    cal = calibration.load(tmp_path / "few", 10, RECIPE)
    assert len(cal.data) == 10 and cal.images == 3 and cal.requested == 10
    assert len(cal.warnings) == 1
    assert "3 readable images" in cal.warnings[0] and "10 asked" in cal.warnings[0]
    assert cal.record()["warnings"] == cal.warnings
    # The count is made up with distinct crops and flips, deterministically.
    assert len({cal.data[i].tobytes() for i in range(10)}) == 10
    assert calibration.load(tmp_path / "few", 10, RECIPE).sha256 == cal.sha256


# -- the statistics cache ----------------------------------------------------------------------------------


def _tiny_graph(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1, name="fc"),
    ]
    g = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])],
        [w, fc],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_statistics_are_cached_by_graph_and_data(tmp_path):
    model = _tiny_graph()
    x = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
    sha = calibration._digest(x)
    first, cached = int8.statistics(model, x, sha)
    assert not cached
    assert sorted(first["tensors"]) == ["f", "input", "r"]  # inputs of Conv, Gemm and the pool
    again, cached = int8.statistics(model, x, sha)
    assert cached
    np.testing.assert_array_equal(again["absmax"], first["absmax"])
    np.testing.assert_array_equal(again["hist"], first["hist"])
    assert np.isclose(first["absmax"][first["tensors"].index("input")], np.abs(x).max())

    y = x * 2
    other, cached = int8.statistics(model, y, calibration._digest(y))
    assert not cached and not np.array_equal(other["absmax"], first["absmax"])
    _, cached = int8.statistics(_tiny_graph(seed=1), x, sha)  # another graph, same data
    assert not cached
    _, cached = int8.statistics(model, x, sha, use_cache=False)
    assert not cached

"""`edgeffnet eval` and `build --val`: label layouts, the accuracy and interval arithmetic against hand
computations, the labelled gate, Ctrl-C, and a run with PyTorch blocked (the device side)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli_process
from PIL import Image

import edgeffnet
from edgeffnet.core.errors import UserError
from edgeffnet.measure import evaluate as ev
from edgeffnet.precision.fidelity import FidelityTooLow

REPO = Path(__file__).resolve().parents[1]
SPEC = "lite0,res=96"
BUILD_ARGS = dict(weights="pretrained", precision="int8", calib_size=32, fidelity_views=16, views=2)
IMAGENET, _ = ev.class_list(1000)
WNIDS = (REPO / "edgeffnet" / "data" / "imagenet_wnids.txt").read_text().split()


def _png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 50, 3), np.uint8)).save(path)
    return path


# -- labels, without a bundle ------------------------------------------------------------------------------


def test_wnid_list_is_in_class_index_order():
    assert len(WNIDS) == 1000 and WNIDS == sorted(WNIDS)  # ILSVRC-2012's index order is the sorted synsets
    labels = ev.Labels(IMAGENET, imagenet=True)
    assert labels.index("n01440764") == 0 and IMAGENET[0] == "tench"
    assert IMAGENET[labels.index("n02123159")] == "tiger cat"


@pytest.mark.parametrize(
    "folder, index",
    [
        ("n02123159", 282),
        ("282", 282),
        ("tiger cat", 282),
        ("Tiger_Cat", 282),
        ("tiger-cat", 282),
        ("jack_o_lantern", 607),
        ("carpenters-kit", 477),
        ("0", 0),
        ("1000", None),
        ("n99999999", None),
        ("not a class", None),
    ],
)
def test_imagenet_labels_by_wnid_index_or_name(folder, index):
    assert ev.Labels(IMAGENET, imagenet=True).index(folder) == index


def test_a_name_two_imagenet_classes_share_is_refused():
    with pytest.raises(UserError, match=r"'cardigan' names 2 classes \(264, 474\).*index or the WordNet ID"):
        ev.Labels(IMAGENET, imagenet=True).index("cardigan")


def test_imagefolder_layouts_resolve_to_the_same_labels(tmp_path):
    labels = ev.Labels(IMAGENET, imagenet=True)
    for layout, names in {
        "wnid": ["n01440764", "n02123159"],
        "index": ["0", "282"],
        "name": ["Tench", "tiger_cat"],
    }.items():
        for i, name in enumerate(names):
            _png(tmp_path / layout / name / "a.png", i)
            _png(tmp_path / layout / name / "sub" / "b.jpg", i + 10)  # searched recursively
        data = ev.open_dataset(tmp_path / layout, labels)
        assert data.layout == "imagefolder" and data.labelled
        assert sorted(label for _, label in data.items) == [0, 0, 282, 282], layout


def test_unknown_folder_names_are_one_line_listing_a_few(tmp_path):
    for name in ("n01440764", "cats", "dogs", "birds", "fish", "frogs"):
        _png(tmp_path / name / "a.png")
    with pytest.raises(UserError) as e:
        ev.open_dataset(tmp_path, ev.Labels(IMAGENET, imagenet=True))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"5 folder name(s) in {tmp_path} are not classes")
    assert "'birds', 'cats', 'dogs', 'fish', ..." in msg and "--classes FILE" in msg


def test_classes_file_names_a_fine_tuned_head(tmp_path):
    (tmp_path / "classes.txt").write_text("Daisy\nrose\n\nsun flower\n")
    names, imagenet = ev.class_list(3, tmp_path / "classes.txt")
    assert names == ["Daisy", "rose", "sun flower"] and not imagenet
    for name in ("daisy", "Sun_Flower", "1"):
        _png(tmp_path / "data" / name / "a.png")
    data = ev.open_dataset(tmp_path / "data", ev.Labels(names, imagenet))
    assert sorted(label for _, label in data.items) == [0, 1, 2]
    with pytest.raises(UserError, match="lists 3 names but the bundle's head has 1000 classes"):
        ev.class_list(1000, tmp_path / "classes.txt")
    _png(tmp_path / "data" / "n01440764" / "a.png")  # no WordNet IDs for a fine-tuned head
    with pytest.raises(UserError, match="'n01440764'"):
        ev.open_dataset(tmp_path / "data", ev.Labels(names, imagenet))


def test_csv_of_path_and_label(tmp_path):
    for i in range(3):
        _png(tmp_path / "img" / f"{i}.png", i)
    (tmp_path / "labels.csv").write_text("path,label\nimg/0.png,n02123159\nimg/1.png,282\nimg/2.png,Tiger Cat\n")
    data = ev.open_dataset(tmp_path / "labels.csv", ev.Labels(IMAGENET, imagenet=True))
    assert data.layout == "csv" and [label for _, label in data.items] == [282, 282, 282]
    assert data.items[0][0] == tmp_path / "img" / "0.png"  # relative to the CSV, not the working directory
    (tmp_path / "bad.csv").write_text("img/0.png,n02123159\nimg/9.png,1\nimg/1.png,kitten\nimg/2.png\n")
    with pytest.raises(
        UserError,
        match=r"3 bad row\(s\) \(row 2: .*9.png does not exist; row 3: label 'kitten' "
        r"is not a class; row 4 has no label\)",
    ):
        ev.open_dataset(tmp_path / "bad.csv", ev.Labels(IMAGENET, imagenet=True))


def test_loose_images_are_unlabelled_and_an_empty_folder_is_refused(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.jpg", 1)
    data = ev.open_dataset(tmp_path, ev.Labels(IMAGENET, imagenet=True))
    assert data.layout == "unlabelled" and not data.labelled and len(data.items) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        ev.open_dataset(tmp_path / "empty", ev.Labels(IMAGENET, imagenet=True))


# -- the arithmetic, against hand computations ---------------------------------------------------------------


def _pairs(a: int, b: int, c: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference/artifact correctness: a both right, b only the reference, c only the artifact, d neither."""
    ref = np.array([1] * a + [1] * b + [0] * c + [0] * d, bool)
    got = np.array([1] * a + [0] * b + [1] * c + [0] * d, bool)
    return ref, got


def test_wilson_interval_by_hand():
    # 8/10, z = 1.96: centre (0.8 + 0.19207) / 1.38415 = 0.71674; half 1.96 * sqrt(0.016 + 0.00096) / 1.38415
    assert ev.wilson(8, 10) == pytest.approx((0.490162, 0.943318), abs=1e-6)
    assert ev.wilson(1, 3) == pytest.approx((0.061492, 0.792340), abs=1e-6)
    assert ev.wilson(20, 20) == pytest.approx((20 / (20 + 1.959964**2), 1.0), abs=1e-6)


def test_exact_mcnemar_by_hand():
    assert ev.mcnemar_exact_p(3, 1) == pytest.approx(2 * (1 + 4) / 16)  # 2 P(X <= 1), X ~ Bin(4, 1/2)
    assert ev.mcnemar_exact_p(1, 6) == pytest.approx(2 * (1 + 7) / 128)
    assert ev.mcnemar_exact_p(0, 0) == 1.0 and ev.mcnemar_exact_p(2, 2) == 1.0


def test_newcombe_paired_interval_by_hand():
    # a=5, b=3, c=1, d=1: p1 = 0.8, p2 = 0.6; ad - bc = 2 <= n/2 so phi = 0, and the interval is
    # 0.2 - sqrt((0.8 - 0.490162)^2 + (0.831820 - 0.6)^2) .. 0.2 + sqrt((0.943318 - 0.8)^2 + (0.6 - 0.312674)^2)
    r = ev.paired_difference(*_pairs(5, 3, 1, 1))
    assert r["difference"] == pytest.approx(0.2)
    assert r["interval"] == pytest.approx([-0.186962, 0.521086], abs=1e-6)
    assert (r["both_right"], r["reference_only"], r["artifact_only"], r["both_wrong"]) == (5, 3, 1, 1)
    assert r["mcnemar_p"] == pytest.approx(0.625)
    # a=30, b=4, c=1, d=15: phi = (450 - 4 - 25) / sqrt(34 * 16 * 31 * 19) = 0.743747 narrows the interval
    r = ev.paired_difference(*_pairs(30, 4, 1, 15))
    assert r["difference"] == pytest.approx(0.06)
    assert r["interval"] == pytest.approx([-0.034183, 0.153056], abs=1e-6)
    # No discordant pair on 20 images is not proof of no drop: +-(1 - 20 / (20 + z^2)) = +-0.161125
    r = ev.paired_difference(*_pairs(20, 0, 0, 0))
    assert r["difference"] == 0 and r["interval"] == pytest.approx([-0.161125, 0.161125], abs=1e-6)


def test_summary_counts_by_hand():
    labels = np.array([0, 1, 2, 3])
    ref_top = np.array([[0, 1, 2], [1, 0, 2], [0, 2, 1], [2, 1, 0]])  # top-1 right on 0, 1; top-3 on 0, 1, 2
    got_top = np.array([[0, 1, 2], [0, 1, 2], [3, 2, 1], [3, 1, 0]])  # top-1 right on 0, 3; top-3 on all four
    s = ev.summarise("fp32", ref_top, {"int8": (got_top, np.array([1.0, 0.9, 0.8, 0.7]))}, labels)
    assert s["topk"] == 3 and s["reference"]["top1"]["accuracy"] == 0.5 and s["reference"]["top3"]["correct"] == 3
    (row,) = s["artifacts"]
    assert row["top1"]["correct"] == 2 and row["top3"]["correct"] == 4
    assert row["top3_drop"]["difference"] == -0.25  # the artifact is right where FP32 is not (image 3)
    assert row["top1_drop"]["difference"] == 0  # b = 1 (image 1), c = 1 (image 3)
    assert (row["top1_drop"]["reference_only"], row["top1_drop"]["artifact_only"]) == (1, 1)
    a = row["agreement"]
    assert a["top1_agreement"] == 0.25  # image 0 only
    assert a["top3_overlap"] == pytest.approx((3 + 3 + 2 + 2) / 12)
    assert a["cosine_mean"] == pytest.approx(0.85) and a["cosine_min"] == pytest.approx(0.7)
    unlabelled = ev.summarise("fp32", ref_top, {"int8": (got_top, np.ones(4))}, None)
    assert "top1" not in unlabelled["reference"] and "top1_drop" not in unlabelled["artifacts"][0]
    assert unlabelled["interval_method"] is None


# -- the gate, as a function ---------------------------------------------------------------------------------


def _result(b: int, c: int, n: int = 40) -> dict:
    ref, got = _pairs(n - b - c - 2, b, c, 2)
    labels = np.zeros(n, int)
    ref_top = np.where(ref, 0, 1)[:, None]
    got_top = np.where(got, 0, 1)[:, None]
    return {
        "data": {"source": "val"},
        "images": n,
        **ev.summarise("FP32", ref_top, {"INT8 artifact": (got_top, np.ones(n))}, labels),
    }


def test_drop_gate_passes_fails_and_allows():
    v = ev.drop_gate(_result(b=0, c=0), 1.0, allow_drop=False, trained=True, precision="int8")
    assert (
        v["gated"] and v["passed"] and v["drop_points"] == 0 and v["interval_points"][0] < 0 < v["interval_points"][1]
    )
    with pytest.raises(FidelityTooLow) as e:
        ev.drop_gate(_result(b=2, c=0), 1.0, allow_drop=False, trained=True, precision="int8")
    msg = str(e.value)
    assert msg.startswith("INT8 top-1 accuracy drop +5.00 points (95% interval ") and "Newcombe paired" in msg
    assert "on 40 labelled images, above --max-drop 1 (one image of 40 is 2.50 points" in msg and "\n" not in msg
    assert msg.endswith("; pass --allow-drop to keep it or --max-drop to change the bar")
    v = ev.drop_gate(_result(b=2, c=0), 1.0, allow_drop=True, trained=True, precision="int8")
    assert v["gated"] and not v["passed"] and v["drop_points"] == pytest.approx(5.0)
    v = ev.drop_gate(_result(b=2, c=0), 1.0, allow_drop=False, trained=False, precision="int8")
    assert not v["gated"] and "random-init" in v["reason"]
    assert ev.drop_gate(_result(b=2, c=0), 5.0, False, True, "fp16")["passed"]  # the bar is inclusive


# -- Ctrl-C, with stand-in models ----------------------------------------------------------------------------


def test_ctrl_c_keeps_the_whole_batches_marked_partial(tmp_path):
    for i in range(10):
        _png(tmp_path / "0" / f"{i}.png", i)
    data = ev.open_dataset(tmp_path, ev.Labels(IMAGENET, imagenet=True))
    calls = []

    def reference(x):
        return np.tile(np.eye(1000, dtype=np.float32)[0], (len(x), 1))

    def artifact(x):
        calls.append(len(x))
        if len(calls) == 3:
            raise KeyboardInterrupt  # mid-batch: that batch's reference outputs must not be kept
        return reference(x)

    from edgeffnet.core.preprocess import tf_lite_recipe

    recipe = tf_lite_recipe(32)
    r = ev.measure(data, recipe, ev.Model("FP32", reference, None), [ev.Model("INT8", artifact, None)], batch=4)
    assert r["partial"] and r["images"] == 8 and r["images_total"] == 10
    assert r["reference"]["top1"]["correct"] == 8 and r["artifacts"][0]["top1"]["correct"] == 8


# -- with a real bundle: pretrained Lite0 at 96 px, INT8 ---------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    return {**os.environ, "EDGEFFNET_CACHE": str(tmp_path_factory.mktemp("cache")), "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def bundle(env, tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEFFNET_CACHE", env["EDGEFFNET_CACHE"])
        return edgeffnet.build(SPEC, output=tmp_path_factory.mktemp("b") / "int8", allow_drop=True, **BUILD_ARGS).path


@pytest.fixture(scope="module")
def pool(bundle, tmp_path_factory) -> list[dict]:
    """Views of the photos edgeffnet ships, saved as PNGs, with each model's top-1 on them."""
    from edgeffnet.bundle import Bundle
    from edgeffnet.core.preprocess import Preprocess, load_image
    from edgeffnet.network.photos import calibration_photos, load_photo, recipe, views

    b = Bundle.open(bundle)
    pre = Preprocess.from_dict(b.manifest.preprocess)
    photos = [load_photo(r) for r in recipe()["verification"]["photos"]] + calibration_photos()
    folder = tmp_path_factory.mktemp("pool")
    ref, artifacts, _ = ev.artifact_models(b.path, b.manifest.graph, b.target, "int8", 1, False)
    out = []
    for i, v in enumerate(views(photos, 42, pre)):
        path = folder / f"{i:02d}.png"
        Image.fromarray(v).save(path)
        x = load_image(path, pre)[None]
        out.append(
            {
                "path": path,
                "fp32": int(np.argmax(ref.run(x))),
                "artifacts": [int(np.argmax(m.run(x))) for m in artifacts],
            }
        )
    return out


def _labelled(pool: list[dict], root: Path, keep, layout: str = "wnid") -> Path:
    """An ImageFolder of the pool images `keep` selects, each labelled with FP32's own top-1."""
    for p in (p for p in pool if keep(p)):
        name = {"wnid": WNIDS[p["fp32"]], "index": str(p["fp32"]), "name": IMAGENET[p["fp32"]]}[layout]
        (root / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p["path"], root / name / p["path"].name)
    return root


def _agree(p: dict) -> bool:
    return all(a == p["fp32"] for a in p["artifacts"])


def test_eval_of_each_layout_gives_the_same_numbers(bundle, pool, tmp_path):
    results = []
    for layout in ("wnid", "index", "name"):
        results.append(ev.evaluate(bundle, _labelled(pool, tmp_path / layout, lambda p: True, layout), batch=5)[0])
    csv = tmp_path / "val.csv"
    csv.write_text("".join(f"{p['path']},{WNIDS[p['fp32']]}\n" for p in pool))
    results.append(ev.evaluate(bundle, csv)[0])
    for r in results:
        assert r["images"] == len(pool) and not r["partial"]
        assert r["reference"]["top1"]["accuracy"] == 1.0  # labelled with its own predictions
        assert [a["top1"]["correct"] for a in r["artifacts"]] == [
            sum(p["artifacts"][i] == p["fp32"] for p in pool) for i in range(2)
        ]
        assert [a["name"] for a in r["artifacts"]] == [
            "INT8 ONNX (model.int8.onnx, onnxruntime)",
            "INT8 openvino CPU artifact",
        ]
    for folder, csv_row in zip(results[0]["artifacts"], results[3]["artifacts"]):  # images in another order
        assert {k: folder[k] for k in ("top1", "top5", "top1_drop")} == {
            k: csv_row[k] for k in ("top1", "top5", "top1_drop")
        }
        assert folder["agreement"] == pytest.approx(csv_row["agreement"])
    saved = json.loads((bundle / "eval" / "val.json").read_text())
    assert saved["data"]["layout"] == "csv" and saved["interval_method"].startswith("Newcombe")


def test_eval_cli_unlabelled_folder_gives_agreement_only(bundle, pool, env, tmp_path):
    for p in pool[:6]:
        shutil.copy(p["path"], tmp_path / p["path"].name)
    r = run_cli_process("eval", str(bundle), "--data", str(tmp_path), "--json", cwd=tmp_path, env=env, timeout=1800)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["data"]["layout"] == "unlabelled" and res["images"] == 6 and "top1" not in res["reference"]
    agree = [sum(p["artifacts"][i] == p["fp32"] for p in pool[:6]) / 6 for i in range(2)]
    assert [a["agreement"]["top1_agreement"] for a in res["artifacts"]] == pytest.approx(agree)
    assert res["saved"] == str(bundle / "eval" / f"{tmp_path.name}.json")


@pytest.mark.parametrize(
    "make, args, words",
    [
        (lambda d: _png(d / "kittens" / "a.png"), [], "edgeffnet: error: 1 folder name(s)"),
        (
            lambda d: (d / "n01440764").mkdir(parents=True) or (d / "n01440764" / "a.png").write_text("not a png"),
            [],
            "edgeffnet: error: none of the 1 images",
        ),
        (
            lambda d: _png(d / "0" / "a.png"),
            ["--batch", "0"],
            "edgeffnet: error: Invalid value for '--batch': 0 is not in the range",
        ),
        (lambda d: _png(d / "0" / "a.png"), ["--classes", "{missing}"], "edgeffnet: error: cannot read --classes"),
    ],
)
def test_eval_cli_refusals_are_one_line(bundle, env, tmp_path, make, args, words):
    make(tmp_path / "data")
    args = [a.format(missing=tmp_path / "missing.txt") for a in args]
    r = run_cli_process(
        "eval", str(bundle), "--data", str(tmp_path / "data"), *args, cwd=tmp_path, env=env, timeout=1800
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(words), line


def test_eval_runs_with_the_build_side_blocked(bundle, pool, env, tmp_path):
    data = _labelled(pool[:8], tmp_path / "val", lambda p: True)
    r = run_cli_process(
        "eval",
        str(bundle),
        "--data",
        str(data),
        "--batch",
        "3",
        "--json",
        cwd=tmp_path,
        prelude="sys.modules.update(dict.fromkeys(['torch', 'onnx', 'onnxsim', 'nncf'])); ",
        env=env,
        timeout=1800,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["images"] == 8 and res["reference"]["top1"]["accuracy"] == 1.0
    assert "torch" not in r.stderr


@pytest.mark.slow
def test_build_val_gate_passes_and_is_recorded(bundle, pool, env, tmp_path):
    val = _labelled(pool, tmp_path / "val", _agree)
    assert len(list(val.rglob("*.png"))) >= 3, "too few views where every INT8 artifact agrees with FP32"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEFFNET_CACHE", env["EDGEFFNET_CACHE"])
        b = edgeffnet.build(SPEC, output=tmp_path / "gated", val=str(val), **BUILD_ARGS)
    f = b.manifest.fidelity
    assert f["gated"] and f["passed"] and f["drop_points"] == 0 and f["max_drop_points"] == 1.0
    assert f["fp32_top1"] == 1.0 and f["interval_points"][0] < 0 < f["interval_points"][1]
    assert f["interval_method"].startswith("Newcombe") and b.manifest.options["val"] == str(val)
    assert json.loads((b.path / "eval" / "val.json").read_text())["kind"] == "edgeffnet build --val"


@pytest.mark.slow
def test_build_val_gate_fails_in_one_line_without_a_bundle(bundle, pool, env, tmp_path):
    val = _labelled(pool, tmp_path / "val", lambda p: p["artifacts"][-1] != p["fp32"])
    assert any(val.rglob("*.png")), "INT8 at 96 px agreed with FP32 on every view: no drop to gate"
    args = [
        "build",
        SPEC,
        "--weights",
        "pretrained",
        "--precision",
        "int8",
        "--calib-size",
        "32",
        "--fidelity-views",
        "16",
        "--views",
        "2",
        "--val",
        str(val),
    ]
    r = run_cli_process(*args, "-o", str(tmp_path / "failed"), cwd=tmp_path, env=env, timeout=1800)
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    # every image is one the artifact got wrong; escalation keeps layers in float, which wins some back
    assert re.match(r"edgeffnet: error: INT8 top-1 accuracy drop \+\d+\.\d\d points \(95% interval ", last), last
    assert "of the most damaging layers in float; the limit is 15)" in last
    assert " for the INT8 " in last and "above --max-drop 1" in last and "; pass --allow-drop" in last
    assert "accuracy on --val" in r.stderr  # every row is printed before the gate
    assert not (tmp_path / "failed").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".failed")]


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--precision", "fp32", "--val", "{data}"], "an FP32 build has nothing to gate"),
        (["--precision", "int8", "--val", "{loose}"], "has no labels"),
        (
            ["--precision", "int8", "--val", "{data}", "--max-drop", "-1"],
            "'--max-drop': -1.0 is not in the range 0<=x<=100",
        ),
        (
            ["--precision", "int8", "--classes", "{classes}"],
            "--classes names the classes of --val's labels; give --val",
        ),
        (
            ["--precision", "int8", "--val", "{data}", "--classes", "{classes}"],
            "lists 2 names but the bundle's head has 1000 classes",
        ),  # pretrained Lite0: ImageNet's head
        (["--precision", "int8", "--val", "{data}", "--classes", "{missing}"], "cannot read --classes"),
    ],
)
def test_build_val_refusals_are_one_line_before_any_work(env, tmp_path, extra, words):
    _png(tmp_path / "data" / "kittens" / "a.png")
    _png(tmp_path / "loose" / "a.png")
    (tmp_path / "classes.txt").write_text("kittens\npuppies\n")
    extra = [
        e.format(
            data=tmp_path / "data",
            loose=tmp_path / "loose",
            classes=tmp_path / "classes.txt",
            missing=tmp_path / "none.txt",
        )
        for e in extra
    ]
    r = run_cli_process(
        "build", SPEC, "--weights", "pretrained", *extra, "-o", str(tmp_path / "b"), cwd=tmp_path, env=env, timeout=1800
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert words in line and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_build_val_reads_a_fine_tuned_heads_labels_from_classes(env, tmp_path):
    # A 3-class head (random init, FP16: the quickest gated path) whose folders are named by its own classes;
    # without --classes the names 'kittens', 'puppies' are no class of a 3-wide head and the build refuses.
    (tmp_path / "classes.txt").write_text("kittens\npuppies\ngoldfish\n")
    for i, name in enumerate(("kittens", "Puppies", "2")):  # by name (any case) or by index, as eval reads them
        _png(tmp_path / "val" / name / "a.png", i)
    args = [
        "build",
        "b0,res=96",
        "--num-classes",
        "3",
        "--precision",
        "fp16",
        "--views",
        "2",
        "--fidelity-views",
        "4",
        "--val",
        str(tmp_path / "val"),
    ]
    refused = run_cli_process(*args, "-o", str(tmp_path / "no"), cwd=tmp_path, env=env, timeout=1800)
    assert refused.returncode == 2 and "not classes of this bundle" in refused.stderr and "--classes" in refused.stderr
    r = run_cli_process(
        *args,
        "--classes",
        str(tmp_path / "classes.txt"),
        "-o",
        str(tmp_path / "b"),
        cwd=tmp_path,
        env=env,
        timeout=1800,
    )
    assert r.returncode == 0, r.stderr
    saved = json.loads((tmp_path / "b" / "eval" / "val.json").read_text())
    assert saved["data"]["classes"] == f"--classes {tmp_path / 'classes.txt'}"
    assert saved["images"] == 3 and saved["data"]["classes_present"] == 3
    options = json.loads((tmp_path / "b" / "manifest.json").read_text())["options"]
    assert options["classes"] == str(tmp_path / "classes.txt")


def test_ctrl_c_during_eval_saves_the_partial_result(bundle, pool, tmp_path):
    from contextlib import contextmanager

    @contextmanager
    def progress(label):
        def tick(fraction):
            raise KeyboardInterrupt  # after the first batch

        yield tick

    data = _labelled(pool[:10], tmp_path / "part", lambda p: True)
    result, saved = ev.evaluate(bundle, data, batch=4, progress=progress)
    assert result["partial"] and result["images"] == 4 and result["images_total"] == 10
    on_disk = json.loads(saved.read_text())
    assert saved == bundle / "eval" / "part.json" and on_disk["partial"] and on_disk["images"] == 4
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_ctrl_c_on_the_eval_command_exits_130_with_the_partial_result(bundle, pool, env, tmp_path):
    data = _labelled(pool[:10], tmp_path / "sig", lambda p: True)
    # A real SIGINT, sent by the process to itself while it loads the 7th image (the third batch of 3).
    prelude = (
        "import os, signal; import edgeffnet.measure.evaluate as e; "
        "signal.signal(signal.SIGINT, signal.default_int_handler); n = [0]; real = e.load_image; "
        "e.load_image = lambda p, r: (n.__setitem__(0, n[0] + 1), n[0] == 7 and os.kill(os.getpid(), "
        "signal.SIGINT), real(p, r))[-1]; "
    )
    r = run_cli_process(
        "eval", str(bundle), "--data", str(data), "--batch", "3", cwd=tmp_path, prelude=prelude, env=env, timeout=1800
    )
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "edgeffnet: interrupted; the partial result (6 of 10 images) was saved, marked partial"
    )
    assert "6 images, PARTIAL" in r.stdout
    saved = json.loads((bundle / "eval" / "sig.json").read_text())
    assert saved["partial"] and saved["images"] == 6 and saved["reference"]["top1"]["correct"] == 6

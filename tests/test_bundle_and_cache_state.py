"""What a build leaves and reuses when the cache is damaged or hostile, when a
build is killed, when two builds race, and where it writes.

Builds run through the real CLI in subprocesses, against a cache of this module's own (`b0,res=96`, FP32;
one INT8 case for the calibration statistics). A bundle is judged valid when every file its manifest lists
is there and its compiled artifact reproduces the stored PyTorch logits within the FP32 tolerance.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli_process

from edgeffnet.bundle import Bundle, clean_debris, is_bundle
from edgeffnet.core import verify
from edgeffnet.precision import int8

SPEC = "b0,res=96"
PACKAGE = Path(__file__).resolve().parent.parent / "edgeffnet"


def _env(cache: Path, **extra) -> dict:
    env = {**os.environ, "EDGEFFNET_CACHE": str(cache), **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE.parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def _popen(env: dict, *args: str) -> subprocess.Popen:
    # SIGINT default in the child: a shell starts background jobs with it ignored, and Python keeps that.
    return subprocess.Popen(
        [sys.executable, "-m", "edgeffnet.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _built(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr


def _one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("edgeffnet: "), r.stderr
    return lines[-1]


def _debris(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if re.search(r"\.(partial|probe|old)-", p.name))


def _cache_debris(cache: Path) -> list[str]:
    stages = cache / "stages"
    return sorted(str(p.relative_to(cache)) for p in stages.glob("*/.*")) if stages.is_dir() else []


def _assert_valid(path: Path) -> dict:
    """Every listed file present, and the compiled artifact reproduces the stored reference."""
    assert is_bundle(path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert all((path / f).is_file() for f in manifest["files"]), manifest["files"]
    b = Bundle.open(path)
    x, ref = b.reference()
    got = verify.run_batched(b.runner().run, x, manifest["input"]["batch"])
    assert float(np.max(np.abs(got - ref))) < verify.FP32_MAX_ABS
    return manifest


def _stage_lines(stderr: str) -> dict[str, str]:
    names = ("reference", "export", "simplify", "precision", "compile")
    return {line.split()[0]: line for line in stderr.splitlines() if line.split() and line.split()[0] in names}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def base(cache, tmp_path_factory) -> Path:
    """One FP32 bundle built with this module's cache: later builds reuse its stages."""
    dest = tmp_path_factory.mktemp("base") / "b0"
    _built(run_cli_process("build", SPEC, "-o", str(dest), env=_env(cache)))
    return dest


# -- the cache never runs code, never ships damaged bytes ----------------------------------------------------


def test_no_unsafe_loading_in_the_package():
    """Nothing read from the cache or from a user is unpickled: no pickle loads, torch.load weights-only."""
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"pickle\.loads?\(|allow_pickle\s*=\s*True|yaml\.load\(|marshal\.loads?\(", text), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_calibration_statistics_round_trip_and_never_unpickle(tmp_path):
    stats = {
        "tensors": ["a", "b/c"],
        "absmax": np.array([1.5, 0.0]),
        "hist": np.ones((2, 8)),
        "means": {"a": np.arange(3, dtype=np.float32), "b/c": np.zeros(1, np.float32)},
    }
    path = tmp_path / "stats.npz"
    int8._write_statistics(path, stats)
    back = int8._read_statistics(path, ["a", "b/c"])
    assert back["tensors"] == ["a", "b/c"] and np.array_equal(back["hist"], stats["hist"])
    assert np.array_equal(back["means"]["a"], stats["means"]["a"])
    assert int8._read_statistics(path, ["a"]) is None  # statistics for other tensors: recomputed

    marker = tmp_path / "marker"
    hostile = tmp_path / "hostile.npz"
    np.savez(hostile, tensors=np.array([_Payload(marker)], dtype=object), absmax=np.ones(1), hist=np.ones((1, 8)))
    assert int8._read_statistics(hostile, ["a"]) is None and not marker.exists()
    (tmp_path / "raw.npz").write_bytes(pickle.dumps(_Payload(marker)))
    assert int8._read_statistics(tmp_path / "raw.npz", ["a"]) is None and not marker.exists()


def test_int8_build_ignores_hostile_statistics_and_writes_nothing_outside(tmp_path):
    """Every cached calibration file replaced by a pickle payload: the INT8 build recomputes, runs no code, and
    (with HOME and cwd fresh) writes nothing outside -o, the cache and TMPDIR (NNCF's telemetry is off)."""
    home, cwd, tmp, out = (tmp_path / n for n in ("home", "cwd", "tmp", "out"))
    for d in (home, cwd, tmp, out):
        d.mkdir()
    cache = home / "edgeffnet-cache"
    env = _env(cache, HOME=str(home), TMPDIR=str(tmp))
    _built(
        run_cli_process("build", SPEC, "-p", "int8", "--calib-size", "32", "-o", str(out / "first"), cwd=cwd, env=env)
    )
    stats = list((cache / "calibration").glob("*.npz"))
    assert stats
    marker = tmp_path / "marker"
    for path in stats:
        path.write_bytes(pickle.dumps(_Payload(marker)))
        path.with_suffix(".pkl").write_bytes(pickle.dumps(_Payload(marker)))
    shutil.rmtree(cache / "stages" / "precision")  # so the precision stage reads the statistics again
    r = run_cli_process("build", SPEC, "-p", "int8", "--calib-size", "32", "-o", str(out / "second"), cwd=cwd, env=env)
    _built(r)
    assert not marker.exists()
    assert "reused" not in _stage_lines(r.stderr)["precision"]
    assert sorted(p.name for p in home.iterdir()) == ["edgeffnet-cache"]
    assert list(cwd.iterdir()) == []

    # Ctrl-C inside the INT8 stage: one line, no traceback (no telemetry child to print one), nothing left.
    shutil.rmtree(cache / "stages" / "precision")
    p = _popen(env, "build", SPEC, "-p", "int8", "--calib-size", "32", "-o", str(out / "third"))
    for line in p.stderr:
        if line.startswith("simplify"):
            time.sleep(2)
            p.send_signal(signal.SIGINT)
            break
    _, rest = p.communicate(timeout=300)
    assert p.returncode == 130 and "Traceback" not in rest, rest
    assert rest.strip().splitlines()[-1].startswith("edgeffnet: interrupted")
    assert not (out / "third").exists() and _debris(out) == []


def test_a_truncated_cached_graph_is_rebuilt_not_shipped(base, cache, tmp_path):
    (entry,) = (cache / "stages" / "export").glob("*/model.onnx")
    with open(entry, "r+b") as f:
        f.truncate(1000)
    r = run_cli_process("build", SPEC, "-o", str(tmp_path / "b"), env=_env(cache))
    _built(r)
    assert "reused" not in _stage_lines(r.stderr)["export"]
    manifest = _assert_valid(tmp_path / "b")
    assert manifest["stages"]["export"]["cached"] is False
    assert (tmp_path / "b" / "model.onnx").read_bytes() == (base / "model.onnx").read_bytes()
    assert entry.stat().st_size > 1000  # the entry was stored again, whole


def test_another_models_compile_entry_is_rebuilt_and_the_manifest_is_fresh(base, cache, tmp_path):
    env = _env(cache)
    _built(run_cli_process("build", SPEC, "--batch", "2", "-o", str(tmp_path / "batch2"), env=env))
    key = json.loads((base / "manifest.json").read_text())["stages"]["compile"]["key"]
    entry = cache / "stages" / "compile" / key
    for name in ("model.xml", "model.bin"):
        shutil.copyfile(tmp_path / "batch2" / name, entry / name)
    r = run_cli_process("build", SPEC, "-o", str(tmp_path / "again"), env=env)
    _built(r)
    assert "reused" not in _stage_lines(r.stderr)["compile"]
    manifest = _assert_valid(tmp_path / "again")
    assert manifest["stages"]["compile"]["cached"] is False
    assert manifest["stages"]["compile"]["parity"]["max_abs"] < verify.FP32_MAX_ABS
    assert (tmp_path / "again" / "model.xml").read_bytes() == (base / "model.xml").read_bytes()


# -- NaN never passes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_outputs_fail_verification_at_every_precision(bad):
    ref = np.random.default_rng(0).normal(size=(4, 10))
    got = ref.copy()
    got[1, 3] = bad
    for precision in ("fp32", "fp16", "int8"):
        with pytest.raises(verify.StageFailed, match="NaN or Inf"):
            verify.verify("compile", lambda x: x, got, ref, None, precision)


def test_nan_weights_fail_the_build_in_one_line(base, cache, tmp_path):
    import torch

    from edgeffnet import create_model, save_weights

    model = create_model(SPEC)
    with torch.no_grad():
        next(p for p in model.parameters() if p.dim() == 4).fill_(float("nan"))
    ckpt = tmp_path / "nan.pt"
    save_weights(model, ckpt)
    r = run_cli_process("build", SPEC, "-w", str(ckpt), "-o", str(tmp_path / "b"), env=_env(cache))
    assert "NaN" in _one_line(r)
    assert not (tmp_path / "b").exists() and _debris(tmp_path) == []


def test_predict_refuses_a_bundle_that_outputs_nan(base, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(base, broken)
    weights = bytearray((broken / "model.bin").read_bytes())
    xml = (broken / "model.xml").read_text()
    for offset, size in re.findall(r'element_type="f32" shape="[^"]*" offset="(\d+)" size="(\d+)"', xml):
        weights[int(offset) : int(offset) + int(size)] = np.full(int(size) // 4, np.nan, np.float32).tobytes()
    (broken / "model.bin").write_bytes(bytes(weights))
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    r = run_cli_process("predict", str(broken), str(tmp_path / "grey.png"), env=_env(tmp_path / "c"))
    assert "NaN" in _one_line(r) and "nan%" not in r.stdout


# -- rebuilding keeps the user's files ----------------------------------------------------------------------


def test_rebuild_keeps_the_checkpoint_and_notes_the_user_put_in_the_bundle(cache, tmp_path):
    from edgeffnet import create_model, save_weights

    dest = tmp_path / "mine"
    env = _env(cache)
    _built(run_cli_process("build", SPEC, "-o", str(dest), env=env))
    save_weights(create_model(SPEC), dest / "weights.pt")
    (dest / "notes.txt").write_text("keep me")
    _built(run_cli_process("build", SPEC, "-w", str(dest / "weights.pt"), "-o", str(dest), env=env))
    manifest = _assert_valid(dest)
    assert manifest["weights"]["random_init"] is False
    assert (dest / "notes.txt").read_text() == "keep me" and (dest / "weights.pt").is_file()
    assert "weights.pt" not in manifest["files"] and _debris(tmp_path) == []


def test_a_directory_that_is_not_a_bundle_is_refused_and_untouched(cache, tmp_path):
    dest = tmp_path / "photos"
    dest.mkdir()
    (dest / "cat.jpg").write_bytes(b"not really")
    r = run_cli_process("build", SPEC, "-o", str(dest), env=_env(cache))
    assert "not an edgeffnet bundle" in _one_line(r)
    assert [p.name for p in dest.iterdir()] == ["cat.jpg"] and _debris(tmp_path) == []


def test_a_symlinked_output_is_rebuilt_through_the_link(base, cache, tmp_path):
    target = tmp_path / "real"
    shutil.copytree(base, target)
    link = tmp_path / "link"
    link.symlink_to(target)
    _built(run_cli_process("build", SPEC, "--batch", "2", "-o", str(link), env=_env(cache)))
    assert link.is_symlink() and json.loads((target / "manifest.json").read_text())["input"]["batch"] == 2
    assert _debris(tmp_path) == []


# -- interruptions --------------------------------------------------------------------------------------------


def _start_and_kill(env: dict, dest: Path, sig: int, batch: str) -> subprocess.Popen:
    """Start a build that misses the cache after its first stage, and send `sig` once that stage is done."""
    p = _popen(env, "build", SPEC, "--batch", batch, "-o", str(dest))
    for line in p.stderr:
        if line.startswith("reference"):
            time.sleep(0.5)  # inside export now
            p.send_signal(sig)
            break
    return p


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_a_killed_build_leaves_no_debris_after_the_next_build(base, cache, tmp_path, sig):
    env = _env(cache)
    dest = tmp_path / "b"
    batch = str(2 + int(sig))  # a batch of its own: the export stage is not in the cache yet
    p = _start_and_kill(env, dest, sig, batch)
    _, rest = p.communicate(timeout=300)
    if sig == signal.SIGKILL:
        assert p.returncode == -signal.SIGKILL
    else:
        assert p.returncode == 128 + sig and "Traceback" not in rest
        (line,) = [x for x in rest.strip().splitlines() if x.startswith("edgeffnet")]
        assert line.startswith(f"edgeffnet: {'interrupted' if sig == signal.SIGINT else 'terminated'}")
        assert rest.strip().endswith(line)
        assert _debris(tmp_path) == []
    assert not dest.exists()
    _built(run_cli_process("build", SPEC, "--batch", batch, "-o", str(dest), env=env))
    assert _debris(tmp_path) == [] and _cache_debris(cache) == []
    assert _assert_valid(dest)["input"]["batch"] == int(batch)


def test_debris_of_a_live_build_stays(tmp_path):
    final = tmp_path / "b"
    live = tmp_path / f".b.partial-{os.getppid()}-x"
    dead = tmp_path / ".b.partial-999999999-x"
    probe = tmp_path / ".b.probe-999999999-y"
    other = tmp_path / ".c.partial-999999999-x"
    for d in (live, dead, probe, other):
        d.mkdir()
    assert sorted(clean_debris(final)) == sorted([dead.name, probe.name])
    assert live.exists() and other.exists()


def test_a_bundle_killed_while_being_swapped_out_comes_back(base, tmp_path):
    old = tmp_path / ".b.old-999999999"
    shutil.copytree(base, old)
    assert clean_debris(tmp_path / "b") == [old.name] and is_bundle(tmp_path / "b")


# -- concurrency ----------------------------------------------------------------------------------------------


def _finished(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    results = []
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert "Traceback" not in err, err
        if p.returncode != 0:
            assert err.strip().splitlines()[-1].startswith("edgeffnet: error: "), err
        results.append((p.returncode, err))
    return results


def test_two_identical_builds_to_one_output(base, cache, tmp_path):
    env = _env(cache)
    dest = tmp_path / "same"
    for _ in range(3):  # the cache is warm: the builds finish within moments of each other
        results = _finished([_popen(env, "build", SPEC, "-o", str(dest)) for _ in range(2)])
        assert any(rc == 0 for rc, _ in results)
        _assert_valid(dest)
        assert sorted(p.name for p in dest.iterdir()) == sorted(
            json.loads((dest / "manifest.json").read_text())["files"]
        )
        assert _debris(tmp_path) == []


def test_two_builds_sharing_a_cold_cache(tmp_path):
    cache = tmp_path / "cache"
    env = _env(cache)
    results = _finished([_popen(env, "build", SPEC, "-o", str(tmp_path / n)) for n in ("one", "two")])
    assert [rc for rc, _ in results] == [0, 0]
    for n in ("one", "two"):
        _assert_valid(tmp_path / n)
    assert _cache_debris(cache) == []
    r = run_cli_process("build", SPEC, "-o", str(tmp_path / "three"), env=env)
    _built(r)
    stages = _stage_lines(r.stderr)
    assert stages and all("reused" in line for line in stages.values()), r.stderr
    _assert_valid(tmp_path / "three")


# -- nothing written outside -o, the cache and TMPDIR ------------------------------------------------------


def test_telemetry_is_declined_without_importing_the_libraries():
    probe = (
        "import os, sys, edgeffnet\n"
        "assert not {'torch', 'onnx', 'openvino', 'onnxruntime', 'openvino_telemetry'} & set(sys.modules)\n"
        "assert os.environ['ORT_DISABLE_TELEMETRY'] == '1'\n"
        "from openvino_telemetry.utils.opt_in_checker import OptInChecker, ConsentCheckResult\n"
        "assert OptInChecker().check(False, False) == ConsentCheckResult.DECLINED\n"
        "import nncf.telemetry.wrapper as w\n"
        "assert not getattr(getattr(w.telemetry, '_impl', None), 'consent', False)\n"
    )
    env = {k: v for k, v in _env(Path("unused")).items() if k not in ("ORT_DISABLE_TELEMETRY", "CI")}
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr


def test_build_and_predict_write_nothing_outside(tmp_path):
    home, cwd, tmp, out = (tmp_path / n for n in ("home", "cwd", "tmp", "out"))
    for d in (home, cwd, tmp, out):
        d.mkdir()
    env = _env(home / "cache", HOME=str(home), TMPDIR=str(tmp))
    _built(run_cli_process("build", SPEC, "-o", str(out / "b"), cwd=cwd, env=env))
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(out / "grey.png")
    r = run_cli_process("predict", str(out / "b"), str(out / "grey.png"), cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in home.iterdir()) == ["cache"]
    assert list(cwd.iterdir()) == [] and sorted(p.name for p in out.iterdir()) == ["b", "grey.png"]

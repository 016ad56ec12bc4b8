"""A bundle is a directory of artifacts plus manifest.json; it appears whole or not at all.

Everything is written into a hidden temporary directory beside the destination (`.NAME.partial-PID-*`)
and renamed into place when complete, so a failed or interrupted build leaves nothing that looks like a
bundle; what a killed build leaves (its PID is dead) the next build into that place removes. Replacing a
bundle keeps the user's files in it: the manifest lists what the bundle wrote, anything else is theirs. This module is
the bundle side: it imports no torch, so `Bundle.open(path).runner()` works on a device-only install.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING as _MISSING
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeffnet.core import formats
from edgeffnet.core.errors import UserError
from edgeffnet.core.files import atomic_write_json
from edgeffnet.core.layout import BENCH, ENGINE, ENGINE_FACTS, EVAL, LAYER_TABLE, MANIFEST, REFERENCE, SIMPLIFIED
from edgeffnet.core.untrusted import (
    UntrustedFileError,
    check_fields,
    confined,
    parse_json,
    positive_int,
    read_text,
)

if TYPE_CHECKING:
    from edgeffnet.backends import Runner, RunSettings
    from edgeffnet.specs.targets import Target

FORMAT = 1
MANIFEST_FORMAT = formats.Format(
    "bundle manifest", "bundle_format", (FORMAT,), "rebuild the bundle with edgeffnet build", noun="bundle format"
)


# Said wherever a random-weight bundle's outputs are shown: build, predict, the report.
RANDOM_WEIGHTS = "this bundle has seeded random weights (latency study: the outputs mean nothing)"


@dataclass
class Manifest:
    """What a bundle holds, from what, with which versions, verified how (manifest.json, format 1)."""

    spec: dict  # the scaled spec: name, family, phi, coefficients, d/w/r, stage table
    params: int
    macs: int
    flops: int
    num_classes: int
    target: dict  # the profile as built for (name, backend, device, description, profile, peak, memory, options)
    precision: str
    input: dict  # name, batch (None: dynamic), dynamic_batch, shape, layout, dtype
    weights: dict  # source, sha256, layout, numerics, random_init (and seed)
    preprocess: dict
    stages: dict  # stage name -> its record (files, parity, summary, seconds, cached, key)
    files: list
    created: str
    edgeffnet: str
    scaling_check: dict | None = None
    options: dict = field(default_factory=dict)
    graph: str = SIMPLIFIED  # the precision stage's ONNX graph; the compile record says what it converted
    fidelity: dict | None = None
    build_seconds: float | None = None
    tools: dict = field(default_factory=dict)
    host: dict = field(default_factory=dict)
    bundle_format: int = FORMAT
    extra: dict = field(default_factory=dict)  # keys a later edgeffnet wrote, kept as they were

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        return {
            "bundle_format": d.pop("bundle_format"),
            "edgeffnet": d.pop("edgeffnet"),
            "created": d.pop("created"),
            **d,
            **extra,
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "manifest") -> Manifest:
        names = {f.name for f in fields(cls)} - {"extra"}
        required = [f.name for f in fields(cls) if f.default is f.default_factory is _MISSING]
        formats.load(MANIFEST_FORMAT, d, where, required)
        _check_entries(d, where)
        check_fields(cls, d, where)
        _check_numbers(d, where)
        return cls(**{k: v for k, v in d.items() if k in names}, extra={k: v for k, v in d.items() if k not in names})


# What the bundle side reads from a manifest's entries: a hand-edited or damaged manifest that lacks one is
# refused when opened, not met as a KeyError halfway through a bench.
_ENTRIES = {
    "spec": ("spec", "resolution"),
    "target": ("name", "backend", "device", "description", "peak", "memory", "options"),
    "input": ("batch", "dynamic_batch", "shape"),
    "preprocess": ("resize", "crop", "interpolation", "mean", "std"),
    "weights": (),
    "stages": (),
}


def _check_entries(d: dict, where: str) -> None:
    def damaged(why: str) -> UserError:
        return UserError(f"{where}: {why}; rebuild the bundle with edgeffnet build")

    for entry, keys in _ENTRIES.items():
        if not isinstance(d[entry], dict):
            raise damaged(f"its '{entry}' entry is not an object")
        missing = [k for k in keys if k not in d[entry]]
        if missing:
            raise damaged(f"its '{entry}' entry lacks {', '.join(missing)}")
    for entry, kind in (("precision", str), ("files", list)):
        if not isinstance(d[entry], kind):
            raise damaged(f"its '{entry}' entry is not a {kind.__name__}")
    p = d["preprocess"]
    try:
        ok = (
            len(p["mean"]) == len(p["std"]) == 3
            and p["interpolation"] in ("bicubic", "bilinear")
            and int(p["crop"]) >= 1
            and int(p["resize"]) >= 1
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise damaged("its 'preprocess' entry is damaged")


MAX_CLASSES = 100_000  # build's --num-classes bound
MAX_SIDE = 4096  # build's --resolution bound
# The short side is resized to crop / 0.875 for every recipe edgeffnet writes; timm's crop fractions run
# from 0.8 to 1.0. Four times the crop leaves room for any recipe and keeps a resize small.
MAX_RESIZE_OVER_CROP = 4


def _check_numbers(d: dict, where: str) -> None:
    """The numbers a bundle's reader acts on agree with the model the bundle holds: its input shape, its
    head. An edited `resize` of 100000 would make every image a 100000-pixel one before it is cropped."""

    def damaged(why: str) -> UserError:
        return UserError(f"{where}: {why}; rebuild the bundle with edgeffnet build")

    positive_int(d, "num_classes", where, MAX_CLASSES)
    shape = d["input"]["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 4
        or any(isinstance(v, bool) or not isinstance(v, int) for v in shape[1:])
        or shape[1] != 3
        or not all(1 <= v <= MAX_SIDE for v in shape[2:])
    ):
        raise damaged("its input shape is not [batch, 3, H, W] with H and W in 1..4096")
    batch = d["input"]["batch"]
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 1024):
        raise damaged("its input batch is not a whole number in 1..1024 (or null: dynamic)")
    p, source = d["preprocess"], f"{where} 'preprocess'"
    crop = positive_int(p, "crop", source, MAX_SIDE)
    resize = positive_int(p, "resize", source, MAX_SIDE * MAX_RESIZE_OVER_CROP)
    if crop != shape[2] or crop != shape[3]:
        raise damaged(f"its preprocessing crops {crop} pixels but the model takes {shape[2]}x{shape[3]}")
    if not crop <= resize <= MAX_RESIZE_OVER_CROP * crop:
        raise damaged(
            f"its preprocessing resizes to {resize} pixels for a {crop}-pixel crop (expected "
            f"{crop}..{MAX_RESIZE_OVER_CROP * crop})"
        )
    for key in ("mean", "std"):
        values = p[key]
        if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 255 for v in values
        ):
            raise damaged(f"its preprocessing {key} is not three numbers in 0..255")
    if not all(v > 0 for v in p["std"]):
        raise damaged("its preprocessing std has a zero")
    for name in d["files"]:
        if not isinstance(name, str):
            raise damaged("its 'files' entry lists something that is not a file name")


def _read_manifest_file(path: Path) -> Any:
    """manifest.json of the directory `path` as JSON (a dict, unless damaged), or None where there is none
    or it is not JSON;
    a manifest that is no regular file or is oversized is an UntrustedFileError."""
    try:
        text = read_text(path / MANIFEST, MANIFEST_FORMAT.cap, MANIFEST_FORMAT.what)
    except UntrustedFileError:
        if not (path / MANIFEST).exists() and not (path / MANIFEST).is_symlink():
            return None
        raise
    try:
        d = parse_json(text, f"'{path / MANIFEST}'")
    except UntrustedFileError as e:
        if "nests deeper" in str(e):
            raise
        return None
    return d


def is_bundle(path: Path) -> bool:
    try:
        d = _read_manifest_file(Path(path))
    except UserError:
        return False
    return isinstance(d, dict) and MANIFEST_FORMAT.version_of(d) is not None


def read_manifest(path: str | Path) -> dict:
    """manifest.json as a dict, checked: a directory that is not a bundle is one clear error."""
    return _open_manifest(path)[1].to_dict()


def _open_manifest(path: str | Path) -> tuple[Path, Manifest]:
    path = Path(path)
    if path.is_file() and path.name == MANIFEST:
        path = path.parent
    if not path.exists():
        raise UserError(f"bundle '{path}' does not exist; build one with edgeffnet build")
    if not path.is_dir():
        raise UserError(
            f"'{path}' is not an edgeffnet bundle (a bundle is a directory); build one with edgeffnet build"
        )
    d = _read_manifest_file(path)
    if d is None:
        raise UserError(f"'{path}' is not an edgeffnet bundle (no readable {MANIFEST}); build one with edgeffnet build")
    if not isinstance(d, dict):
        raise UserError(f"'{path}/{MANIFEST}' is not an edgeffnet manifest; rebuild the bundle with edgeffnet build")
    where = f"'{path}/{MANIFEST}'"
    manifest = Manifest.from_dict(d, where)
    # Every file a manifest names is the bundle's own: an edited `graph` of '/etc/x.onnx' or '../other' is
    # refused before anything loads it.
    confined(path, manifest.graph)
    return path, manifest


def write_manifest(path: Path, manifest: Manifest | dict) -> None:
    atomic_write_json(
        Path(path) / MANIFEST, manifest.to_dict() if isinstance(manifest, Manifest) else manifest, indent=2
    )


class Bundle:
    """An opened bundle: its directory, manifest, target profile and precision, and a runner for it."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path, self.manifest = Path(path), manifest

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        return cls(*_open_manifest(path))

    @property
    def target(self) -> Target:
        from edgeffnet.specs.targets import of_bundle

        return of_bundle(self.manifest.to_dict())

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def random_weights(self) -> bool:
        return bool(self.manifest.weights.get("random_init"))

    def runner(self, settings: RunSettings | None = None) -> Runner:
        """The compiled artifact, loaded on this host's device (backends.RunSettings for the knobs)."""
        from edgeffnet.backends import get

        t = self.target
        runner = get(t.backend).load(self.path, t, self.precision, settings)
        check_input(runner, self.manifest.input["shape"], f"{self.path}'s {t.backend} artifact")
        return runner

    def layer_table(self) -> dict:
        """layers.json, checked (torch- and onnx-free: it is read on the device when profiling)."""
        from edgeffnet.specs.layer_table import read

        if not (self.path / LAYER_TABLE).exists():
            raise UserError(
                f"{self.path} has no {LAYER_TABLE} (built by an edgeffnet that wrote no layer table); "
                f"rebuild it with edgeffnet build to profile it"
            )
        return read(self.path / LAYER_TABLE)

    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """The verification views (preprocessed) and the FP32 PyTorch logits the build stored for them."""
        from edgeffnet.core.preprocess import Preprocess
        from edgeffnet.network.photos import to_input

        views, logits = read_reference(
            self.path / REFERENCE, self.manifest.preprocess["crop"], self.manifest.num_classes
        )
        return to_input(views, Preprocess.from_dict(self.manifest.preprocess)), logits

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, {self.manifest.spec.get('spec')}, {self.target.name}, {self.precision})"


def check_input(runner: object, shape: list, what: str) -> None:
    """The loaded artifact takes the H x W the manifest says (and its preprocessing crops to); an artifact
    swapped for another model's is one line here, not a shape error from inside the runtime."""
    got = tuple(getattr(runner, "input_shape", ()) or ())
    if len(got) == 4 and any(g not in (-1, want) for g, want in zip(got[1:], shape[1:])):
        raise UserError(
            f"{what} takes input {'x'.join(map(str, got[1:]))} but the manifest says "
            f"{'x'.join(map(str, shape[1:]))}: the bundle's files do not belong together; rebuild it "
            f"with edgeffnet build"
        )


REFERENCE_CAP = 1 << 30  # 10,000 views at 96 px and their logits are ~300 MB; a larger one is no bundle's


def read_reference(path: Path, crop: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """reference.npz's uint8 views (N x crop x crop x 3) and FP32 logits (N x classes), checked: a regular
    file under the cap, a zip of plain arrays (never a pickle), the shapes the manifest says."""
    import io
    import zipfile

    def damaged(why: str) -> UserError:
        return UserError(f"{path} {why}; rebuild the bundle with edgeffnet build")

    data = read_bytes_or_none(path)
    if data is None:
        raise damaged("is missing")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise damaged("is damaged (not an .npz archive)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            views, logits = npz["views"], npz["logits"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise damaged(f"is damaged ({type(e).__name__})") from None
    if (
        views.dtype != np.uint8
        or views.ndim != 4
        or views.shape[1:] != (crop, crop, 3)
        or logits.ndim != 2
        or logits.shape != (len(views), num_classes)
        or not np.issubdtype(logits.dtype, np.floating)
    ):
        raise damaged(
            f"holds views {views.shape} and logits {logits.shape}, not what the manifest says "
            f"(N x {crop} x {crop} x 3 and N x {num_classes})"
        )
    return views, logits


def read_bytes_or_none(path: Path, cap: int = REFERENCE_CAP) -> bytes | None:
    from edgeffnet.core.untrusted import read_bytes

    if not path.exists() and not path.is_symlink():
        return None
    return read_bytes(path, cap, "bundle file")


def check_destination(final: Path) -> None:
    """Refuse early, before any work: an existing non-bundle, or a place that cannot be written."""
    if final.is_symlink() and not final.exists():
        raise UserError(
            f"-o {final} is a symbolic link to {os.readlink(final)}, which does not exist; "
            f"remove the link or choose another path"
        )
    if final.exists() and (os.path.ismount(final) or final.resolve() == Path.cwd().resolve()):
        # A bundle replaces its directory by renaming; neither a mount point nor the directory the build
        # runs in can be renamed over.
        what = "a mount point" if os.path.ismount(final) else "the current directory"
        raise UserError(
            f"-o {final} is {what}, which a bundle cannot replace; name a directory inside it, "
            f"e.g. -o {final / 'bundle'}"
        )
    if final.exists():
        if not final.is_dir():
            raise UserError(f"-o {final} exists and is a file, not a bundle directory; choose another path")
        if not is_bundle(final) and any(final.iterdir()):
            raise UserError(f"-o {final} exists and is not an edgeffnet bundle; choose another directory or remove it")
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(
            f"cannot create -o {final}: {parent} exists and is not a directory; choose another path"
        ) from None
    except OSError as e:
        raise UserError(f"cannot create -o {final}: {e.strerror or e}; choose a writable directory") from None
    # Try it rather than ask os.access: root passes every permission check, and /proc or a read-only
    # mount refuse only when something is created.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{final.name}.probe-{os.getpid()}-", dir=parent))
    except OSError as e:
        raise UserError(f"cannot write to {parent} ({e.strerror or e}); choose a writable -o directory") from None


STALE_SECONDS = 24 * 3600  # debris of a live PID this old is a reused PID's, not a running build's


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0
    return True


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def clean_debris(final: Path) -> list[str]:
    """Remove the staging, probe and swapped-out directories that killed builds (SIGKILL, a power cut)
    left beside `final`; those of running builds stay. A previous bundle a build was killed while
    swapping out goes back in place. Returns the names removed or restored."""
    pattern = re.compile(rf"\.{re.escape(final.name)}\.(partial|probe|old)-(\d+)(-.*)?")
    done: list[str] = []
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return done
    for path in entries:
        m = pattern.fullmatch(path.name)
        if not m:
            continue
        try:
            age = time.time() - path.lstat().st_mtime
        except OSError:
            continue
        pid = int(m.group(2))
        if pid != os.getpid() and pid_alive(pid) and age < STALE_SECONDS:
            continue
        try:
            if m.group(1) == "old" and not final.exists() and is_bundle(path):
                path.rename(final)
            else:
                _remove(path)
        except OSError:
            continue
        done.append(path.name)
    return done


# What edgeffnet writes into a bundle after its build: bench records, eval results, an engine finished on
# the device. They describe the old artifacts, so a rebuild drops them like the manifest's own files.
WRITTEN_LATER = {BENCH, EVAL, ENGINE, ENGINE_FACTS}


def owned_files(path: Path) -> set[str] | None:
    """What the bundle at `path` wrote (its manifest's file list and what edgeffnet's commands add later),
    or None when it is no bundle."""
    try:
        d = _read_manifest_file(Path(path))
        if not isinstance(d, dict) or MANIFEST_FORMAT.version_of(d) is None:
            return None
        return {n for n in d["files"] if isinstance(n, str)} | {MANIFEST} | WRITTEN_LATER
    except (UserError, KeyError, TypeError):
        return None


@contextmanager
def _swap_lock(parent: Path) -> Iterator[None]:
    """Serialise the swap step of builds into one parent directory (two builds to one -o at once)."""
    try:
        import fcntl

        fd = os.open(parent, os.O_RDONLY)
    except (ImportError, OSError):
        yield  # no flock here: a lost race still ends in a clear refusal below
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename the finished `tmp` to `final`. An existing bundle there is replaced; the entries in it that it
    did not write (the user's checkpoint, notes) move into the new bundle. Any failure leaves the old one."""

    def refusal(e: OSError) -> UserError:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return UserError(
                f"-o {final} changed while this build ran (another build or program writes there); "
                f"it was left as it is: build again, or choose another -o"
            )
        return UserError(
            f"cannot put the bundle in place at -o {final} ({e.strerror or e}); whatever was there is unchanged"
        )

    with _swap_lock(final.parent):
        owned = owned_files(final) if final.is_dir() and not final.is_symlink() else None
        if owned is None:  # nothing there, or an empty directory (check_destination refused anything else)
            try:
                tmp.rename(final)
            except OSError as e:
                raise refusal(e) from None
            return
        users = sorted(p.name for p in final.iterdir() if p.name not in owned)
        clash = [n for n in users if (tmp / n).exists()]
        if clash:
            raise UserError(
                f"-o {final} holds {clash[0]}, which is not the old bundle's but the new bundle writes "
                f"a file of that name; move it away and build again (the old bundle is unchanged)"
            )
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        final.rename(old)  # a directory cannot be renamed over a full one: the old bundle steps aside
        moved = []
        try:
            for name in users:
                (old / name).rename(tmp / name)
                moved.append(name)
            tmp.rename(final)
        except BaseException as e:
            for name in moved:
                (tmp / name).rename(old / name)
            if not final.exists():
                old.rename(final)  # the previous bundle stays, whole
            if isinstance(e, OSError):
                raise refusal(e) from None
            raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staging(final: Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `final` atomically, on any failure it is removed."""
    final = Path(os.path.realpath(final))  # -o a symlink: the bundle replaces its target, the link stays
    check_destination(final)
    clean_debris(final)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-{os.getpid()}-", dir=final.parent))
    except OSError as e:
        raise UserError(f"cannot write to {final.parent}: {e.strerror or e}; choose a writable -o directory") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make the bundle private to its builder
    try:
        yield tmp
        _swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


FP32_GRAPH = SIMPLIFIED


def fp32_graph(path: str | Path, what: str) -> Path:
    """The bundle's FP32 ONNX graph, or one line saying it was left out (a TensorRT bundle keeps only the
    graph its engine is built from; manifest.json's left_out says so) and where it still is."""
    graph = Path(path) / FP32_GRAPH
    if not graph.is_file():
        raise UserError(
            f"{what} needs the bundle's FP32 graph {FP32_GRAPH}, which {path} does not hold (a "
            f"TensorRT bundle keeps only the graph its engine is built from; see left_out in its "
            f"manifest.json): run it on the build machine, whose stage cache keeps the FP32 graph, "
            f"or on a bundle for another target"
        )
    return graph

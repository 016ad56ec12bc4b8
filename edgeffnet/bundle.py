"""A bundle is a directory of artifacts plus manifest.json; it appears whole or not at all.

Everything is written into a hidden temporary directory beside the destination and renamed into place
when complete, so a failed or interrupted build leaves nothing that looks like a bundle. This module is
the bundle side: it imports no torch, so `Bundle.open(path).runner()` works on a device-only install.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import MISSING as _MISSING
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .errors import UserError
from .files import atomic_write_json

MANIFEST = "manifest.json"
FORMAT = 1


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
    graph: str = "model.sim.onnx"  # the precision stage's ONNX graph; the compile record says what it converted
    fidelity: dict | None = None
    build_seconds: float | None = None
    tools: dict = field(default_factory=dict)
    host: dict = field(default_factory=dict)
    bundle_format: int = FORMAT
    extra: dict = field(default_factory=dict)  # keys a later edgeffnet wrote, kept as they were

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        return {"bundle_format": d.pop("bundle_format"), "edgeffnet": d.pop("edgeffnet"),
                "created": d.pop("created"), **d, **extra}

    @classmethod
    def from_dict(cls, d: dict, where: str = "manifest") -> "Manifest":
        names = {f.name for f in fields(cls)} - {"extra"}
        required = [f.name for f in fields(cls) if f.default is f.default_factory is _MISSING]
        missing = [k for k in required if k not in d]
        if d.get("bundle_format") != FORMAT or missing:
            fmt = d.get("bundle_format", "unknown")
            why = f"lacks {', '.join(missing[:3])}" if missing else f"has bundle format {fmt}"
            raise UserError(f"{where} {why}; this edgeffnet reads bundle format {FORMAT}: rebuild the bundle "
                            f"with edgeffnet build")
        return cls(**{k: v for k, v in d.items() if k in names}, extra={k: v for k, v in d.items() if k not in names})


def is_bundle(path: Path) -> bool:
    try:
        return json.loads((Path(path) / MANIFEST).read_text()).get("bundle_format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_manifest(path: str | Path) -> dict:
    """manifest.json as a dict, checked: a directory that is not a bundle is one clear error."""
    return _open_manifest(path)[1].to_dict()


def _open_manifest(path: str | Path) -> tuple[Path, Manifest]:
    path = Path(path)
    if path.is_file() and path.name == MANIFEST:
        path = path.parent
    if not path.exists():
        raise UserError(f"bundle '{path}' does not exist; build one with edgeffnet build")
    try:
        d = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        raise UserError(f"'{path}' is not an edgeffnet bundle (no readable {MANIFEST}); build one with "
                        f"edgeffnet build") from None
    if not isinstance(d, dict):
        raise UserError(f"'{path}/{MANIFEST}' is not an edgeffnet manifest; rebuild the bundle with edgeffnet build")
    return path, Manifest.from_dict(d, f"'{path}/{MANIFEST}'")


def write_manifest(path: Path, manifest: Manifest | dict) -> None:
    atomic_write_json(Path(path) / MANIFEST, manifest.to_dict() if isinstance(manifest, Manifest) else manifest,
                      indent=2)


class Bundle:
    """An opened bundle: its directory, manifest, target profile and precision, and a runner for it."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path, self.manifest = Path(path), manifest

    @classmethod
    def open(cls, path: str | Path) -> "Bundle":
        return cls(*_open_manifest(path))

    @property
    def target(self):
        from .targets import of_bundle

        return of_bundle(self.manifest.to_dict())

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def random_weights(self) -> bool:
        return bool(self.manifest.weights.get("random_init"))

    def runner(self, settings=None):
        """The compiled artifact, loaded on this host's device (backends.RunSettings for the knobs)."""
        from .backends import get

        t = self.target
        return get(t.backend).load(self.path, t, self.precision, settings)

    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """The verification views (preprocessed) and the FP32 PyTorch logits the build stored for them."""
        from .photos import to_input
        from .preprocess import Preprocess

        try:
            data = np.load(self.path / "reference.npz")
            return to_input(data["views"], Preprocess.from_dict(self.manifest.preprocess)), data["logits"]
        except (OSError, KeyError, ValueError) as e:
            raise UserError(f"{self.path}/reference.npz is missing or damaged ({type(e).__name__}); rebuild the "
                            f"bundle with edgeffnet build") from None

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, {self.manifest.spec.get('spec')}, {self.target.name}, {self.precision})"


def check_destination(final: Path) -> None:
    """Refuse early, before any work: an existing non-bundle, or a place that cannot be written."""
    if final.exists():
        if not final.is_dir():
            raise UserError(f"-o {final} exists and is a file, not a bundle directory; choose another path")
        if not is_bundle(final) and any(final.iterdir()):
            raise UserError(f"-o {final} exists and is not an edgeffnet bundle; choose another directory or remove it")
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"cannot create -o {final}: {parent} exists and is not a directory; "
                        f"choose another path") from None
    except OSError as e:
        raise UserError(f"cannot create -o {final}: {e.strerror or e}; choose a writable directory") from None
    # Try it rather than ask os.access: root passes every permission check, and /proc or a read-only
    # mount refuse only when something is created.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{final.name}.probe-", dir=parent))
    except OSError as e:
        raise UserError(f"cannot write to {parent} ({e.strerror or e}); choose a writable -o directory") from None


@contextmanager
def staging(final: Path):
    """Yield a temporary directory; on success it replaces `final` atomically, on any failure it is removed."""
    check_destination(final)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    except OSError as e:
        raise UserError(f"cannot write to {final.parent}: {e.strerror or e}; choose a writable -o directory") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make the bundle private to its builder
    old = None
    try:
        yield tmp
        if final.exists():  # a directory cannot be renamed over a full one: move the old bundle aside first
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            final.rename(old)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not final.exists():
            old.rename(final)  # the previous bundle stays, whole
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

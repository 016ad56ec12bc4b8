"""A bundle is a directory of artifacts plus manifest.json; it appears whole or not at all.

Everything is written into a hidden temporary directory beside the destination and renamed into place
when complete, so a failed or interrupted build leaves nothing that looks like a bundle.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

MANIFEST = "manifest.json"
FORMAT = 1


def is_bundle(path: Path) -> bool:
    try:
        return json.loads((path / MANIFEST).read_text()).get("bundle_format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    if path.is_file() and path.name == MANIFEST:
        path = path.parent
    if not is_bundle(path):
        raise UserError(f"'{path}' is not an edgeffnet bundle (no valid {MANIFEST}); build one with edgeffnet build")
    return json.loads((path / MANIFEST).read_text())


def write_manifest(path: Path, manifest: dict) -> None:
    tmp = path / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path / MANIFEST)


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

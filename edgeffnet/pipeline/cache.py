"""Finished stages are reused: a stage's files and record are stored under a key that hashes everything
that determines them (spec, weights hash, options, upstream key, tool versions, edgeffnet's own code)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from edgeffnet.core.errors import UserError
from edgeffnet.core.files import cache_root, sha256_file
from edgeffnet.core.untrusted import confined, read_json


@lru_cache(maxsize=1)
def code_digest() -> str:
    """A hash of edgeffnet's source and photo recipe. The version number alone does not follow an edited
    checkout: a graph stage cached by other code holds a reference from other weights (random init)
    than the model a later stage exports, and verification then fails on a difference nobody made."""
    from edgeffnet.core.resources import data_dir

    pkg = Path(__file__).resolve().parent.parent  # the whole package, not only pipeline/
    h = hashlib.sha256()
    for path in sorted(pkg.rglob("*.py")) + sorted(data_dir("calibration").glob("*.toml")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _clean_debris(stage_dir: Path) -> None:
    """Remove half-stored entries (`.KEY.PID-*`) whose builder was killed before renaming them in."""
    from edgeffnet.bundle import STALE_SECONDS, pid_alive

    for path in stage_dir.glob(".*.*-*"):
        try:
            pid = int(path.name.split(".")[2].split("-")[0])
            stale = pid != os.getpid() and (not pid_alive(pid) or time.time() - path.stat().st_mtime > STALE_SECONDS)
        except (ValueError, IndexError, OSError):
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)


class StageCache:
    """Stage entries: the stage's files and record.json, which holds each file's size and sha256.

    A fetched file is checked against them, so a truncated or swapped file (a full disk, a killed copy,
    a hand edit) is a miss and the stage runs again; its verified figures never travel with other bytes."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.dir = cache_root() / "stages"

    def fetch(self, stage: str, k: str, dest: Path) -> dict | None:
        """Copy a stored stage's files into `dest` and return its record, or None on a miss."""
        entry = self.dir / stage / k
        if not self.enabled or not (entry / "record.json").is_file():
            return None
        copied = []
        try:
            record = read_json(entry / "record.json", what="cache record")
            sums = record.pop("sha256")
            for name in record["files"]:
                # A stage's files are its own: a name that leads out of the entry or the destination is damage.
                source, target = confined(entry, name), confined(dest, name)
                copied.append(target)
                shutil.copyfile(source, target)
                # The copy is checked, not the entry: what lands in the bundle is what was verified.
                if target.stat().st_size != sums[name]["size"] or sha256_file(target) != sums[name]["sha256"]:
                    raise ValueError(f"{name} differs from what was stored")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, UserError) as e:
            for path in copied:  # a miss: the stage runs again (and stores a good entry in place of a damaged one)
                path.unlink(missing_ok=True)
            if not isinstance(e, OSError) or isinstance(e, FileNotFoundError):  # not e.g. a full disk at dest
                shutil.rmtree(entry, ignore_errors=True)
            return None
        return record

    def store(self, stage: str, k: str, src: Path, record: dict) -> None:
        if not self.enabled:
            return
        entry = self.dir / stage / k
        tmp = None
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            _clean_debris(entry.parent)
            tmp = Path(tempfile.mkdtemp(prefix=f".{k}.{os.getpid()}-", dir=entry.parent))
            sums = {}
            for name in record.get("files", []):
                shutil.copyfile(src / name, tmp / name)
                sums[name] = {"size": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
            (tmp / "record.json").write_text(json.dumps({**record, "sha256": sums}, default=str))
            # Fails when a concurrent build stored the same key first: theirs is kept, whole, and a build
            # copying from it meanwhile is not disturbed (fetch removes damaged entries itself).
            tmp.rename(entry)
        except OSError:  # a cache is an optimisation: failing to store only costs the next build time
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

"""The versioned JSON files edgeffnet writes and reads back, and the one way each is read back.

Every such file says what it is and which version of it: a tag (`"record": "edgeffnet-bench"` with
`"format": 2`, `"format": "edgeffnet-layers/1"`, or a bare number such as the manifest's
`"bundle_format": 1`). The layer that owns a file declares it once as a `Format`; `load` reads the file
(or a dict already parsed) through untrusted.py's careful reader and refuses, in one line naming the file,
what it found and what to do, a file of another kind or of a version this edgeffnet does not read. What
is inside a known version stays the owner's to check (its dataclass, `check_fields`).

This module knows no file kind itself (core imports nothing above it): the declarations live with their
readers, and the table of them is in CHANGELOG.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeffnet.core.untrusted import JSON_CAP, UntrustedFileError, read_json, shown

_SHOWN_CHARS = 60  # how much of a stranger's tag a refusal repeats


@dataclass(frozen=True)
class Format:
    """One kind of versioned file: what it is called, where its tag is, the versions this edgeffnet reads
    (the last is the one it writes), what to do with another, and how large such a file may be."""

    what: str  # how a refusal names such a file: "bench record", "layer table"
    key: str  # the key that tags it: "record", "format", "bundle_format"
    versions: tuple[int, ...]
    remedy: str  # what to do with a file of another version: "measure again with edgeffnet bench"
    # The kind's name in the tag. With `version_key` the tag is `{key: tag, version_key: N}`; without it,
    # `{key: "tag/N"}`; None: `key` holds the bare version number (`{"bundle_format": 1}`).
    tag: str | None = None
    version_key: str | None = None
    noun: str = "format"  # how a version is named in a refusal: "has bench record format 7"
    untagged: int | None = None  # the version a file without `key` is read as (written before the tag)
    cap: int = JSON_CAP

    @property
    def version(self) -> int:
        """The version this edgeffnet writes."""
        return self.versions[-1]

    def stamp(self, version: int | None = None) -> dict[str, Any]:
        """The entries that tag a file of `version` (default: the one written now), to put first in it."""
        v = self.version if version is None else version
        if self.tag is None:
            return {self.key: v}
        if self.version_key is not None:
            return {self.key: self.tag, self.version_key: v}
        return {self.key: f"{self.tag}/{v}"}

    def readable(self) -> str:
        """The versions this edgeffnet reads, as a refusal says them: "bench record formats 1, 2"."""
        if self.tag is not None and self.version_key is None:
            return ", ".join(f"{self.tag}/{v}" for v in self.versions)
        plural = "s" if len(self.versions) > 1 else ""
        return f"{self.noun}{plural} {', '.join(map(str, self.versions))}"

    def is_tagged(self, d: object) -> bool:
        """Whether `d` says it is a file of this kind, of any version (a tolerant scan passes others over)."""
        if not isinstance(d, dict):
            return False
        if self.tag is None:
            return self.key in d
        if self.version_key is not None:
            return d.get(self.key) == self.tag
        value = d.get(self.key)
        return isinstance(value, str) and value.startswith(f"{self.tag}/")

    def version_of(self, d: dict) -> int | None:
        """The version `d` is tagged with, or None where it has none this edgeffnet can read."""
        if self.key not in d and self.untagged is not None:
            return self.untagged
        value = d.get(self.key if self.version_key is None else self.version_key)
        if self.tag is not None and self.version_key is None:
            if not (isinstance(value, str) and self.is_tagged(d)):
                return None
            number = value.rpartition("/")[2]
            value = int(number) if number.isascii() and number.isdigit() and len(number) < 6 else None
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value if value in self.versions or value == self.untagged else None

    def found(self, d: dict) -> str:
        """What `d` holds where its version should be, as a refusal says it: "bench record format 7"."""
        key = self.key if self.version_key is None else self.version_key
        if key not in d:
            return f"no '{key}'"
        if self.tag is not None and self.version_key is None:
            return f"{self.noun} {str(d[key])[:_SHOWN_CHARS]!r}"
        return f"{self.noun} {str(d[key])[:_SHOWN_CHARS]}"


def load(
    fmt: Format, source: str | Path | dict, where: str | None = None, required: Iterable[str] = ()
) -> tuple[dict, int]:
    """(the file's JSON object, its version), for a file of `fmt` at `source` (a path, read through
    untrusted.py: a regular file of at most `fmt.cap` bytes, bounded nesting, a JSON object) or a dict
    already parsed from one. `where` names the file in refusals (default: the kind and the path);
    `required`: keys the file must hold (a file cut short is refused as one this edgeffnet cannot read).

    Every refusal is one line: "<where> has bench record format 7; this edgeffnet reads bench record
    formats 1, 2: measure again with edgeffnet bench"."""
    if isinstance(source, dict):
        d, where = source, where or fmt.what
    else:
        where = where or f"{fmt.what} {shown(source)}"
        d = read_json(source, fmt.cap, fmt.what, kind=None)
    if not isinstance(d, dict):
        raise UntrustedFileError(f"{where} holds a JSON {type(d).__name__}, not the object of an edgeffnet {fmt.what}")
    if fmt.version_key is not None and fmt.key in d and not fmt.is_tagged(d):
        raise UntrustedFileError(
            f"{where} is not an edgeffnet {fmt.what} (its '{fmt.key}' is {str(d[fmt.key])[:_SHOWN_CHARS]!r})"
        )
    if fmt.version_key is not None and fmt.key not in d and fmt.untagged is None:
        raise UntrustedFileError(f"{where} is not an edgeffnet {fmt.what} (it has no '{fmt.key}')")
    version = fmt.version_of(d)
    if version is None:
        raise UntrustedFileError(f"{where} has {fmt.found(d)}; this edgeffnet reads {fmt.readable()}: {fmt.remedy}")
    missing = [k for k in required if k not in d]
    if missing:
        raise UntrustedFileError(
            f"{where} lacks {', '.join(missing[:3])}; this edgeffnet reads {fmt.readable()}: {fmt.remedy}"
        )
    return d, version

"""The one careful way to read files that come from elsewhere.

Bundles, bench records, eval results, label files, search/fit state and evaluator outputs travel between
machines and people. Each reader of such a file goes through here, so every one gets the same rules:

- only regular files are read (a FIFO would hang, /dev/zero never ends, a directory is no file), and a
  symlink is followed only when it stays inside the folder it was found in (`confined`);
- every read has a size cap, checked before and while reading (a file can grow between stat and read);
- JSON nesting is bounded before it is parsed (deep nesting is a RecursionError, not a one-line error);
  NaN and Infinity are refused (they are not JSON, and a NaN latency would rank first or last at random);
- typed fields: `field(d, "key", int)` checks the type and says which file and which key was wrong.

Every failure is an `UntrustedFileError` (a UserError): one line naming the file and what to do.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from edgeffnet.core.errors import UserError

# Caps by kind of file: generous for what edgeffnet writes, far below what would hurt a 2 GB device.
JSON_CAP = 16 << 20  # manifests, records, eval results, state files
TEXT_CAP = 8 << 20  # label files, CSV label lists
LOG_CAP = 1 << 20  # what is kept of an evaluator's output
MAX_JSON_DEPTH = 64

T = TypeVar("T")


class UntrustedFileError(UserError):
    """A file from elsewhere that edgeffnet will not read as it is (what was wrong, what to do)."""


def shown(path: Path | str) -> str:
    """A path as a refusal quotes it."""
    # repr() keeps control characters (ANSI escapes in a file name) visible instead of acting on the terminal
    text = str(path)
    return repr(text) if any(ord(c) < 32 or c == "\x7f" for c in text) else f"'{text}'"


def confined(root: str | Path, relative: str | Path) -> Path:
    """`root / relative`, refused unless it resolves (symlinks followed) to a place inside `root`."""
    root = Path(root).resolve()
    rel = Path(relative)
    if rel.is_absolute() or str(relative).strip() == "":
        raise UntrustedFileError(
            f"{shown(relative)} in {shown(root)} is not a path inside it: a bundle names "
            "its files relative to itself; rebuild or re-copy it"
        )
    path = (root / rel).resolve()
    if path != root and root not in path.parents:
        raise UntrustedFileError(
            f"{shown(relative)} leads outside {shown(root)}: a bundle's files are its own; rebuild or re-copy it"
        )
    return path


def read_bytes(path: str | Path, cap: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `cap` bytes; one line otherwise."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise block here, before fstat could refuse it
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise UntrustedFileError(f"{what} {shown(path)} does not exist") from None
    except IsADirectoryError:
        raise UntrustedFileError(f"{what} {shown(path)} is a directory, not a file") from None
    except OSError as e:
        raise UntrustedFileError(f"{what} {shown(path)} cannot be read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):  # Linux opens a directory read-only without complaint
            raise UntrustedFileError(f"{what} {shown(path)} is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedFileError(
                f"{what} {shown(path)} is not a regular file (a device, FIFO or socket): give a plain file"
            )
        if st.st_size > cap:
            raise UntrustedFileError(
                f"{what} {shown(path)} is {st.st_size:,} bytes, over the {cap:,}-byte limit "
                "for such a file: it is not one edgeffnet wrote"
            )
        chunks, total = [], 0
        while True:
            block = os.read(fd, min(1 << 20, cap + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
            if total > cap:
                raise UntrustedFileError(f"{what} {shown(path)} grew past the {cap:,}-byte limit while read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: str | Path, cap: int = TEXT_CAP, what: str = "file") -> str:
    data = read_bytes(path, cap, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UntrustedFileError(f"{what} {shown(path)} is not UTF-8 text (byte {e.start})") from None


def _depth_ok(text: str, limit: int) -> bool:
    """Whether brackets nest at most `limit` deep (strings skipped): checked before json recurses."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str, source: str = "JSON", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON text from elsewhere: bounded nesting, no NaN/Infinity; one line on any fault."""
    if not _depth_ok(text, max_depth):
        raise UntrustedFileError(f"{source} nests deeper than {max_depth} levels: it is not one edgeffnet wrote")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise UntrustedFileError(f"{source} is not valid JSON ({str(e)[:120]})") from None


def read_json(path: str | Path, cap: int = JSON_CAP, what: str = "file", kind: type | None = dict) -> Any:
    """A JSON file from elsewhere, checked as `parse_json` does; `kind` is the top-level type expected."""
    value = parse_json(read_text(path, cap, what), f"{what} {shown(path)}")
    if kind is not None and not isinstance(value, kind):
        raise UntrustedFileError(
            f"{what} {shown(path)} holds a JSON {type(value).__name__}, not the {kind.__name__} edgeffnet writes there"
        )
    return value


def field(
    d: dict,
    key: str,
    kind: type[T] | tuple[type, ...],
    source: str = "record",
    *,
    default: Any = ...,
    finite: bool = True,
) -> T:
    """`d[key]`, checked to be of `kind` (bool is not taken for a number; floats must be finite)."""
    if key not in d:
        if default is not ...:
            return typing.cast(T, default)
        raise UntrustedFileError(f"{source} has no '{key}'")
    value = d[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    numeric = any(k in (int, float) for k in kinds)
    if isinstance(value, bool) and bool not in kinds and numeric:
        ok = False
    elif float in kinds and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    else:
        ok = isinstance(value, kinds)
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise UntrustedFileError(f"{source}: '{key}' is {type(value).__name__}, not {names}")
    if finite and isinstance(value, float) and not math.isfinite(value):
        raise UntrustedFileError(f"{source}: '{key}' is {value}, not a finite number")
    return typing.cast(T, value)


def _kinds_of(hint: Any) -> tuple[type, ...]:
    """The runtime types a field's annotation admits: `dict | None` -> (dict, NoneType), `list[str]` -> (list,)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(k for arg in typing.get_args(hint) for k in _kinds_of(arg))
    if hint is None or hint is type(None):
        return (type(None),)
    if origin is not None:
        return (origin,)
    return (hint,) if isinstance(hint, type) else (object,)


def check_fields(cls: type, d: dict, source: str) -> None:
    """Every key of `d` that names a field of `cls` (a dataclass or a TypedDict) holds the type that field
    declares (a manifest or record edited by hand: `"num_classes": "1000"` is one line here, not a
    TypeError three calls on)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else list(hints)
    for name in names:
        if name in d:
            field(d, name, _kinds_of(hints[name]), source)


def positive_int(d: dict, key: str, source: str, limit: int) -> int:
    """`d[key]`, a whole number in 1..limit (a bool, a float or a 4300-digit number is refused)."""
    value = field(d, key, int, source)
    if not 1 <= value <= limit:
        raise UntrustedFileError(f"{source}: '{key}' is {str(value)[:20]}, outside 1..{limit:,}")
    return value

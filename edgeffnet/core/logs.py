"""One standard-library logger for builds: a console handler (set by the caller) and a build.log handler.

Third-party progress output (NNCF prints bars and info lines on stdout) would mix with `--json`; it is
turned down to warnings, which go through logging to stderr like ours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOGGER = "edgeffnet"


class _Elapsed(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self.t0 = time.perf_counter()

    def format(self, record: logging.LogRecord) -> str:
        return f"[{time.perf_counter() - self.t0:8.2f}s] {record.getMessage()}"


def logger() -> logging.Logger:
    log = logging.getLogger(LOGGER)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    return log


class _Visible(logging.Formatter):
    """Messages name user paths and specs: control characters in them are shown, not sent to the terminal."""

    def format(self, record: logging.LogRecord) -> str:
        from edgeffnet.core.user_text import visible

        return visible(super().format(record))


def console_handler(stream: IO[str]) -> logging.Handler:
    """Messages as written, one per line, on `stream` (the CLI passes stderr)."""
    h = logging.StreamHandler(stream)
    h.setFormatter(_Visible("%(message)s"))
    return h


@contextmanager
def to_file(path: Path) -> Iterator[logging.Logger]:
    """Also log, with elapsed seconds, to `path` while the block runs (a bundle's build.log)."""
    h = logging.FileHandler(path, delay=True)
    h.setFormatter(_Elapsed())
    log = logger()
    log.addHandler(h)
    try:
        yield log
    finally:
        log.removeHandler(h)
        h.close()


def quiet_third_party() -> None:
    """NNCF logs progress at INFO and draws rich bars on stdout; only its warnings are worth a line."""
    for name in ("nncf",):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        import nncf

        nncf.set_log_level(logging.WARNING)
    except (ImportError, AttributeError):
        pass

"""One standard-library logger for builds: a console handler (set by the caller) and a build.log handler.

Third-party progress output (NNCF prints bars and info lines on stdout) would mix with `--json`; it is
turned down to warnings, which go through logging to stderr like ours.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOGGER = "edgeffnet"
# A log read through a pipe or a file (CI, nohup, a sweep's log) shows no progress bar: a long step says
# it is alive at least this often, so a reader never waits 30 s on a silent line.
HEARTBEAT_SECONDS = 20.0


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


CONSOLE_MARK = "edgeffnet_console"  # set on the CLI's console handler


def console_handler(stream: IO[str]) -> logging.Handler:
    """Messages as written, one per line, on `stream` (the CLI passes stderr)."""
    h = logging.StreamHandler(stream)
    h.setFormatter(_Visible("%(message)s"))
    setattr(h, CONSOLE_MARK, True)  # what heartbeat() writes to
    return h


def _terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


@contextmanager
def heartbeat(what: str, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """While the block runs, "WHAT: still running (Ns)" every `every` seconds on the console handler when
    it is not a terminal (a terminal shows bars where they exist; build.log records stage times already)."""
    log = logger()
    consoles = [
        h for h in log.handlers if getattr(h, CONSOLE_MARK, False) and not _terminal(getattr(h, "stream", None))
    ]
    if not consoles:
        yield
        return
    stop, t0 = threading.Event(), time.monotonic()

    def beat() -> None:
        while not stop.wait(every):
            line = log.makeRecord(
                LOGGER, logging.INFO, __file__, 0, f"{what}: still running ({time.monotonic() - t0:.0f}s)", (), None
            )
            for h in consoles:
                h.handle(line)

    thread = threading.Thread(target=beat, name="edgeffnet-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


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

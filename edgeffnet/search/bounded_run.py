"""Running a user's command with bounds: its output capped in memory and in its log, its time limited.

An evaluator is someone else's program. It may print gigabytes, end with a one-megabyte line, or never
end. Its output is streamed into the log as it comes: the first half of the cap is written as it
arrives, the last half is kept in a ring and written at the end, with a line saying how much was
dropped between them. On timeout (or Ctrl-C/SIGTERM) its whole process group is killed: a training
script's data-loader workers must not outlive it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from edgeffnet.core.untrusted import LOG_CAP
from edgeffnet.core.user_text import visible

ERROR_LINE_CHARS = 300  # what of a failing command's last stderr line goes into the one-line error
STDERR_TAIL_BYTES = 8192  # enough to hold that last line


def shown(text: str, limit: int = ERROR_LINE_CHARS) -> str:
    """User text for one line: control characters (ANSI escapes, newlines) made visible, length bounded."""
    text = visible(text[: limit * 4 + 1], newlines=False)
    return text if len(text) <= limit else text[:limit] + "... (cut)"


class CappedLog:
    """The head of a stream written to `path` as it comes, the tail kept in memory: at most `cap` bytes."""

    def __init__(self, path: Path, cap: int = LOG_CAP):
        self.file = open(path, "wb")
        self.head_left = cap // 2
        self.tail: deque[bytes] = deque()
        self.tail_bytes, self.tail_cap, self.dropped = 0, cap - cap // 2, 0
        self.lock = threading.Lock()

    def write(self, block: bytes) -> None:
        with self.lock:
            if self.file.closed:  # a straggler after close: nothing more is kept
                self.dropped += len(block)
                return
            if self.head_left > 0:
                first, block = block[: self.head_left], block[self.head_left :]
                self.file.write(first)
                self.head_left -= len(first)
            if block:
                self.tail.append(block)
                self.tail_bytes += len(block)
                while self.tail_bytes - len(self.tail[0]) >= self.tail_cap:  # whole blocks out of the ring
                    self.tail_bytes -= len(self.tail[0])
                    self.dropped += len(self.tail.popleft())

    def close(self) -> None:
        with self.lock:
            tail = b"".join(self.tail)
            if len(tail) > self.tail_cap:
                self.dropped += len(tail) - self.tail_cap
                tail = tail[-self.tail_cap :]
            if self.dropped:
                self.file.write(
                    f"\n[edgeffnet: {self.dropped:,} bytes of output dropped here: the log keeps the "
                    f"first and last {self.tail_cap:,} bytes]\n".encode()
                )
            self.file.write(tail)
            self.file.close()


@dataclass
class Finished:
    returncode: int | None  # None: killed on timeout
    last_stderr_line: str
    log_dropped: int


def _pump(stream, log: CappedLog, keep_tail: bytearray | None) -> None:
    for block in iter(lambda: stream.read1(1 << 16), b""):
        log.write(block)
        if keep_tail is not None:
            keep_tail += block
            del keep_tail[:-STDERR_TAIL_BYTES]


def _kill_group(proc: subprocess.Popen) -> None:
    """The command and whatever it left running (its own session): a finished evaluator's leftovers
    would hold its pipes open and its memory."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group is the command and its children
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_bounded(argv: list[str], log_path: Path, timeout: float | None, cap: int = LOG_CAP) -> Finished:
    """Run `argv` (no shell), its stdout and stderr into a capped log; kill its process group after
    `timeout` seconds (None: no limit). Raises OSError if it cannot start."""
    log = CappedLog(log_path, cap)
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
    except BaseException:
        log.close()
        raise
    err_tail = bytearray()
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, log, None), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, log, err_tail), daemon=True),
    ]
    for p in pumps:
        p.start()
    try:
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        _kill_group(proc)
    except BaseException:  # Ctrl-C or SIGTERM while it runs: it goes too
        _kill_group(proc)
        raise
    finally:
        drained = time.monotonic() + 5  # a process that left the group (setsid) may hold the pipes: not forever
        for p in pumps:
            p.join(timeout=max(0.0, drained - time.monotonic()))
        log.close()
    lines = err_tail.decode("utf-8", "replace").strip().splitlines()
    return Finished(code, lines[-1] if lines else "", log.dropped)

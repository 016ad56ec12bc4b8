"""Running `edgeffnet ARGS...` in this process as the console script does, and the one-line refusal check
(shared by the issue-22 tests: evaluators, search grid, cam outputs, farm timeouts, console text)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest

from edgeffnet import cli as edgeffnet_cli
from edgeffnet import logs


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def cli(capsys, monkeypatch):
    """`cli(*args)` -> Ran(exit code, stdout, stderr), through edgeffnet.cli.main."""

    def run(*args: str) -> Ran:
        log = logs.logger()
        handlers = list(log.handlers)
        monkeypatch.setattr(sys, "argv", ["edgeffnet", *map(str, args)])
        capsys.readouterr()
        try:
            edgeffnet_cli.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        finally:
            log.handlers[:] = handlers  # main() adds a console handler per call
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


def refused(r: Ran, *needles: str) -> str:
    """A non-zero exit, no traceback, nothing on stdout, and exactly one line on stderr that names what was
    wrong (`edgeffnet: error: ...`); returns that line."""
    assert r.code not in (0, None), r
    assert "Traceback" not in r.err and r.out == "", r
    assert len(r.lines) == 1, r.err
    line = r.lines[0]
    assert line.startswith("edgeffnet: error: "), line
    assert len(line) < 600, line
    for n in needles:
        assert n in line, (n, line)
    return line

"""Where ACC(m) comes from: the user's command, the built-in trainer, or nowhere.

An evaluator is called with a candidate's spec and a work directory and returns its accuracy (a fraction
in [0, 1]) or None. `identity()` is stored with each result: a result scored by another evaluator (or
the same one with other data or settings) is scored again, never mixed in.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

from edgeffnet.core.errors import UserError
from edgeffnet.core.untrusted import UntrustedFileError, read_json
from edgeffnet.search.bounded_run import run_bounded, shown
from edgeffnet.search.harness import atomic_write_text

# Long enough for a short proxy training of one candidate (an epoch or two of a B0-sized network on a
# GPU), short enough that a hung evaluator costs one evening rather than the whole search.
DEFAULT_TIMEOUT_S = 7200.0
OUTPUT_CAP = 1 << 20  # {"accuracy": 0.734} is 20 bytes


class NoEvaluator:
    """(c): latency only. The search then ranks splits of the FLOPS budget by latency, and says so."""

    kind = "none"

    def identity(self) -> dict:
        return {"kind": self.kind}

    def __call__(self, spec: str, workdir: Path) -> None:
        return None


def _accuracy(value, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:  # NaN fails too
        raise UserError(
            f"{source}: 'accuracy' must be a fraction between 0 and 1 (got {shown(repr(value), 60)}); "
            f'write e.g. {{"accuracy": 0.734}}'
        )
    return float(value)


class CommandEvaluator:
    """(a): `--evaluate CMD`. CMD is split like a shell line (no shell runs it); in each word {spec} becomes
    the candidate's spec and {output} a JSON path the command must write {"accuracy": FRACTION} into.
    It runs for at most `timeout` seconds (its process group is killed then); its output goes to
    evaluate.log, capped (bounded_run)."""

    kind = "command"

    def __init__(self, template: str, timeout: float | None = DEFAULT_TIMEOUT_S):
        try:
            self.argv = shlex.split(template)
        except ValueError as e:
            raise UserError(
                f"--evaluate '{shown(template)}' cannot be split into words ({e}); check its quotes"
            ) from None
        if not self.argv or not any("{output}" in a for a in self.argv) or not any("{spec}" in a for a in self.argv):
            raise UserError(
                "--evaluate needs a command with {spec} (the candidate's model spec) and {output} (where it "
                "writes {\"accuracy\": ...}), e.g. --evaluate 'python train.py --spec {spec} --out {output}'"
            )
        if timeout is not None and not timeout > 0:
            raise UserError(f"--evaluate-timeout is in seconds and must be positive, got {timeout:g}")
        self.template, self.timeout = template, timeout

    def identity(self) -> dict:
        return {"kind": self.kind, "command": self.template}  # the time limit does not change a score

    def __call__(self, spec: str, workdir: Path) -> float:
        output, log = workdir / "accuracy.json", workdir / "evaluate.log"
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            for stale in (output, log):  # a previous evaluator may have left a directory or a link there
                if stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale)
                else:
                    stale.unlink(missing_ok=True)
        except OSError as e:
            raise UserError(
                f"--evaluate: cannot prepare {workdir} for {spec} ({e.strerror or e}); remove it and run again"
            ) from None
        argv = [a.replace("{spec}", spec).replace("{output}", str(output)) for a in self.argv]
        try:
            done = run_bounded(argv, log, self.timeout)
        except OSError as e:
            raise UserError(
                f"--evaluate: cannot run '{shown(argv[0])}' ({e.strerror or e}); check the command"
            ) from None
        if done.returncode is None:
            raise UserError(
                f"--evaluate ran over {self.timeout:g} s for {spec} and was stopped (its process group "
                f"killed); raise --evaluate-timeout if it needs longer (log: {log})"
            )
        if done.returncode != 0:
            raise UserError(
                f"--evaluate exited {done.returncode} for {spec}: {shown(done.last_stderr_line or 'no output')}"
                f" (log: {log})"
            )
        if output.is_symlink():  # the result is the command's own file, not one it points at
            raise UserError(
                f"--evaluate ran for {spec} but {output} is a symbolic link; the command must write "
                '{"accuracy": FRACTION} into the {output} path itself'
            )
        try:
            result = read_json(output, OUTPUT_CAP, "--evaluate output")
        except UntrustedFileError as e:
            raise UserError(
                f"--evaluate ran for {spec} but its {{output}} holds no JSON it may read ({e}); the "
                'command must write {"accuracy": FRACTION} to the {output} path'
            ) from None
        if "accuracy" not in result:
            raise UserError(f"--evaluate wrote {output} without an 'accuracy' key; write {{\"accuracy\": FRACTION}}")
        return _accuracy(result["accuracy"], f"--evaluate for {spec}")


class TrainEvaluator:
    """(b): train each candidate on `--data` for `--epochs` and score it on `--val` (top-1)."""

    kind = "train"

    def __init__(
        self,
        data: str,
        val: str,
        epochs: int,
        init: str = "scratch",
        batch_size: int = 32,
        lr: float = 1e-3,
        seed: int = 0,
        echo=None,
    ):
        from edgeffnet.search.train import image_folder

        classes, _ = image_folder(data)  # bad folders fail before the first build
        image_folder(val, classes)
        if epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {epochs}")
        self.data, self.val = str(Path(data).resolve()), str(Path(val).resolve())
        self.epochs, self.init, self.batch_size, self.lr, self.seed, self.echo = (
            epochs,
            init,
            batch_size,
            lr,
            seed,
            echo,
        )

    def identity(self) -> dict:
        return {
            "kind": self.kind,
            "data": self.data,
            "val": self.val,
            "epochs": self.epochs,
            "init": self.init,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "seed": self.seed,
        }

    def __call__(self, spec: str, workdir: Path) -> float:
        from edgeffnet.search.train import train_and_evaluate

        result = train_and_evaluate(
            spec, self.data, self.val, self.epochs, self.init, self.batch_size, self.lr, self.seed, echo=self.echo
        )
        workdir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(workdir / "training.json", json.dumps(result, indent=1) + "\n")
        return _accuracy(result["accuracy"], f"training {spec}")


def choose(
    command: str | None,
    data: str | None,
    val: str | None,
    epochs: int = 1,
    init: str = "scratch",
    batch_size: int = 32,
    lr: float = 1e-3,
    echo=None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
):
    """The evaluator the options ask for; conflicting or half-given options are refused before any build
    (an empty --evaluate is a command with no words, not no command)."""
    if command is not None and (data or val):
        raise UserError("--evaluate and --data/--val are two ways to get accuracy; give one of them")
    if command is not None:
        return CommandEvaluator(command, timeout)
    if bool(data) != bool(val):
        raise UserError("--data (training folder) and --val (validation folder) go together; give both")
    if data:
        return TrainEvaluator(data, val, epochs, init, batch_size, lr, echo=echo)
    return NoEvaluator()

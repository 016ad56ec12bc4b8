"""Options more than one command takes, declared once; their defaults come from the modules that own them.

- build settings: pipeline/options.py's BuildOptions (read in cli/build.py);
- a measurement's length: measure/bench.py's Settings (`edgeffnet bench`) and SHORT (sweep, search, fit:
  many models, each timed for less), PROFILE_ITERATIONS for --profile;
- the farm's time limits: farm/tasks.py's TASK_TIMEOUT and farm/probe.py's CONNECT_TIMEOUT_S.

An option keeps its help text per command (what it means there): a helper takes that text as its argument.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from edgeffnet.cli.types import COUNT, SECONDS, THREADS, Choice, FiniteFloat
from edgeffnet.core.errors import UserError
from edgeffnet.farm.probe import CONNECT_TIMEOUT_S
from edgeffnet.farm.tasks import TASK_TIMEOUT
from edgeffnet.measure.bench import Settings
from edgeffnet.specs.scaling import __doc__ as SPEC_GRAMMAR
from edgeffnet.specs.targets import PRECISIONS

Decorator = Callable[[Callable], Callable]

DEFAULT_TARGET = "cpu"  # the host itself: every install can build and measure for it


def stacked(*options: Decorator) -> Decorator:
    """Several options as one decorator, in the order they are listed (and shown in --help)."""

    def apply(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def spec_help() -> str:
    """The spec grammar of specs/scaling.py's docstring as a command's epilog, its columns kept as written."""
    grammar = SPEC_GRAMMAR.split("::", 1)[1].strip("\n")
    lines = [line[4:] if line.startswith("    ") else line for line in grammar.rstrip().splitlines()]
    # "\b" stops click from re-flowing a paragraph: the grammar's columns must stay as written.
    paragraphs = "\n".join(lines).split("\n\n")
    return "\n\n".join(["\b\nModel spec grammar:"] + ["\b\n" + p for p in paragraphs])


def json_option(text: str = "Print machine-readable JSON.") -> Decorator:
    return click.option("--json", "as_json", is_flag=True, help=text)


def output_option(text: str, default: str | None = None, required: bool = False) -> Decorator:
    if default is None:
        return click.option("-o", "--output", required=required, type=click.Path(), help=text)
    return click.option("-o", "--output", default=default, show_default=True, type=click.Path(), help=text)


target_option = click.option(
    "--target", "-t", default=DEFAULT_TARGET, show_default=True, help="Target name or path to a profile .toml."
)

# One precision (build, search, fit); sweep takes a comma-separated list and declares its own.
precision_option = click.option(
    "--precision", "-p", type=Choice(list(PRECISIONS)), help="Default: the target's default."
)


def latency_model_option(text: str) -> Decorator:
    """--latency-model FILE: a device's latency model other than the cache's (edgeffnet latency)."""
    return click.option("--latency-model", "latency_model", type=click.Path(dir_okay=False), help=text)


def timing_options(defaults: Settings, iterations: str, seconds: str, warmup: str) -> Decorator:
    """How long each inference series is timed: --iterations/-n, --seconds/-s, --warmup, --threads, with
    `defaults`' values (bench.Settings() for a lone bench, bench.SHORT for many models) and these help texts."""
    return stacked(
        click.option("--iterations", "-n", type=COUNT, default=defaults.iterations, show_default=True, help=iterations),
        click.option("--seconds", "-s", type=SECONDS, default=defaults.seconds, show_default=True, help=seconds),
        click.option("--warmup", type=SECONDS, default=defaults.warmup, show_default=True, help=warmup),
        click.option("--threads", type=THREADS, help="Inference threads (default: the runtime's choice)."),
    )


def cluster_option(text: str) -> Decorator:
    return click.option("--cluster", help=text)


def task_timeout_option(text: str) -> Decorator:
    """How long one farm task (a build, a device's compile-verify-bench) may take: farm/tasks.py."""
    return click.option(
        "--task-timeout", type=FiniteFloat(0, min_open=True), default=TASK_TIMEOUT, show_default=True, help=text
    )


def connect_timeout_option(
    text: str = "Seconds to wait for the Ray head to answer before giving up with one line.",
) -> Decorator:
    """How long to wait for the head's first answer: farm/probe.py."""
    return click.option(
        "--connect-timeout",
        type=FiniteFloat(0, 3600, min_open=True),
        default=CONNECT_TIMEOUT_S,
        show_default=True,
        help=text,
    )


def csv_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def refuse_ignored(used: dict[str, tuple[bool, str]]) -> None:
    """An option given on the command line that this run would not use is refused, not dropped silently:
    `used` maps each such option to (whether it applies, the option it needs)."""
    ctx = click.get_current_context()
    for flag, (applies, needs) in used.items():
        name = flag.lstrip("-").replace("-", "_")
        if not applies and ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise UserError(f"{flag} applies only with {needs}, which this command does not give; drop it")

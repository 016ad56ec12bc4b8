"""The `edgeffnet` command: the group, its commands (one module per group), and `main`.

Options are parsed in the command modules; the work lives in the layers below, which never import the CLI.
User errors (UserError) are caught once, in `main`, and printed as one line on stderr.

    describe.py  info, targets            build.py   build, compile
    images.py    predict, eval, cam       measure.py bench, sweep, report
    search.py    search, fit              farm.py    farm join, farm status
    latency.py   latency fit, latency predict
    options.py   shared options           types.py   parameter types     render.py  consoles, tables
"""

from __future__ import annotations

import signal
import sys

import click

from edgeffnet.cli import build, describe, farm, images, latency, measure, search
from edgeffnet.cli.render import err
from edgeffnet.cli.types import FiniteFloat
from edgeffnet.core.errors import UserError
from edgeffnet.core.user_text import one_line

__all__ = ["FiniteFloat", "cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgeffnet")
def cli() -> None:
    """Compile compound-scaled EfficientNets for a device and measure how fast they really run there."""


for _module in (describe, build, images, measure, search, latency, farm):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


class _Terminated(BaseException):
    """SIGTERM (what `timeout` and service managers send) unwinds like Ctrl-C, so staging directories go."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def main() -> None:
    from edgeffnet.core import logs

    signal.signal(signal.SIGTERM, _on_sigterm)
    log = logs.logger()
    log.addHandler(logs.console_handler(sys.stderr))
    log.propagate = False
    try:
        cli(standalone_mode=False)
    except UserError as e:
        err.print(one_line(f"edgeffnet: error: {e}"))
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        err.print("edgeffnet: interrupted", markup=False)
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("edgeffnet: interrupted; nothing half-written was left behind", markup=False)
        sys.exit(130)
    except click.UsageError as e:
        # One line like every other refusal: click's usage block would bury the reason under the synopsis.
        where = f" (see {e.ctx.command_path} --help)" if e.ctx else ""
        err.print(one_line(f"edgeffnet: error: {e.format_message().rstrip('.')}{where}"))
        sys.exit(e.exit_code)
    except _Terminated:
        err.print("edgeffnet: terminated; nothing half-written was left behind", markup=False)
        sys.exit(143)
    except ImportError as e:
        # A path that reached an optional runtime outside backends.get (which says this itself): one line.
        from edgeffnet.core.extras import missing

        error = missing(e, "this command")
        if error is None:
            raise
        err.print(one_line(f"edgeffnet: error: {error}"))
        sys.exit(error.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)

"""The ``apt-daq`` command line.

Each subcommand lives in ``apt_daq/commands/<name>.py`` with ``register(subparsers)``, which adds
its parser and sets ``func(args) -> int``. Bad input (a :class:`UserError`, a config error, a
driver error about a reply) prints one line and exits 2; ``--verbose`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from rich.console import Console

from apt_daq import __version__
from apt_daq.config import ConfigError
from apt_daq.errors import UserError

COMMANDS = [
    "run", "info", "analyze", "plot", "export", "import_", "emulate", "reproduce",
    "campaign", "bench", "config",
]
err_console = Console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apt-daq", description="Control, simulate and analyse a laser-pulsed atom probe."
    )
    parser.add_argument("--version", action="version", version=f"apt-daq {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"apt_daq.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"apt_daq.commands.{name}":
                continue  # that command's issue has not landed
            raise
        module.register(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [UserError, ConfigError]
    try:
        from drivers.base import DriverError

        errors.append(DriverError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except _user_errors() as e:
        if args.verbose:
            raise
        for line in str(e).splitlines() or [type(e).__name__]:
            err_console.print(f"[red]error:[/red] {line}", markup=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

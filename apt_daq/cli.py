"""The ``apt-daq`` command line.

Each subcommand lives in ``apt_daq/commands/<name>.py`` with ``register(subparsers)``, which adds
its parser and sets ``func(args) -> int``. Bad input (a :class:`UserError`, a config error, a
driver error about a reply) prints one line and exits 2; ``--verbose`` shows the traceback.

Output is meant for grep as much as for eyes: an error is one line whatever the terminal (rich
never wraps it, on a pipe or a log file either), and a reader that goes away (``apt-daq info
--json | head -1``) ends the command quietly with exit code 141, as a shell reports a writer
killed by SIGPIPE (128 + 13).

Start-up: ``build_parser`` imports every command module, so a command module imports at its top
only the standard library and light ``apt_daq`` modules (errors, shipped, this one); what a
command runs with (rich, numpy, h5py, the config models, scipy, numba kernels...) is imported in
the function that runs it. ``apt-daq --help`` then loads none of them (tests/foundation/
test_startup.py checks; ``apt-daq bench --only startup`` times it).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from apt_daq import __version__
from apt_daq.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console

COMMANDS = [
    "run", "info", "analyze", "plot", "export", "import_", "emulate", "reproduce",
    "campaign", "bench", "config", "configs", "warmup", "calibrate", "range_", "view",
]
#: exit code after the reader of stdout went away (a shell's code for SIGPIPE, 128 + 13)
EXIT_BROKEN_PIPE = 141


def console(*, stderr: bool = False) -> Console:
    """A rich console that never wraps a line (a pipe or a log file is not 80 columns wide):
    what a command prints for people and for grep."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich's own exits 1; ours ends as SIGPIPE (141)
            raise BrokenPipeError("the reader of stdout went away")

    # emoji=False: a file named ``:smile:`` is printed as its name, not as a face
    return _Console(stderr=stderr, soft_wrap=True, highlight=False, emoji=False)


def __getattr__(name: str):
    """``err_console`` (the console errors are printed on) is made on first use: rich is not
    imported for ``--help`` or a command that prints no error."""
    if name == "err_console":
        globals()["err_console"] = value = console(stderr=True)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _err_console() -> Console:
    g = globals()
    return g["err_console"] if "err_console" in g else __getattr__("err_console")


#: the largest count or seed an argument takes: what a uint64 (a seed, an HDF5 attribute, a
#: numpy counter) holds; a count beyond it could never be reached or stored
MAX_INT = 2**64 - 1


def _whole(text: str, lo: int) -> int:
    try:
        n = int(text) if len(text) <= 40 else None  # 40 digits: far beyond MAX_INT already
    except ValueError:
        n = None
    if n is None:
        shown = text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"
        raise argparse.ArgumentTypeError(f"must be a whole number, got {shown!r}")
    if n < lo:
        raise argparse.ArgumentTypeError(f"must be >= {lo}, got {n}" if lo == 0
                                         else f"must be > 0, got {n}")
    if n > MAX_INT:
        raise argparse.ArgumentTypeError(f"must be < 2**64, got {n}")
    return n


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer > 0 and < 2**64 (``--ions -5`` is the argument's
    error)."""
    return _whole(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse ``type``: an integer >= 0 and < 2**64 (``--seed``)."""
    return _whole(text, 0)


def finite_float(text: str) -> float:
    """An argparse ``type``: a finite number (``--t0-ns nan`` is the argument's error)."""
    import math

    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return x


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0 (``--flight-path-mm 0``)."""
    x = finite_float(text)
    if x <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return x


class Parser(argparse.ArgumentParser):
    """argparse's parser with its errors as one line, as every other error of the command
    (argparse prints its whole usage block first): ``error: apt-daq run: argument --ions:
    must be > 0, got -5 (apt-daq run --help)``."""

    def error(self, message: str) -> NoReturn:
        from rich.markup import escape

        _err_console().print(f"[red]error:[/red] {escape(self.prog)}: {escape(message)} "
                             f"({escape(self.prog)} --help)", markup=True)
        self.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    """The exceptions that are a user's bad input. A config or driver error can only have been
    raised once its module is imported: those not imported yet are not imported for this."""
    errors: list[type[BaseException]] = [UserError]
    for module, name in (("apt_daq.config", "ConfigError"), ("apt_daq.drivers.base", "DriverError")):
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None:
            errors.append(cls)
    return tuple(errors)


class _StderrHandler(logging.StreamHandler):
    """Log lines to whatever ``sys.stderr`` is now: above a progress bar (which redirects it)
    instead of glued to it. The records of a failed safe off (``SAFE_OFF_RECORD``) are held
    back: a command that ends with an error line says it there (and the run file's
    ``safe_off_error`` keeps it), one that does not prints them at its end (:meth:`let_go`)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "safe_off", False):
            self.held.append(record)
        else:
            super().emit(record)

    def let_go(self, print_them: bool) -> None:
        held, self.held = self.held, []
        for record in held if print_them else ():
            super().emit(record)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _default_numba_cache() -> None:
    """One numba cache in a source checkout (so ``make install``'s warm-up serves ``apt-daq
    run`` typed by hand): :func:`apt_daq.shipped.default_numba_cache`."""
    from apt_daq.shipped import default_numba_cache

    default_numba_cache()


def _print_error(lines: list[str]) -> int:
    from rich.markup import escape

    global _ERROR_PRINTED
    _ERROR_PRINTED = True
    err = _err_console()
    for line in lines:
        err.print(f"[red]error:[/red] {escape(line)}", markup=True)
    return 2


def _reader_gone() -> int:
    """stdout's reader went away: point stdout at /dev/null so the interpreter's last flush
    cannot fail again, and exit as a shell reports SIGPIPE."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


class Terminated(BaseException):
    """A SIGTERM, SIGHUP or SIGQUIT outside a run (a run handles them itself): raised where
    the command is, so its temporary files go (:func:`apt_daq.io._common.atomic_output`) and
    the exit code is the shell's 128 + n (not a killed process's -n, or a core dump)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminating_signals() -> Callable[[], None]:
    """Raise :class:`Terminated` on SIGTERM, SIGHUP and SIGQUIT where their action is the
    default (an ignored one stays ignored: under nohup, SIGHUP); returns the restorer."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def raise_terminated(signum: int, frame: object) -> None:
        raise Terminated(signum)

    old = {}
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        if signal.getsignal(s) is signal.SIG_DFL:
            old[s] = signal.signal(s, raise_terminated)

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore


def main(argv: list[str] | None = None) -> int:
    restore = _terminating_signals()
    try:
        return _main(argv)
    except Terminated as e:
        import signal

        try:
            _err_console().print(f"terminated by {signal.Signals(e.signum).name}")
        except (OSError, ValueError):  # SIGHUP: the terminal may be gone
            pass
        return 128 + e.signum
    finally:
        restore()


def _main(argv: list[str] | None) -> int:
    _default_numba_cache()
    parser = build_parser()
    args = parser.parse_args(argv)
    global _ERROR_PRINTED
    _ERROR_PRINTED = False
    # a second command in one process (a test, a notebook) finds the first one's handler
    # installed (basicConfig then does nothing): that is the one to let go of
    handler = next((h for h in logging.getLogger().handlers if isinstance(h, _StderrHandler)),
                   None) or _StderrHandler()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", handlers=[handler])
    try:
        return _run_command(parser, args)
    finally:  # an error line said it; any other end prints what was held
        handler.let_go(print_them=args.verbose or not _ERROR_PRINTED)


_ERROR_PRINTED = False  # set by _print_error: the command ended with its error line


def _run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader gone after the last write shows here, not at exit
        return code
    except BrokenPipeError:
        return _reader_gone()
    except _user_errors() as e:
        if args.verbose:
            raise
        return _print_error(str(e).splitlines() or [type(e).__name__])
    except OSError as e:  # the file system or the network said no: the user's to fix
        if args.verbose:
            raise
        where = f"{e.filename}: " if e.filename is not None else ""
        return _print_error([f"{where}{e.strerror or e}"])
    except KeyboardInterrupt:
        _err_console().print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

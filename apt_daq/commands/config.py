"""``apt-daq config check FILE`` (a preflight) and ``apt-daq config schema``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check a YAML config before a run, or print the JSON Schema")
    cs = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = cs.add_parser(
        "check", help="a preflight of a run file (or validate an instrument, specimen or "
        "campaign file): everything that would fail or be dangerous at run time, each at "
        "file:line")
    c.add_argument("file")
    c.set_defaults(func=_check)
    s = cs.add_parser("schema", help="print the JSON Schema of a run file")
    s.set_defaults(func=_schema)


def _check(args: argparse.Namespace) -> int:
    """Problems: one ``error:`` line each, exit 2 (by the CLI). Else ``warning:`` lines for
    what runs but likely not as meant, then one ``ok`` line; exit 0."""
    from apt_daq.cli import console
    from apt_daq.config import KIND_WORDS
    from apt_daq.config_check import check_file
    from apt_daq.shipped import resolve

    args.file = str(resolve(args.file, "runs"))
    kind, _, warnings = check_file(args.file)
    if warnings:  # rich is imported only to print them
        err = console(stderr=True)
        for w in warnings:
            err.print(f"warning: {w}", markup=False)
    note = f", {len(warnings)} warning{'s' * (len(warnings) != 1)}" if warnings else ""
    print(f"{args.file}: ok ({KIND_WORDS[kind]}{note})")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from apt_daq.config import json_schema

    print(json_schema())
    return 0

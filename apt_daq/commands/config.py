"""``apt-daq config check FILE`` and ``apt-daq config schema``."""

from __future__ import annotations

import argparse

from apt_daq.config import check_file, json_schema


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="validate a YAML config or print the JSON Schema")
    cs = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = cs.add_parser("check", help="validate a run, instrument or specimen YAML")
    c.add_argument("file")
    c.set_defaults(func=_check)
    s = cs.add_parser("schema", help="print the JSON Schema of a run file")
    s.set_defaults(func=_schema)


def _check(args: argparse.Namespace) -> int:
    model = check_file(args.file)
    print(f"{args.file}: ok ({type(model).__name__})")
    return 0


def _schema(args: argparse.Namespace) -> int:
    print(json_schema())
    return 0

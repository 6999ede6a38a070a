"""``apt-daq configs list`` and ``apt-daq configs copy DIR``: the example configs that ship
inside the package (runs, instruments, specimens, range files, campaigns, pyvisa-sim)."""

from __future__ import annotations

import argparse

from apt_daq.shipped import configs_dir, copy_to, listing


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("configs", help="list the shipped example configs, or copy them to edit")
    cs = p.add_subparsers(dest="configs_command", metavar="ACTION", required=True)
    ls = cs.add_parser("list", help="the shipped configs by kind (a run's name is enough for "
                       "`apt-daq run NAME`)")
    ls.set_defaults(func=_list)
    cp = cs.add_parser("copy", help="copy every shipped config into DIR (existing files are "
                       "kept), layout preserved so their relative includes resolve")
    cp.add_argument("dir")
    cp.set_defaults(func=_copy)


def _list(args: argparse.Namespace) -> int:
    print(f"# {configs_dir()}")
    for kind, names in listing().items():
        print(f"{kind}: {', '.join(names)}")
    return 0


def _copy(args: argparse.Namespace) -> int:
    dest = copy_to(args.dir)
    print(f"copied the shipped configs to {dest} (e.g. {dest / 'runs' / 'nmc811-cr-5pj.yaml'})")
    return 0

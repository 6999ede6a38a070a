"""``apt-daq bench [--json] [--only AREA] [--quick]``."""

from __future__ import annotations

import argparse
import importlib.util
import json
import pkgutil


def areas() -> list[str]:
    """The bench areas (modules of :mod:`apt_daq.bench`), found without importing it."""
    spec = importlib.util.find_spec("apt_daq.bench")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return sorted(m.name for m in pkgutil.iter_modules(locations))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="throughput figures, each beside a same-run baseline")
    p.add_argument("--json", action="store_true", help="print a JSON list of results")
    p.add_argument("--only", action="append", choices=areas(), help="only this area")
    p.add_argument("--quick", action="store_true", help="smaller sizes (for tests)")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from rich.table import Table

    from apt_daq import bench
    from apt_daq.cli import console as cli_console

    results = bench.run_all(args.only, quick=args.quick)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 0
    table = Table(title="apt-daq bench")
    for col in ("name", "value", "unit", "baseline", "ratio", "note"):
        table.add_column(col)
    for r in results:
        table.add_row(r.name, f"{r.value:.4g}", r.unit, f"{r.baseline:.4g}", f"{r.ratio:.2f}x", r.note)
    cli_console().print(table)
    return 0

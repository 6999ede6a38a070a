"""``apt-daq reproduce [--figure N|all] [-o DIR] [--json] [--ions N] [--seed S]``: the seed
paper's figures from simulated runs, with a paper-vs-simulated table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from apt_daq.cli import non_negative_int, positive_int
from apt_daq.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="the seed paper's figures from simulated runs")
    p.add_argument("--figure", default="all",
                   help="1, 2, 3, 4, 5, 6, 7, S1, all, or a comma list (default: all)")
    p.add_argument("-o", "--out", default="reproduction", help="output folder (PNG, table, runs)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--ions", type=positive_int, default=200_000,
                   help="detected ions per run or per schedule step (default 200000)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed offset of every run (default 0)")
    p.add_argument("--workers", type=positive_int, default=2, help="simulation processes (default 2)")
    p.set_defaults(func=_reproduce)


def _reproduce(args: argparse.Namespace) -> int:
    from apt_daq.reproduce import FIGURES, Context, reproduce
    from apt_daq.reproduce.table import text

    want = [f.strip().upper() if f.strip().lower() == "s1" else f.strip()
            for f in args.figure.split(",")]
    figures = list(FIGURES) if want == ["all"] else want
    bad = [f for f in figures if f not in FIGURES]
    if bad:
        raise UserError(f"--figure {args.figure}: unknown {', '.join(bad)}; expected "
                        f"{', '.join(FIGURES)} or all")
    if args.ions < 1000:
        raise UserError(f"--ions {args.ions}: at least 1000 ions per run are needed")
    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: must be >= 1")
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    ctx = Context(Path(args.out), ions=args.ions, seed=args.seed, workers=args.workers, log=log)
    rows, pngs = reproduce(figures, ctx)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=1))
    else:
        print(text(rows))
        for p in pngs:
            print(p)
        print(ctx.out / "table.md")
        n_fail = sum(not r.passed for r in rows)
        print(f"{len(rows) - n_fail}/{len(rows)} rows pass")
    return 0

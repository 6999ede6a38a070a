"""``apt-daq campaign SWEEP.yaml [-o DIR] [--workers N] [--scheduler tcp://HOST:PORT]
[--ions N] [--dry-run]``."""

from __future__ import annotations

import argparse
import functools

from apt_daq.cli import console as cli_console
from apt_daq.cli import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("campaign", help="parameter sweeps of simulated runs on dask.distributed")
    p.add_argument("sweep", help="sweep YAML (configs/campaigns/...)")
    p.add_argument("-o", "--out", help="out folder (default: the sweep's out, or "
                   "runs/campaigns/<name>)")
    p.add_argument("--workers", type=positive_int, help="local worker processes (default: CPU count)")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="an existing dask scheduler, e.g. tcp://10.0.0.5:8786 (the out "
                        "folder must be on a file system the workers share)")
    p.add_argument("--ions", type=positive_int, help="detected ions per point (overrides the sweep's; default out folder "
                   "then gets an -<N>ions suffix)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate every point and run a synthetic CPU load instead of the "
                        "simulation (checks that the workers are reached); its table goes "
                        "to OUT/dry-run, beside the real results")
    p.add_argument("--overwrite", action="store_true",
                   help="replace finished runs in the out folder that another configuration "
                        "made (another sweep, an edited base run)")
    p.add_argument("--no-plots", action="store_true", help="do not draw the calibration plot")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=_campaign)


def _campaign(args: argparse.Namespace) -> int:
    from apt_daq.campaign import (
        default_out_dir,
        load_sweep,
        run_campaign,
        simulate_and_analyze,
        synthetic_point,
    )
    from apt_daq.errors import UserError

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers: must be >= 1, got {args.workers}")
    from apt_daq.shipped import resolve

    sweep = load_sweep(resolve(args.sweep, "campaigns"))
    if args.ions is not None:
        if args.ions < 1:
            raise UserError(f"--ions: must be >= 1, got {args.ions}")
        if not args.out:  # never over the full campaign's runs in the default folder
            out = default_out_dir(sweep)
            args.out = str(out.with_name(f"{out.name}-{args.ions}ions"))
        sweep = sweep.model_copy(update={"ions": args.ions})
    fn = functools.partial(synthetic_point, work=10) if args.dry_run else simulate_and_analyze
    out = args.out or default_out_dir(sweep)
    if args.dry_run:  # its synthetic rows and table never over a real campaign's
        from pathlib import Path

        out = Path(out) / "dry-run"
    console = cli_console()
    try:
        res = run_campaign(sweep, out, workers=args.workers, scheduler=args.scheduler,
                           point_fn=fn, progress=not args.quiet, plots=not args.no_plots,
                           overwrite=args.overwrite)
    except KeyboardInterrupt as e:
        console.print(f"[yellow]interrupted[/yellow]: {e or 'Ctrl-C'}; outstanding points "
                      "cancelled, a re-run resumes")
        return 130
    n = len(res.rows)
    console.print(f"{sweep.name}: {n} points: {res.ran} ran, {res.skipped} already finished, "
                  f"{res.finished} finished, {res.errors} with errors")
    for r in res.rows:
        if r.get("error"):
            console.print(f"  [red]point {r['point']} {r['key']}[/red]: {r['error']}",
                          highlight=False)
    from apt_daq.campaign.table import burst_warning, mixed_mrp_peaks
    from apt_daq.campaign_plots import ramp_up_warning

    for warning in (ramp_up_warning(res.rows), burst_warning(res.rows),
                    mixed_mrp_peaks(res.rows)):
        if warning:
            console.print(f"[yellow]warning[/yellow]: {warning}", highlight=False)
    console.print(f"table: {res.csv_path}  {res.parquet_path}")
    for p in res.plots:
        console.print(f"plot: {p}")
    return 1 if res.errors else 0

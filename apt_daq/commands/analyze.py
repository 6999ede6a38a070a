"""``apt-daq analyze RUN.h5 [--ranges FILE] [--roi cylinder:25] [--json] [--background]
[--settled] [--recalibrate] [--no-store]``.

Stores the calibration it used (and ranges it proposed) in the run, so ``export`` and
``plot`` reload exactly the masses it reported (``--no-store`` leaves the file untouched)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="composition with errors, ion counts, ratios, MRP, FDA")
    p.add_argument("run", help="run file (.h5)")
    p.add_argument("--ranges", help="RRNG/RNG range file (default: the run file's analysis.ranges)")
    p.add_argument("--roi", help="'cylinder:D' (nm), 'box:WX,WY,WZ' or 'none' (default: config)")
    p.add_argument("--background", action="store_true", help="subtract the local background")
    p.add_argument("--settled", action="store_true",
                   help="leave out the ramp-up before the detection rate first reached half "
                        "its target (mostly background while V climbs)")
    p.add_argument("--step", metavar="N|ENERGY",
                   help="only the hits of one schedule step: its index (0, 1, ...) or its laser "
                        "energy (10pJ)")
    p.add_argument("--recalibrate", action="store_true",
                   help="fit the voltage and bowl corrections again from TOF and voltage "
                        "(ignores a stored calibration and an imported file's own m/n)")
    p.add_argument("--no-store", action="store_true",
                   help="do not store the calibration (and proposed ranges) in the run file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_analyze)


def _f(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _analyze(args: argparse.Namespace) -> int:
    from apt_daq.analysis.report import _jsonable, analyze

    sel, label = _selection(args)
    res = analyze(args.run, args.ranges, args.roi, subtract_background=args.background,
                  select=sel, recalibrate=args.recalibrate, store=not args.no_store)
    s = _jsonable(res.summary)
    if label is not None:
        s["step"] = label
    _warn(_roi_warning(s, res.slices))
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    _print_report(s, stored=not args.no_store)
    return 0


def _warn(line: str | None) -> None:
    from apt_daq.cli import console as cli_console

    if line:
        cli_console(stderr=True).print(f"warning: {line}", markup=False)


def _roi_warning(s: dict, slices: dict) -> str | None:
    """The line saying the ROI holds no ion (or no ranged ion), so every ROI result (composition,
    counts, ratios, MRP, FDA) is n/a, with where the ions are to help place it; None if it
    holds ranged ions or there is no ROI."""
    import numpy as np

    if s["roi"] == "all ions" or s["ranged_ions"] > 0:
        return None
    of = s.get("ions_selected", s["ions_total"])
    held = ("0 ions" if s["ions"] == 0 else f"{s['ions']} ions but no ranged one") + f" of {of}"
    if s["positions"] == "none":
        where = " (the run has no positions to place its ions in an ROI: give --roi none)"
    else:
        xyz = [np.asarray(slices.get(k, []), dtype=float) for k in "xyz"]
        span = ", ".join(f"{k} {round(a[np.isfinite(a)].min())} to {round(a[np.isfinite(a)].max())}"
                         for k, a in zip("xyz", xyz, strict=True) if np.isfinite(a).any())
        where = f" (the ions lie at {span} nm)" if span else ""
    return (f"{s['file']}: the ROI {s['roi']} holds {held}{where}; composition, ion counts, "
            "ratios, MRP and FDA are n/a")


def _selection(args: argparse.Namespace):
    """The hit selection of ``--settled`` and ``--step`` (None: every hit) and the step's label;
    without either, a warning when most pulses were fired during the ramp-up."""
    from apt_daq.analysis.report import ramp_up_share, settled_select, step_select
    from apt_daq.cli import console as cli_console

    sel = settled_select(args.run) if args.settled else None
    label = None
    if args.step is not None:
        step_sel, label = step_select(args.run, args.step)
        sel = step_sel if sel is None else (lambda h, a=sel, b=step_sel: a(h) & b(h))
    elif not args.settled:
        share = ramp_up_share(args.run)
        if share is not None and share > 0.5:
            cli_console(stderr=True).print(
                f"warning: {args.run}: {100 * share:.0f} % of its pulses were fired before the "
                "detection rate first reached half its target (ramp-up); --settled leaves them "
                "out", markup=False)
    return sel, label


def _print_report(s: dict, stored: bool) -> None:
    """The analysis summary ``s`` (JSON-able) as text and tables."""
    from apt_daq.cli import console as cli_console

    con = cli_console()
    con.print(f"[bold]{s['file']}[/bold]: {s['ions']} ions in {s['roi']} "
              f"({s['ranged_ions']} ranged) of {s['ions_total']}; ranges: {s['ranges']}; "
              f"m/n: {s['mass_source']}")  # fmt: skip
    c = s["calibration"]
    if c["mode"] == "tof":
        con.print(f"calibration: t0 {c['t0_ns']} ns, flight path {c['flight_path_mm']} mm, "
                  f"reference {c['reference'] or 'none'}, residual "
                  f"{_f(c['residual_ppm'], '.0f')} ppm over voltage bins "
                  f"({c['source'] or 'stored'}{', stored in the run' if stored else ''})")
    for note in c["notes"]:
        con.print(f"calibration: {note}")
    for table in _tables(s):
        con.print(table)
    if "truth" in s:
        tr = s["truth"]
        con.print(f"truth: ranged as true species {_f(tr['ranged_as_true'], '.4f')}; "
                  f"lost ions {tr['lost_ions']}")  # fmt: skip
        if "position_error" in tr:
            pe = tr["position_error"]
            con.print(f"truth: reconstruction rms error xy {pe['rms_xy_nm']:.3f} nm, "
                      f"z {pe['rms_z_nm']:.3f} nm")  # fmt: skip


def _table(title: str, columns: tuple[str, ...], rows, left: int = 0):
    """A rich table: the first ``left`` columns left-aligned, the rest right-aligned."""
    from rich.table import Table

    t = Table(title=title)
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i < left else "right")
    for row in rows:
        t.add_row(*row)
    return t


def _tables(s: dict) -> list:
    """Composition, ion counts, ratios, mass resolving power and FDA, as rich tables."""
    comp = sorted(s["composition"].items(), key=lambda kv: -(kv[1]["fraction"] or 0))
    counts = sorted(s["ion_counts"].items(), key=lambda kv: -kv[1])
    return [
        _table("composition (at. fraction, counting error)", ("element", "fraction", "error"),
               [(el, _f(v["fraction"], ".4f"), _f(v["error"], ".4f")) for el, v in comp],
               left=1),
        _table("ion counts", ("ion", "count"), [(k, str(v)) for k, v in counts if v], left=1),
        _table("ratios", ("ratio", "value", "error"),
               [(k, _f(v, ".4g"), _f(s["ratio_errors"].get(k, 0), ".2g"))
                for k, v in s["ratios"].items()], left=1),
        _table("mass resolving power",
               ("peak", "m/n Da", "FWHM Da", "FW10%M Da", "m/dm 50%", "m/dm 10%"),
               [(m["peak"], _f(m["mass"], ".3f"), _f(m["fwhm"], ".4f"), _f(m["fw10m"], ".4f"),
                 _f(m["mrp50"], ".0f"), _f(m["mrp10"], ".0f")) for m in s["mrp"]]),
        _table("frequency distribution analysis (Moody 2008)", ("species", "blocks", "chi2", "mu"),
               [(k, str(v["blocks"]), _f(v["chi2"], ".1f"), _f(v["mu"], ".3f"))
                for k, v in s["fda"].items()]),
    ]

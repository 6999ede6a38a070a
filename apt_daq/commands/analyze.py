"""``apt-daq analyze RUN.h5 [--ranges FILE] [--roi cylinder:25] [--json] [--background]
[--settled] [--recalibrate] [--no-store]``.

Stores the calibration it used (and ranges it proposed) in the run, so ``export`` and
``plot`` reload exactly the masses it reported (``--no-store`` leaves the file untouched)."""

from __future__ import annotations

import argparse
import json
import math


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="composition with errors, ion counts, ratios, MRP, FDA")
    p.add_argument("run", help="run file (.h5)")
    p.add_argument("--ranges", help="RRNG/RNG range file (default: the run file's analysis.ranges)")
    p.add_argument("--roi", help="'cylinder:D[,X,Y]' or 'box:WX,WY,WZ[,X,Y,Z]' (nm; a box "
                   "without its centre sits at the middle of the run's depth), or 'none' "
                   "(default: config)")
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
    """``v`` formatted, or "n/a" for None and a value that is not finite (a corrupt file's)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, spec)


def _analyze(args: argparse.Namespace) -> int:
    from apt_daq.analysis.report import _jsonable, analyze

    sel, label = _selection(args)
    res = analyze(args.run, args.ranges, args.roi, subtract_background=args.background,
                  select=sel, recalibrate=args.recalibrate, store=not args.no_store)
    s = _jsonable(res.summary)
    if label is not None:
        s["step"] = label
    _warn(_roi_warning(s, res.slices))
    _warn(_background_warning(s))
    _warn(_poor_fit_warning(s))
    fda_species, fda_set = _fda_species(args.run)
    if fda_set:  # the default (Li+, O2+) is no request for them on, say, a Si run
        _warn(_fda_unranged_warning(s, fda_species, res.ranges.ions))
    if s["background_subtracted"]:  # the nets taken as the ion counts
        for note in s.get("background_notes", []):
            _warn(f"{s['file']}: {note}")
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    _print_report(s, stored=not args.no_store, fda_species=fda_species)
    return 0


#: the reference peak's rms drift over voltage bins (ppm) above which m/n is called poor: a
#: fit on a straight-flight run leaves tens of ppm (docs/analysis.md)
POOR_RESIDUAL_PPM = 1000.0


def _poor_fit_warning(s: dict) -> str | None:
    """The warning for m/n whose reference peak still wanders > 1000 ppm over voltage after
    the fit (a reflectron instrument's TOF refitted as a straight flight: calcite's EPOS
    3497 ppm, its ranged ions down 21 %), or None."""
    c = s.get("calibration") or {}
    r = c.get("residual_ppm")
    if c.get("mode") != "tof" or r is None or r <= POOR_RESIDUAL_PPM:
        return None
    return (f"{s['file']}: the fitted m/n is poor: the reference peak {c.get('reference', '')} "
            f"moves {r:.0f} ppm rms over voltage bins (a fit leaves tens): wrong ranges, or an "
            "instrument that is no straight flight (a reflectron); an imported file's own m/n "
            "is kept without --recalibrate")


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


#: below this share of background-subtracted ions among the ranged ones, ``analyze`` warns:
#: then most of a range's ions are background, whose spread over the ranges follows their
#: widths, not the specimen, and the counting errors (of the gross counts) understate the error
NET_SHARE_WARNING = 0.5


def _background_warning(s: dict) -> str | None:
    """The line saying the ranged ions are mostly background: the per-peak table's net counts
    (each range less the flat background of its flanks, summed with their signs: a noisy
    negative net is no bias) below :data:`NET_SHARE_WARNING` of its gross counts (the spectrum
    of every ion analysed, whatever the ROI); None otherwise."""
    gross = sum(r["counts"] for r in s["peaks"])
    net = max(sum(r["net"] for r in s["peaks"]), 0.0)
    if gross <= 0 or net >= NET_SHARE_WARNING * gross:
        return None
    done = ("--background took it off the composition" if s["background_subtracted"]
            else "composition and ratios count it as ions (--background takes it off)")
    return (f"{s['file']}: background-subtracted counts are {100 * net / gross:.0f} % of the "
            f"{gross} ranged ions of the spectrum (under {100 * NET_SHARE_WARNING:.0f} %): the "
            f"ranges hold mostly background; {done}")


def _fda_unranged_warning(s: dict, fda_species: list[str], ranged: list[str]) -> str | None:
    """The line naming the run's ``analysis.fda_ions`` that no range names (their FDA is n/a,
    which the report would otherwise show only as a missing row); None if every one is
    ranged."""
    missing = [sp for sp in fda_species if sp not in ranged]
    if not missing:
        return None
    return (f"{s['file']}: analysis.fda_ions {', '.join(missing)}: no range names "
            f"{'it' if len(missing) == 1 else 'them'}, so FDA is n/a (ranged ions: "
            f"{', '.join(ranged) or 'none'})")


def _fda_species(path: str) -> tuple[list[str], bool]:
    """The run's ``analysis.fda_ions``, and whether they are other than the default (a run
    stores its whole config, so a default cannot be told from the same list typed out)."""
    from apt_daq.io.store import RunReader
    from apt_daq.pipeline.ions import run_analysis_config

    with RunReader(path) as r:
        acfg = run_analysis_config(r)
    species = list(acfg.fda_ions)
    return species, species != list(type(acfg)().fda_ions)


def _selection(args: argparse.Namespace):
    """The hit selection of ``--settled`` and ``--step`` (None: every hit) and the step's label;
    without either, a warning when most ions came in the ramp-up (counted in ions, the data
    analysed: the ramp-up's pulses are many and its ions few)."""
    from apt_daq.analysis.report import ramp_up_share, settled_select, step_select
    from apt_daq.cli import console as cli_console

    sel = settled_select(args.run) if args.settled else None
    label = None
    if args.step is not None:
        step_sel, label = step_select(args.run, args.step)
        sel = step_sel if sel is None else (lambda h, a=sel, b=step_sel: a(h) & b(h))
    elif not args.settled:
        share = ramp_up_share(args.run, per="ions")
        if share is not None and share > 0.5:
            cli_console(stderr=True).print(
                f"warning: {args.run}: {100 * share:.0f} % of its ions came before the "
                "detection rate first reached half its target (ramp-up); --settled leaves them "
                "out", markup=False)
    return sel, label


def _print_report(s: dict, stored: bool, fda_species: list[str]) -> None:
    """The analysis summary ``s`` (JSON-able) as text and tables; ``fda_species``: the ions
    FDA was asked for (analysis.fda_ions), named when none was ranged."""
    from apt_daq.cli import console as cli_console

    con = cli_console()
    step = f" ({s['step']}: {s['ions_selected']} hits)" if "step" in s else ""
    con.print(f"[bold]{s['file']}[/bold]: {s['ions']} ions in {s['roi']} "
              f"({s['ranged_ions']} ranged) of {s['ions_total']}{step}; ranges: {s['ranges']}; "
              f"m/n: {s['mass_source']}")  # fmt: skip
    c = s["calibration"]
    if c["mode"] == "tof":
        res = (f"residual n/a ({c.get('fit_ions', 0)} ions in the reference window, too few)"
               if c["residual_ppm"] is None else
               f"residual {c['residual_ppm']:.0f} ppm over voltage bins")
        con.print(f"calibration: t0 {c['t0_ns']} ns, flight path {c['flight_path_mm']} mm, "
                  f"reference {c['reference'] or 'none'}, {res} "
                  f"({c['source'] or 'stored'}{', stored in the run' if stored else ''})")
    for note in c["notes"]:
        con.print(f"calibration: {note}")
    for table in _tables(s, fda_species):
        con.print(table)
    if "truth" in s:
        tr = s["truth"]
        why = f" (no hit of an evaporated ion: {tr['background_hits']} background hits)"
        con.print(f"truth: ranged as true species {_f(tr['ranged_as_true'], '.4f')}"
                  f"{why if tr['ranged_as_true'] is None else ''}; lost ions {tr['lost_ions']}")
        if "position_error" in tr:
            pe = tr["position_error"]
            xy, z = pe["rms_xy_nm"], pe["rms_z_nm"]
            odd = any(v is not None and not abs(v) < 1e6 for v in (xy, z))  # a mm: corrupt
            con.print(f"truth: reconstruction rms error xy {_f(xy, '.3g' if odd else '.3f')} nm, "
                      f"z {_f(z, '.3g' if odd else '.3f')} nm"
                      f"{' (the /truth positions are not plausible)' if odd else ''}")


def _table(title: str, columns: tuple[str, ...], rows, left: int = 0, why: str = "",
           caption: str | None = None):
    """A rich table: the first ``left`` columns left-aligned, the rest right-aligned; without
    rows the line "title: n/a (why)", never an empty table."""
    from rich.table import Table

    rows = list(rows)
    if not rows:
        return f"{title}: n/a ({why})"
    t = Table(title=title, caption=caption)
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i < left else "right")
    for row in rows:
        t.add_row(*row)
    return t


def _why_empty(s: dict, fda_species: list[str]) -> dict[str, str]:
    """Why each table of ``s`` can be empty: the reason its "n/a" line gives."""
    from apt_daq.analysis.mrp import MRP_MIN_IONS

    where = "the ions analysed" if s["roi"] == "all ions" else f"the ROI {s['roi']}"
    none = f"no ranged ion in {where}"
    top = max(s["ion_counts"].values(), default=0)
    fda = f"the FDA species {', '.join(fda_species) or '(none)'} (analysis.fda_ions)"
    return {
        "composition": none, "counts": none,
        "ratios": none if not s["ranged_ions"] else
        "no ratio has all its species among the ranged ions (a charge-state ratio needs both "
        "charge states)",
        "mrp": none if not s["ranged_ions"] else
        f"no main peak of the 5 most counted ions has the {MRP_MIN_IONS} ions near its top a "
        f"width needs; the most counted ion has {top} in {where}",
        "fda": none if not s["ranged_ions"] else f"no ion of {fda} is ranged in {where}",
    }  # fmt: skip


def _fda_caption(fda: dict) -> str | None:
    if all(v["chi2"] is not None for v in fda.values()):
        return None
    n = min(v.get("block_ions", 100) for v in fda.values())
    return (f"chi2, mu n/a: too few blocks of {n} ranged ions to pool two bins of >= 5 expected "
            "blocks")


def _ratio_rows(s: dict) -> tuple[list, str | None]:
    """The ratios' rows, and n/a rows for those of the run's species that could not be taken
    (a species with no ranged ion), with a caption naming the missing species; no rows at all
    without a ranged ion."""
    from apt_daq.analysis.ratios import ATOM_RATIOS, ION_RATIOS

    rows = [(k, _f(v, ".4g"), _f(s["ratio_errors"].get(k), ".2g"))
            for k, v in s["ratios"].items()]
    if not s["ranged_ions"]:
        return [], None
    counts, comp = s["ion_counts"], s["composition"]
    wanted: dict[str, tuple[str, ...]] = {f"{a}/{b}": (a, b) for a, b in ION_RATIOS
                                          if a in counts and b in counts}
    wanted.update({r: tuple(r.replace("/(", "+").rstrip(")").split("+")) for r in ATOM_RATIOS})
    missing = {}
    for r, species in wanted.items():
        absent = [sp for sp in dict.fromkeys(species) if not counts.get(sp)
                  and not (comp.get(sp) or {}).get("fraction")]
        if r not in s["ratios"] and absent and all(sp in counts or sp in comp for sp in species):
            missing[r] = absent
    rows += [(r, "n/a", "n/a") for r in missing]
    why = "; ".join(f"{r}: no {', '.join(sp)}" for r, sp in missing.items())
    return rows, (f"n/a: a species it needs has no ranged ion ({why})" if missing else None)


def _tables(s: dict, fda_species: list[str]) -> list:
    """Composition, ion counts, ratios, mass resolving power and FDA, as rich tables (or an
    "n/a" line with its reason where nothing could be computed)."""
    comp = sorted(s["composition"].items(), key=lambda kv: -(kv[1]["fraction"] or 0))
    counts = sorted(s["ion_counts"].items(), key=lambda kv: -kv[1])
    why = _why_empty(s, fda_species)
    ratio_rows, ratio_caption = _ratio_rows(s)
    return [
        _table("composition (at. fraction, counting error)", ("element", "fraction", "error"),
               [(el, _f(v["fraction"], ".4f"), _f(v["error"], ".4f")) for el, v in comp
                if s["ranged_ions"]], left=1, why=why["composition"]),
        _table("ion counts", ("ion", "count"), [(k, str(v)) for k, v in counts if v], left=1,
               why=why["counts"]),
        _table("ratios", ("ratio", "value", "error"), ratio_rows, left=1, why=why["ratios"],
               caption=ratio_caption),
        _table("mass resolving power",
               ("peak", "m/n Da", "FWHM Da", "FW10%M Da", "m/dm 50%", "m/dm 10%"),
               [(m["peak"], _f(m["mass"], ".3f"), _f(m["fwhm"], ".4f"), _f(m["fw10m"], ".4f"),
                 _f(m["mrp50"], ".0f"), _f(m["mrp10"], ".0f")) for m in s["mrp"]],
               why=why["mrp"]),
        _table("frequency distribution analysis (Moody 2008)", ("species", "blocks", "chi2", "mu"),
               [(k, str(v["blocks"]), _f(v["chi2"], ".1f"), _f(v["mu"], ".3f"))
                for k, v in s["fda"].items()], why=why["fda"], caption=_fda_caption(s["fda"])),
    ]

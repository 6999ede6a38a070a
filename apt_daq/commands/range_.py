"""``apt-daq range INPUT [-o OUT.rrng] [--elements Li,Ni,...] [--charges 1-4] [--json]``:
range a spectrum with no input (:mod:`apt_daq.pipeline.autorange`).

INPUT is a run file (its calibrated ion stream: the stored calibration, an imported file's own
m/n, or the fitted corrections) or any file ``apt-daq import`` reads (POS, EPOS, APT: its m/n
as is). The RRNG carries, in its header comment, per range: ion, charge, isotope(s), window,
counts, background and confidence (the ion name of each range also in the usual ``# RangeN
name:`` line), and the element composition from the fit's decomposed ion counts; ``--json``
prints the same and the decomposed counts of overlapping ions."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from apt_daq.cli import console as cli_console
from apt_daq.errors import UserError

LOW_RESOLVING_POWER = 250.0  # m/dm (FWHM): a LEAP's corrected spectra reach 700-1500


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("range", help="range a mass spectrum with no input (unsupervised)")
    p.add_argument("input", help="run file (.h5) or a POS, EPOS or APT file")
    p.add_argument("-o", "--output", help="RRNG file to write")
    p.add_argument("--elements", help="comma-separated elements to restrict the ions to "
                                      "(default: all elements H..U)")
    p.add_argument("--charges", default="1-4", help="charge states, e.g. 1-4 or 1,2 (default 1-4)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_range)


def parse_charges(text: str) -> tuple[int, ...]:
    """"1-4" -> (1, 2, 3, 4); "1,2" -> (1, 2). Each charge 1..8; a span low-high."""
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            ends = [int(x) for x in part.split("-", 1)] if "-" in part[1:] else [int(part)]
        except ValueError:
            raise UserError(f"--charges {text!r}: expected e.g. 1-4 or 1,2") from None
        if any(not 1 <= c <= 8 for c in ends):  # before a span is expanded: 1-1e12 is one
            raise UserError(f"--charges {text!r}: charges must be between 1 and 8")
        if ends[0] > ends[-1]:
            raise UserError(f"--charges {text!r}: the span {part} is reversed "
                            f"(write {ends[-1]}-{ends[0]})")
        out.update(range(ends[0], ends[-1] + 1))
    if not out:
        raise UserError(f"--charges {text!r}: expected e.g. 1-4 or 1,2")
    return tuple(sorted(out))


def parse_elements(text: str | None) -> list[str] | None:
    """"Li, Ni" -> ["Li", "Ni"]; None when not given (all elements)."""
    if text is None:
        return None
    from apt_daq.isotopes import elements

    known = set(elements())
    els = [e.strip() for e in text.split(",") if e.strip()]
    if not els:
        raise UserError(f"--elements {text!r}: no element named (e.g. Li,Ni,O; leave it out "
                        "for all elements)")
    bad = [e for e in els if e not in known]
    if bad:
        raise UserError(f"--elements: unknown element(s) {', '.join(bad)} (symbols as in 'Ni')")
    return els


def spectrum_of_file(path: str | Path):
    """The log-binned spectrum of a run file's calibrated stream, or of an ion file's m/n."""
    return spectrum_and_count(path)[0]


def spectrum_and_count(path: str | Path):
    """(:func:`spectrum_of_file`, the number of ions read, binned or not)."""
    from apt_daq.io._common import require_input
    from apt_daq.pipeline.autorange import LogSpectrum

    p = require_input(path)
    spec = LogSpectrum.empty()
    n = 0
    if p.suffix.lower() in (".h5", ".hdf5"):
        from apt_daq.io.store import RunReader
        from apt_daq.pipeline.ions import open_stream

        with RunReader(p) as r:
            for c in open_stream(r, use_run_ranges=False, positions="none"):
                spec.add(c.mass)
                n += len(c.mass)
        return spec, n
    from apt_daq.commands.import_ import open_ion_file
    from apt_daq.io._common import checked_ions

    src = open_ion_file(p)
    for ions in checked_ions(src, p):
        spec.add(ions["mass"])
        n += len(ions)
    return spec, n


def _nothing_found(path: str, spec, n: int, resolving_power: float = 0.0,
                   elements: list[str] | None = None) -> str:
    """Why no range came out, in one line, with what to do."""
    binned = int(spec.counts.sum())
    if n and binned < 0.5 * n:
        return (f"{path}: no peak identified: only {binned} of {n} ions have an m/n in "
                f"{spec.m0_da:g}-{spec.mass_at(len(spec.counts)):.0f} Da: is the m/n calibrated? "
                "(an import without its flight length: apt-daq calibrate FILE --elements ...)")
    low = (f"; the peaks' resolving power is m/dm ~{resolving_power:.0f}: the m/n is probably "
           "uncorrected" if 0 < resolving_power < LOW_RESOLVING_POWER else "")
    if elements:
        return (f"{path}: no ion of {', '.join(elements)} identified in the spectrum of {n} "
                f"ions (no range file written){low}: check the m/n calibration (apt-daq "
                "calibrate)")
    return (f"{path}: no peak identified in the spectrum of {n} ions (no range file written)"
            f"{low}: give --elements, or check the m/n calibration (apt-daq calibrate)")


def range_report_comment(res, source: str) -> str:
    lines = [f"ranges of {source}, found with no input by apt-daq range "
             "(apt_daq.pipeline.autorange)",
             "range: ion, charge, isotope(s), window Da, counts, background, confidence"]
    for i, r in enumerate(res.ranges, 1):
        lines.append(f"Range{i}: {r.ion} {r.charge}+ {'/'.join(r.isotopes)} "
                     f"[{r.lo_da:.4f}, {r.hi_da:.4f}) counts {r.counts:.0f} "
                     f"background {r.background:.1f} confidence {r.confidence:.3f}")
    for p in res.unidentified:
        lines.append(f"unidentified peak at {p.mass_da:.3f} Da ({p.net:.0f} counts): not ranged")
    lines.append("composition from the decomposed counts (at.%): " + composition_text(res))
    return "\n".join(lines)


def composition_text(res) -> str:
    return ", ".join(f"{el} {100 * f:.2f} +- {100 * e:.2f}"
                     for el, (f, e) in res.composition().items())


def _range(args: argparse.Namespace) -> int:
    from apt_daq.io._common import atomic_output, check_output
    from apt_daq.io.ranges import write_rrng
    from apt_daq.pipeline.autorange import autorange

    out = check_output(args.output, args.overwrite, [args.input]) if args.output else None
    els = parse_elements(args.elements)
    charges = parse_charges(args.charges)
    t0 = time.perf_counter()
    spec, n_ions = spectrum_and_count(args.input)
    t1 = time.perf_counter()
    res = autorange(spec, els, charges)
    t2 = time.perf_counter()
    if not res.ranges:
        raise UserError(_nothing_found(str(args.input), spec, n_ions, res.resolving_power,
                                       els))
    if 0 < res.resolving_power < LOW_RESOLVING_POWER:
        logging.getLogger("apt_daq.range").warning(
            "%s: the peaks' resolving power is m/dm ~%.0f: the m/n is probably not voltage- "
            "and bowl-corrected, neighbouring isotopes overlap and the ranges are unreliable "
            "(an import: apt-daq calibrate FILE --elements ... first)", args.input,
            res.resolving_power)
    if out is not None:
        with atomic_output(out) as tmp:
            write_rrng(res.table, tmp, comment=range_report_comment(res, Path(args.input).name))
    if args.json:
        d = {"file": str(args.input), "output": str(out) if out else None,
             "elements": els, "charges": list(charges), **res.as_dict(),
             "seconds": {"spectrum": round(t1 - t0, 3), "identification": round(t2 - t1, 3)}}
        print(json.dumps(d, indent=2))
        return 0
    from rich.table import Table

    con = cli_console()
    t = Table(title=f"{args.input}: {len(res.ranges)} ranges, {len(res.ions)} ions "
                    f"({res.spectrum.counts.sum()} ions binned, {t2 - t0:.1f} s)")
    for c in ("ion", "isotope", "window Da", "counts", "background", "confidence"):
        t.add_column(c, justify="right")
    for r in res.ranges:
        t.add_row(r.ion, "/".join(r.isotopes), f"{r.lo_da:.3f}-{r.hi_da:.3f}", f"{r.counts:.0f}",
                  f"{r.background:.1f}", f"{r.confidence:.3f}")
    con.print(t)
    for p in res.unidentified:
        con.print(f"unidentified peak at {p.mass_da:.3f} Da ({p.net:.0f} counts): not ranged")
    con.print(f"composition from the decomposed counts (at.%): {composition_text(res)}")
    if out is not None:
        con.print(f"{out}: {len(res.table)} ranges written")
    return 0

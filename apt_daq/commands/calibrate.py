"""``apt-daq calibrate RUN.h5 [--elements W,Mo,Ni] [--reference ION] [--t0-ns X]
[--flight-path-mm L] [--json] [--no-store]``: calibrate a straight-flight instrument from the
run's own raw hits (TOF, V_dc, V_pulse, detector x/y).

Fits t0 and the effective flight length on the identified isotope peaks of the given elements
(or named ions), then the voltage and bowl corrections on one reference isotope peak, and
reports the residual of every identified peak in ppm (:mod:`apt_daq.pipeline.calibrate`). The
calibration is stored in the run (/meta "calibration"), so ``analyze``, ``plot`` and every
``export`` use it, unless ``--no-store``. Reflectron instruments are not supported: the m/n
model is a straight flight.
"""

from __future__ import annotations

import argparse
import json
import math

from apt_daq.cli import finite_float, positive_float

SAMPLE_HITS = 2_000_000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit t0, flight length, voltage and bowl corrections on identified peaks "
             "(straight-flight instruments; reflectrons are not supported)",
        description="Calibrate a straight-flight atom probe from the run's raw hits (TOF, V, "
                    "detector x/y): t0 and the effective flight length from several identified "
                    "isotope peaks, then voltage and bowl corrections on one reference isotope "
                    "peak; residuals in ppm of every identified peak. Reflectron instruments "
                    "are NOT supported (the m/n model is a straight flight).")
    p.add_argument("run", help="run file (.h5) with TOF, V_dc, V_pulse and detector x/y")
    p.add_argument("--elements", help="elements (every charge 1-4) or ions, comma-separated: "
                                      "'W,Mo,Ni' or 'W3+,Ni2+' (default: the run's ion table)")
    p.add_argument("--reference", help="ion or isotope peak to fit the voltage and bowl "
                                       "corrections on ('W3+' = its main isotope, '184W3+'); "
                                       "default: the most counted isolated identified peak")
    p.add_argument("--t0-ns", type=finite_float, help="t0 (ns): fixed instead of fitted")
    p.add_argument("--flight-path-mm", type=positive_float,
                   help="flight length L (mm): fixed instead of fitted")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-store", action="store_true",
                   help="do not store the calibration in the run file")
    p.set_defaults(func=_calibrate)


def _names(args: argparse.Namespace, reader) -> list[str]:
    from apt_daq.errors import UserError

    if args.elements:
        return [n.strip() for n in args.elements.split(",") if n.strip()]
    table = reader.meta.get("ion_table") or []
    names = [str(row[0]) for row in table]
    if not names:
        raise UserError(f"{reader.path}: no ion table in the run: give --elements (e.g. "
                        "--elements W,Mo,Ni)")
    return names


def read_sample(reader, max_hits: int = SAMPLE_HITS):
    """The run's hits with usable TOF and voltage as a :class:`Sample` (a stride over the run
    when it holds more than ``max_hits``)."""
    import numpy as np

    from apt_daq.pipeline.calibrate import Sample
    from apt_daq.pipeline.ions import ION_CHUNK, _iter_hits

    n = reader.count("hits") or reader.count("raw")
    stride = max(1, math.ceil(n / max_hits))
    parts = []
    for h in _iter_hits(reader, reader.instrument, ION_CHUNK):
        h = h[::stride]
        v = h["v_dc"].astype(np.float64) + np.nan_to_num(h["v_pulse"].astype(np.float64))
        t = h["tof"].astype(np.float64)
        x, y = h["det_x"].astype(np.float64), h["det_y"].astype(np.float64)
        ok = np.isfinite(t + v + x + y) & (t > 0) & (v > 0)
        parts.append((t[ok], x[ok], y[ok], v[ok]))
    cols = [np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(4)]
    return Sample(*cols)


#: rms residual of the identified peaks (ppm) above which a calibration is called poor: a
#: straight-flight fit on the right ions leaves < 100 ppm (docs/analysis.md)
POOR_PPM = 500.0


def rms_ppm(peaks: list[dict]) -> float:
    """RMS residual (ppm) of the identified isotope peaks (rows of ``Calibration.peaks``)."""
    import numpy as np

    res = [p["residual_ppm"] for p in peaks]
    return float(np.sqrt(np.mean(np.square(res)))) if res else 0.0


def own_mn_ppm(reader, peaks: list[dict], max_ions: int = 2_000_000) -> float | None:
    """RMS residual (ppm) of an imported file's OWN m/n at the same isotope peaks (apex in
    +-0.2 %), or None when the run carries no m/n of its file."""
    import numpy as np

    from apt_daq.pipeline.calibrate import apex

    if "mass" not in ((reader.meta.get("imported") or {}).get("fields") or ()):
        return None
    n = reader.count("derived")
    stride = max(1, math.ceil(n / max_ions))
    m = np.concatenate([c["mass"][::stride].astype(np.float64)
                        for c in reader.iter("derived", 1 << 20)] or [np.zeros(0)])
    res = []
    for p in peaks:
        top, _, _ = apex(m, p["mass_da"], 2e-3 * p["mass_da"])
        if np.isfinite(top):
            res.append((top / p["mass_da"] - 1) * 1e6)
    return float(np.sqrt(np.mean(np.square(res)))) if res else None


def calibrate_run(path, names: list[str] | None = None, *, reference: str | None = None,
                  t0_ns: float | None = None, flight_path_mm: float | None = None,
                  store: bool = True) -> dict:  # fmt: skip
    """Calibrate the run at ``path`` (see module doc); returns the report (JSON-able)."""
    from apt_daq import __version__
    from apt_daq.errors import DataFileError, UserError
    from apt_daq.io.store import RunReader, now_iso
    from apt_daq.pipeline.calibrate import calibrate_sample
    from apt_daq.pipeline.ions import has_tof, store_calibration

    with RunReader(path) as r:
        inst = r.instrument
        if inst is None:
            raise DataFileError(f"{path}: no instrument in /meta: nothing to start the "
                                "calibration from")
        if inst.reflectron or inst.model == "XR":
            raise UserError(f"{path}: the instrument is a reflectron ({inst.name}): not "
                            "supported, the m/n model is a straight flight")
        if not (r.has("hits") or r.has("raw")):
            raise DataFileError(f"{path}: no hits to calibrate on")
        if not has_tof(r):
            raise DataFileError(f"{path}: the hits carry no TOF and voltage: nothing to "
                                "calibrate (an imported file's own m/n is used as is)")
        strict = names is not None  # names the user gave must each explain a peak
        if names is None:
            names = _names(argparse.Namespace(elements=None), r)
        s = read_sample(r)
        if len(s) < 1000:
            raise DataFileError(f"{path}: {len(s)} hits with TOF and voltage: too few to "
                                "calibrate on")
        res = calibrate_sample(s, names, float(inst.t0_ns), float(inst.flight_path_mm),
                               0.5 * inst.detector_diameter_mm, t0_ns=t0_ns,
                               flight_path_mm=flight_path_mm, reference=reference,
                               strict=strict)
        own = own_mn_ppm(r, res.peaks)
    cal = res.calibration
    cal.source, cal.created, cal.version = "calibrate", now_iso(), __version__
    fit = rms_ppm(res.peaks)
    if own is not None and fit > max(1.5 * own, own + 50.0):
        worse = (f"its isotope peaks sit {fit:.0f} ppm rms from their masses, the file's own "
                 f"m/n {own:.0f} ppm (another instrument's m/n model, e.g. a reflectron's, is "
                 "no straight flight: give the import --instrument")
        if store:
            raise UserError(f"{path}: calibration NOT stored: {worse}; --no-store shows the "
                            "fit)")
        cal.notes.append(f"calibration worse than the file's own m/n: {worse})")
    elif fit > POOR_PPM:
        cal.notes.append(f"the identified peaks sit {fit:.0f} ppm rms from their masses: a poor "
                         "calibration (other elements or ions in the spectrum, or an instrument "
                         "that is no straight flight)")
    stored = store_calibration(path, cal) if store else False
    return {
        "file": str(path),
        "elements": names,
        "hits_used": len(s),
        "nominal": res.nominal,
        "t0_ns": cal.t0_ns,
        "flight_path_mm": cal.flight_path_mm,
        "reference": res.reference.isotope,
        "ions": res.present,
        "peaks": res.peaks,
        "calibration": cal.as_dict(),
        "stored": bool(stored),
    }


def _calibrate(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.elements.split(",") if n.strip()] if args.elements else None
    rep = calibrate_run(args.run, names, reference=args.reference, t0_ns=args.t0_ns,
                        flight_path_mm=args.flight_path_mm, store=not args.no_store)
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    from rich.table import Table

    from apt_daq.cli import console

    con = console()  # no wrapping: a note or a path is one line for grep
    c = rep["calibration"]
    nom = rep["nominal"]
    con.print(f"[bold]{rep['file']}[/bold]: {rep['hits_used']} hits; ions found: "
              f"{', '.join(rep['ions'])}")
    con.print(f"t0 {c['t0_ns']:.3f} ns (nominal {nom['t0_ns']:g}), flight length "
              f"{c['flight_path_mm']:.3f} mm (nominal {nom['flight_path_mm']:g}); voltage and "
              f"bowl on {c['reference']} ({c['fit_ions']} ions), residual over voltage bins "
              f"{'n/a' if c['residual_ppm'] is None else format(c['residual_ppm'], '.0f')} ppm")
    for note in c["notes"]:
        con.print(f"note: {note}")
    t = Table(title="identified isotope peaks after calibration")
    for col in ("isotope", "m/n Da", "apex Da", "ions", "residual ppm", "in t0/L fit"):
        t.add_column(col, justify="right")
    for p in rep["peaks"]:
        t.add_row(p["isotope"], f"{p['mass_da']:.4f}", f"{p['apex_da']:.4f}", str(p["counts"]),
                  f"{p['residual_ppm']:+.1f}", "yes" if p["fitted"] else "no")
    con.print(t)
    con.print("calibration stored in the run" if rep["stored"] else
              "calibration NOT stored (--no-store, or the run is being written)")
    return 0

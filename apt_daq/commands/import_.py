"""``apt-daq import FILE [--ranges R] -o RUN.h5``: bring POS, EPOS or APT data (a real LEAP
dataset) into a run file, so ``apt-daq analyze`` works on it as on a simulated run.

/hits gets what the file measured (pulse, TOF, detector x/y, V_dc, V_pulse, multiplicity; a
quantity the file lacks is NaN, the laser energy always), /derived the file's m/n and
reconstructed positions and, with ``--ranges``, the range index of each ion. Detector
coordinates and voltages are kept so the run can be reconstructed again. The run is written to
a temporary file and renamed at the end: a bad input leaves no half-written run.

The file's m/n is authoritative: the run's calibration (/meta "calibration") says "file", so
the ion stream behind analyze, plot and export uses it as is; ``apt-daq analyze
--recalibrate`` recomputes it from TOF and V. The flight length that the file's m/n, TOF, V
and detector position imply is found with the pipeline's geometry (L_eff^2 = L^2 + x^2 + y^2,
t0 = 0), so a recalibration starts from the file's own scale.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from apt_daq.errors import DataFileError, UserError
from apt_daq.hits import DERIVED_DTYPE, HIT_DTYPE
from apt_daq.io.ranges import table_to_meta

log = logging.getLogger("apt_daq.import")
FORMATS = ("pos", "epos", "apt")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="POS/EPOS/APT (+ RRNG/RNG ranges) into a run file")
    p.add_argument("file", help="data file: .pos, .epos or .apt")
    p.add_argument("-o", "--output", required=True, help="run file to write (.h5)")
    p.add_argument("--ranges", help="RRNG or RNG range file to range the ions with")
    p.add_argument("--format", choices=FORMATS, help="file format (default: from the extension)")
    p.add_argument("--voltage-unit", choices=("auto", "V", "kV"), default="auto",
                   help="unit of the file's voltages (default: decided from the data)")
    p.add_argument("--flight-path-mm", type=float,
                   help="flight path of the instrument (default: implied by TOF, V and m/n)")
    p.add_argument("--simulated", action="store_true",
                   help="the data came from a simulation (recorded for NeXus is_simulation)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_import)


def open_ion_file(path: str | Path, fmt: str | None = None, voltage_unit: str = "auto"):
    """A POS/EPOS/APT reader (``.n``, ``.present``, ``.iter(chunk)``) chosen by extension."""
    p = Path(path)
    fmt = fmt or p.suffix.lower().lstrip(".")
    if fmt == "pos":
        from apt_daq.io.pos import PosFile

        return PosFile(p)
    if fmt == "epos":
        from apt_daq.io.epos import EposFile

        return EposFile(p, voltage_unit=voltage_unit)
    if fmt == "apt":
        from apt_daq.io.apt import AptFile

        return AptFile(p, voltage_unit=voltage_unit)
    raise UserError(f"{p}: unknown data file type {p.suffix!r} (expected .pos, .epos or .apt, "
                    "or give --format)")


def ions_to_chunks(ions: np.ndarray, ion_index: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """An :data:`ION_DTYPE` chunk -> (HIT_DTYPE, DERIVED_DTYPE) chunks of the store."""
    hits = np.zeros(len(ions), HIT_DTYPE)
    for f in ("pulse", "tof", "det_x", "det_y", "v_dc", "v_pulse"):
        hits[f] = ions[f]
    hits["laser_pj"] = np.nan
    hits["multiplicity"] = np.minimum(ions["multiplicity"], 255)
    der = np.zeros(len(ions), DERIVED_DTYPE)
    for f in ("mass", "x", "y", "z"):
        der[f] = ions[f]
    der["ion"] = -1 if ion_index is None else ion_index
    return hits, der


def range_index(mass: np.ndarray, table) -> np.ndarray:
    """Range index of each m/n (-1 unranged), by the pipeline's ranging."""
    from apt_daq.pipeline.ranging import range_masses

    return np.asarray(range_masses(np.ascontiguousarray(mass, np.float32), table), np.int16)


def ion_table(table) -> list[list]:
    """[name, main m/n, charge] for each distinct ion of a range table (the run's ion table)."""
    from apt_daq.isotopes import ion_mass

    out = []
    for name in table.ions:
        z = table.charge[table.names.index(name)]
        try:
            m = float(ion_mass(name))
        except (KeyError, ValueError):
            m = float("nan")
        out.append([name, m, int(z)])
    return out


def import_file(path: str | Path, out: str | Path, ranges: str | Path | None = None, *,
                fmt: str | None = None, voltage_unit: str = "auto",
                flight_path_mm: float | None = None, simulated: bool = False,
                overwrite: bool = False, chunk: int = 1 << 20) -> dict:
    """Import ``path`` into the run file ``out``; returns the /meta "imported" summary."""
    from apt_daq import __version__
    from apt_daq.config import InstrumentConfig
    from apt_daq.io._common import atomic_output
    from apt_daq.io.epos import implied_flight_path_m
    from apt_daq.io.store import RunWriter, now_iso
    from apt_daq.pipeline.corrections import Calibration

    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: exists (use --overwrite or another -o)")
    src = open_ion_file(path, fmt, voltage_unit)
    table = None
    if ranges:
        from apt_daq.io.ranges import read_ranges

        table = read_ranges(ranges)
    fmt = fmt or Path(path).suffix.lower().lstrip(".")
    summary = {
        "file": str(path), "format": fmt, "ions": int(src.n), "fields": list(src.present),
        "voltage": getattr(src, "voltage_note", "no voltage in the file"),
        "skipped_sections": list(getattr(src, "skipped", [])),
    }
    first = next(src.iter(min(chunk, 200_000)), None) if src.n else None
    inst = {"name": f"imported from {fmt.upper()}"}
    if flight_path_mm:
        inst["flight_path_mm"] = float(flight_path_mm)
        summary["flight_path"] = "given"
    elif first is not None and {"tof", "v_dc"} <= set(src.present):
        det = {"det_x", "det_y"} <= set(src.present)
        v = first["v_dc"] + np.nan_to_num(first["v_pulse"])
        l_m = implied_flight_path_m(first["mass"], first["tof"], v,
                                    first["det_x"] if det else None,
                                    first["det_y"] if det else None)
        if np.isfinite(l_m):
            inst["flight_path_mm"] = round(l_m * 1000.0, 3)
            summary["flight_path"] = ("implied by TOF, V and m/n with t0 = 0 (median of "
                                      "sqrt(k V t^2 / m - x^2 - y^2)); give --flight-path-mm "
                                      "if known")
    cal = Calibration.from_file(f"{fmt.upper()} {Path(path).name}")
    cal.created, cal.version = now_iso(), __version__
    meta = {
        "imported": summary,
        "simulated": bool(simulated),
        "instrument": InstrumentConfig(**inst).model_dump(mode="json"),
        "calibration": cal.as_dict(),
    }
    if table is not None:
        meta["ranges"] = table_to_meta(table)
        meta["ion_table"] = ion_table(table)

    def chunks() -> Iterator[np.ndarray]:
        yield from src.iter(chunk)

    n = 0
    with atomic_output(out, overwrite=True) as tmp, RunWriter(tmp, meta, overwrite=True) as w:
        for ions in chunks():
            idx = range_index(ions["mass"], table) if table is not None else None
            hits, der = ions_to_chunks(ions, idx)
            w.append(hits=hits, derived=der)
            n += len(ions)
        if n != src.n:
            raise DataFileError(f"{path}: read {n} ions of {src.n}")
        w.finish("imported")
    return summary


def _import(args: argparse.Namespace) -> int:
    s = import_file(args.file, args.output, args.ranges, fmt=args.format,
                    voltage_unit=args.voltage_unit, flight_path_mm=args.flight_path_mm,
                    simulated=args.simulated, overwrite=args.overwrite)
    print(f"{args.output}: {s['ions']} ions imported from {args.file} ({s['format']}; "
          f"fields {', '.join(s['fields'])}; voltage {s['voltage']})")
    return 0

"""``apt-daq import FILE [--ranges R] -o RUN.h5``: bring POS, EPOS or APT data (a real LEAP
dataset), a raw hit list of another instrument (``--format table`` with a field map:
:mod:`apt_daq.io.table`) or any format ifes-apt-tc-data-modeling reads (:mod:`apt_daq.io.ifes`)
into a run file, so ``apt-daq analyze`` works on it as on a simulated run.

/hits gets what the file measured (pulse, TOF, detector x/y, V_dc, V_pulse, multiplicity; a
quantity the file lacks is NaN, the laser energy always; a file without pulse numbers gets one
pulse per multi-hit event, or per ion without multiplicities either, and /meta "imported"
says so: "fields" lists what the file really held, "pulses" what the pulse numbers are,
"skipped_sections" every section of an APT file that was not read), /derived the file's m/n and
reconstructed positions and, with ``--ranges``, the range index of each ion. /meta
"imported" also keeps an APT header's creation time ("file_created"; carried to NeXus
start_time and back into an APT export) and "instrument_known": which /meta instrument values
the file, its data or the user gave (the others are nominal, and exports leave them out). Detector
coordinates and voltages are kept so the run can be reconstructed again. The run is written to
a temporary file and renamed at the end: a bad input leaves no half-written run.

The file's m/n is authoritative: the run's calibration (/meta "calibration") says "file", so
the ion stream behind analyze, plot and export uses it as is; ``apt-daq analyze
--recalibrate`` recomputes it from TOF and V. The flight length that the file's m/n, TOF, V
and detector position imply is found with the pipeline's geometry (L_eff^2 = L^2 + x^2 + y^2,
t0 = 0), so a recalibration starts from the file's own scale.

A hit list without m/n (TOF and V only) stores no calibration: the ion stream computes m/n
from TOF, V and the detector position with the run's instrument (``--flight-path-mm``,
``--t0-ns`` or ``--instrument``; nominal 100 mm and 0 ns otherwise, with a warning) and fits
the voltage and bowl corrections as for an acquired run ("tof" mode); ``apt-daq calibrate``
fits t0 and the flight length.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from apt_daq.errors import DataFileError, UserError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("apt_daq.import")
OWN_FORMATS = ("pos", "epos", "apt")
IFES_FORMATS = ("ato", "csv", "raw", "pyccapt", "cameca", "ifes-pos", "ifes-epos", "ifes-apt")
FORMATS = (*OWN_FORMATS, "table", *IFES_FORMATS)
#: the help's examples, as typed: lines of at most 80 columns, not re-wrapped by argparse
EXAMPLES = """\
examples:
  apt-daq import Si.epos -o si.h5 --ranges Si.RRNG
  # a CSV with columns T,VDC,VP,X,Y,PN in s, kV and cm (--format table implied):
  apt-daq import hits.csv -o run.h5 --flight-path-mm 382 --t0-ns 12.5 \\
      --fields tof=T:s,v_dc=VDC:kV,v_pulse=VP:kV,det_x=X:cm,det_y=Y:cm,pulse=PN
  # CSV or binary records described by a YAML field map (docs/formats.md):
  apt-daq import hits.bin -o run.h5 --field-map layout.yaml
  # any format ifes-apt-tc-data-modeling reads:
  apt-daq import run.ato -o run.h5 --ranges run.rrng"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="POS/EPOS/APT, raw hit lists (--format table) or any "
                       "ifes-apt-tc-data-modeling format into a run file",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    p.add_argument("file", help="data file: .pos, .epos, .apt, a hit table (.csv, .tsv, .npy, "
                   "binary records) or an ifes format (.ato, .raw, ...)")
    p.add_argument("-o", "--output", required=True, help="run file to write (.h5)")
    p.add_argument("--ranges", help="range file: RRNG or RNG, or ENV, FIG.TXT, .analysis, "
                   ".analysisset (read with ifes-apt-tc-data-modeling)")
    p.add_argument("--format", choices=FORMATS, metavar="FORMAT",
                   help=f"file format: {', '.join(FORMATS)} (default: table with "
                   "--fields/--field-map, else from the extension); docs/formats.md")
    p.add_argument("--fields", help="table: FIELD=COLUMN[:UNIT],... (examples below)")
    p.add_argument("--field-map", help="table: a YAML field map (fields, units, CSV or binary "
                   "record layout)")
    p.add_argument("--voltage-unit", choices=("auto", "V", "kV"), default="auto",
                   help="EPOS/APT: unit of the file's voltages (default: decided from the data)")
    p.add_argument("--flight-path-mm", type=float,
                   help="flight path of the instrument (default: the --instrument's; for files "
                   "with m/n, implied by TOF, V and m/n)")
    p.add_argument("--t0-ns", type=float, help="time offset between trigger and departure, ns "
                   "(default: the --instrument's, else 0)")
    p.add_argument("--instrument", help="instrument YAML (configs/instruments/*.yaml form)")
    p.add_argument("--simulated", action="store_true",
                   help="the data came from a simulation (recorded for NeXus is_simulation)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    p.set_defaults(func=_import)


def source_format(path: str | Path, fmt: str | None = None, table: bool = False) -> str:
    """The format to read ``path`` with: given, ``table`` with a field map, else by extension
    (our POS/EPOS/APT readers first, then the ifes formats)."""
    if Path(path).is_dir():
        raise UserError(f"{path}: is a directory, not a data file")
    if fmt:
        return fmt
    if table:
        return "table"
    p = Path(path)
    ext = p.suffix.lower().lstrip(".")
    if ext in OWN_FORMATS:
        return ext
    from apt_daq.io.ifes import format_for

    found = format_for(p)
    if found:
        return found
    raise UserError(f"{p}: unknown data file type {p.suffix!r} (expected .pos, .epos or .apt, "
                    "a hit table with --fields/--field-map, or give --format)")


def open_source(path: str | Path, fmt: str, voltage_unit: str = "auto", *,
                fields: str | None = None, field_map: str | Path | None = None):
    """The reader of ``path`` in format ``fmt`` (``.n``, ``.present``, ``.iter(chunk)``)."""
    if fmt == "table":
        from apt_daq.io.table import TableFile, load_field_map

        if not (fields or field_map):
            raise UserError(f"{path}: --format table needs --fields or --field-map")
        return TableFile(path, load_field_map(field_map, fields))
    if fields or field_map:
        raise UserError(f"{path}: --fields/--field-map describe a hit table (--format table), "
                        f"not {fmt}")
    if fmt in IFES_FORMATS:
        from apt_daq.io.ifes import IfesFile

        return IfesFile(path, fmt, voltage_unit)
    return open_ion_file(path, fmt, voltage_unit)


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
    raise UserError(f"{p}: unknown data file type {p.suffix!r} (expected .pos, .epos or .apt; "
                    "`apt-daq import --format ...` reads other formats into a run file)")


def ions_to_chunks(ions: np.ndarray, ion_index: np.ndarray | None,
                   derived: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """An :data:`ION_DTYPE` chunk -> (HIT_DTYPE, DERIVED_DTYPE or None) chunks of the store."""
    import numpy as np

    from apt_daq.hits import DERIVED_DTYPE, HIT_DTYPE

    hits = np.zeros(len(ions), HIT_DTYPE)
    for f in ("pulse", "tof", "det_x", "det_y", "v_dc", "v_pulse"):
        hits[f] = ions[f]
    hits["laser_pj"] = np.nan
    hits["multiplicity"] = np.minimum(ions["multiplicity"], 255)
    if not derived:
        return hits, None
    der = np.zeros(len(ions), DERIVED_DTYPE)
    for f in ("mass", "x", "y", "z"):
        der[f] = ions[f]
    der["ion"] = -1 if ion_index is None else ion_index
    return hits, der


def range_index(mass: np.ndarray, table) -> np.ndarray:
    """Range index of each m/n (-1 unranged), by the pipeline's ranging."""
    import numpy as np

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


def read_range_file(path: str | Path):
    """RRNG/RNG with our reader; ENV, FIG.TXT, .analysis, .analysisset through ifes."""
    from apt_daq.io.rangefiles import read_range_file as read_any

    return read_any(path)


def instrument_for(fmt: str, path: str | Path, instrument: str | Path | None,
                   flight_path_mm: float | None, t0_ns: float | None) -> tuple[dict, set[str]]:
    """The run's instrument: an --instrument YAML, then --flight-path-mm and --t0-ns; and the
    keys of it that were given (the YAML's own keys and the options; the rest are nominal)."""
    import numpy as np

    from apt_daq.config import InstrumentConfig, load_yaml_model

    given: set[str] = set()
    if instrument:
        if not Path(instrument).is_file():
            what = ("is a directory, not an instrument file" if Path(instrument).is_dir() else
                    "not a regular file" if Path(instrument).exists() else
                    "no such instrument file")
            raise UserError(f"{instrument}: {what}")
        model = load_yaml_model(instrument, InstrumentConfig)
        inst = model.model_dump(mode="json")
        given |= set(model.model_fields_set)
    else:
        inst = {"name": f"imported from {fmt.upper()} ({Path(path).name})"}
    if flight_path_mm is not None:
        if not (flight_path_mm > 0 and np.isfinite(flight_path_mm)):
            raise UserError(f"--flight-path-mm: must be > 0, got {flight_path_mm}")
        inst["flight_path_mm"] = float(flight_path_mm)
        given.add("flight_path_mm")
    if t0_ns is not None:
        if not np.isfinite(t0_ns):
            raise UserError(f"--t0-ns: must be a number, got {t0_ns}")
        inst["t0_ns"] = float(t0_ns)
        given.add("t0_ns")
    return inst, given


def import_file(path: str | Path, out: str | Path, ranges: str | Path | None = None, *,
                fmt: str | None = None, voltage_unit: str = "auto",
                flight_path_mm: float | None = None, t0_ns: float | None = None,
                instrument: str | Path | None = None, fields: str | None = None,
                field_map: str | Path | None = None, simulated: bool = False,
                overwrite: bool = False, chunk: int = 1 << 20) -> dict:
    """Import ``path`` into the run file ``out``; returns the /meta "imported" summary."""
    from apt_daq.commands.import_data import detector_from_hits
    from apt_daq.config import InstrumentConfig
    from apt_daq.io._common import check_output

    out = check_output(out, overwrite, [path, ranges, instrument, field_map])
    fmt = source_format(path, fmt, table=bool(fields or field_map))
    src = open_source(path, fmt, voltage_unit, fields=fields, field_map=field_map)
    table = read_range_file(ranges) if ranges else None
    summary = _summary(src, path, fmt)
    inst, known = instrument_for(fmt, path, instrument, flight_path_mm, t0_ns)
    _flight_path(src, inst, summary, path, flight_path_mm, instrument, min(chunk, 200_000))
    if not instrument and (det := detector_from_hits(src, inst, min(chunk, 200_000))):
        summary["detector"] = det
        known.add("detector_diameter_mm")
    if summary["flight_path"] is None:
        del summary["flight_path"]
    elif summary["flight_path"].startswith("implied"):
        known.add("flight_path_mm")
    # what of /meta instrument the file, its data or the user gave; the rest are apt-daq's
    # nominal values, which exports do not present as the instrument's (NeXus omits them)
    summary["instrument_known"] = sorted(known)
    inst_cfg = InstrumentConfig(**inst)
    has_mass = "mass" in src.present
    if inst_cfg.reflectron and not has_mass:
        log.warning("%s: a reflectron instrument: m/n from TOF assumes a straight flight path "
                    "(reflectron instruments are not modelled)", path)
    meta = _import_meta(summary, inst_cfg, simulated, table, fmt, path, has_mass)
    _write_run(src, out, meta, table, chunk, path)
    if not has_mass and flight_path_mm is None and not instrument:
        log.warning("%s: no flight length given (--flight-path-mm or --instrument): m/n from "
                    "TOF uses the nominal %.0f mm and t0 = %g ns until `apt-daq calibrate` fits "
                    "them", out, inst_cfg.flight_path_mm, inst_cfg.t0_ns)
    return summary


def _flight_path(src, inst: dict, summary: dict, path: str | Path, flight_path_mm: float | None,
                 instrument: str | Path | None, sample: int) -> None:
    """The run's flight length (in ``inst``) and what the summary says of it: given, from the
    instrument file or implied by the file's m/n, TOF and V; the one estimate of the implied
    length is also the one the voltage note names."""
    from apt_daq.commands.import_data import (
        check_flight_path,
        implied_flight_path,
        implied_mm,
        voltage_note,
    )

    l_mm = implied_mm(src, float(inst.get("t0_ns", 0.0)), sample)
    summary["voltage"] = voltage_note(summary["voltage"], l_mm)
    if flight_path_mm is None and not instrument:
        summary["flight_path"] = implied_flight_path(set(src.present), inst, l_mm)
        return
    have = f"{float(inst['flight_path_mm']):g} mm"
    summary["flight_path"] = (f"given (--flight-path-mm): {have}" if flight_path_mm is not None
                              else f"from {instrument}: {have}")
    check_flight_path(inst, l_mm, summary, path, given=flight_path_mm is not None,
                      source=str(instrument))


def _summary(src, path: str | Path, fmt: str) -> dict:
    """The /meta "imported" summary of an opened source: file, format, ions, fields, voltage
    and what the reader noted or skipped."""
    from apt_daq.io._common import PULSES

    present = set(src.present)
    summary = {
        "file": str(path), "format": fmt, "ions": src.n, "fields": list(src.present),
        "voltage": getattr(src, "voltage_note", "no voltage in the file"
                           if "v_dc" not in present else "V (converted at import)"),
        "skipped_sections": list(getattr(src, "skipped", [])),
    }
    if getattr(src, "pulses", None) in PULSES:  # the readers that tell (POS, EPOS, APT)
        summary["pulses"] = PULSES[src.pulses]
    if getattr(src, "fmap", None) is not None:
        summary["field_map"] = src.fmap.as_meta()
        summary["table_format"] = src.format
    if getattr(src, "notes", None):
        summary["notes"] = list(src.notes)
    created = filetime_iso(getattr(src, "created_filetime", None))
    if created:  # an APT header's ftCreationTime
        summary["file_created"] = created
        summary["file_created_filetime"] = src.created_filetime
    return summary


def filetime_iso(ft: int | None) -> str | None:
    """A Windows FILETIME (100 ns ticks since 1601-01-01 UTC) as ISO 8601 UTC, to the
    microsecond; None for None, 0 (not set) or a value no calendar date has."""
    from datetime import UTC, datetime, timedelta

    if not ft or ft < 0:
        return None
    try:
        return (datetime(1601, 1, 1, tzinfo=UTC) + timedelta(microseconds=ft // 10)).isoformat()
    except OverflowError:
        return None


def _import_meta(summary: dict, inst_cfg, simulated: bool, table, fmt: str,
                 path: str | Path, has_mass: bool) -> dict:
    """The run's /meta: the summary, the instrument, the file's own calibration when it holds
    m/n (else none: the stream computes m/n from TOF), the range table."""
    from apt_daq import __version__
    from apt_daq.io.ranges import table_to_meta
    from apt_daq.io.store import now_iso
    from apt_daq.pipeline.corrections import Calibration

    meta = {
        "imported": summary,
        "simulated": bool(simulated),
        "instrument": inst_cfg.model_dump(mode="json"),
    }
    if has_mass:  # the file's m/n is authoritative
        cal = Calibration.from_file(f"{fmt.upper()} {Path(path).name}")
        cal.created, cal.version = now_iso(), __version__
        meta["calibration"] = cal.as_dict()
        summary["calibration"] = "file: the file's m/n, as is"
    else:  # no stored calibration: the stream computes m/n from TOF and fits the corrections
        summary["calibration"] = ("tof: m/n computed from TOF, V and the detector position "
                                  "with the instrument's t0 and flight length")
    if table is not None:
        meta["ranges"] = table_to_meta(table)
        meta["ion_table"] = ion_table(table)
    return meta


def _write_run(src, out: Path, meta: dict, table, chunk: int, path: str | Path) -> None:
    """Stream the source into the run file ``out`` (atomically), ranged with ``table`` when the
    file holds m/n; a CSV's ion count is recorded once read."""
    import numpy as np

    from apt_daq.commands.import_data import MassCheck, pulse_count
    from apt_daq.io._common import atomic_output, checked_ions
    from apt_daq.io.store import RunWriter

    present = set(src.present)
    has_mass = "mass" in present
    with_derived = has_mass or {"x", "y", "z"} <= present
    summary = meta["imported"]
    v_lo, v_hi = np.inf, -np.inf
    pulses: list[int | None] = [None, None]  # the first and the last pulse number
    masses = MassCheck(path, present)
    with atomic_output(out, overwrite=True) as tmp, RunWriter(tmp, meta, overwrite=True) as w:
        try:
            for ions in checked_ions(src, path, chunk):
                masses.add(ions)
                idx = (range_index(ions["mass"], table) if table is not None and has_mass
                       else None)
                hits, der = ions_to_chunks(ions, idx, derived=with_derived)
                w.append(hits=hits, derived=der)
                v = ions["v_dc"][np.isfinite(ions["v_dc"])]
                if len(v):
                    v_lo, v_hi = min(v_lo, float(v.min())), max(v_hi, float(v.max()))
                if "pulse" in present and len(ions):
                    first = int(ions["pulse"][0]) if pulses[0] is None else pulses[0]
                    pulses = [first, int(ions["pulse"][-1])]
        except DataFileError as e:  # NaN m/n are no ions to the record check: say what it is
            raise (masses.refused() or e) from None
        if (no_mass := masses.refused()) is not None:  # every m/n 0
            raise no_mass
        if summary["ions"] is None:  # a CSV: counted while read
            summary["ions"] = masses.n
        elif masses.n != src.n:
            raise DataFileError(f"{path}: read {masses.n} ions of {src.n}")
        # what `apt-daq info` shows of an imported run (it has no instrument log)
        if np.isfinite(v_lo):
            summary["voltage_v"] = [round(v_lo, 1), round(v_hi, 1)]
        count = pulse_count(src, *pulses)
        if count is not None:
            summary["pulse_count"] = count
        w.set_meta("imported", summary)
        w.finish("imported")


def _import(args: argparse.Namespace) -> int:
    s = import_file(args.file, args.output, args.ranges, fmt=args.format,
                    voltage_unit=args.voltage_unit, flight_path_mm=args.flight_path_mm,
                    t0_ns=args.t0_ns, instrument=args.instrument, fields=args.fields,
                    field_map=args.field_map, simulated=args.simulated,
                    overwrite=args.overwrite)
    print(f"{args.output}: {s['ions']} ions imported from {args.file} ({s['format']}; "
          f"fields {', '.join(s['fields'])}; voltage {s['voltage']})")
    if s.get("flight_path"):
        print(f"  flight path: {s['flight_path']}")
    if s.get("detector"):
        print(f"  detector diameter: {s['detector']}")
    if "pulse" not in s["fields"] and s.get("pulses"):
        print(f"  pulse numbers: {s['pulses']}")
    if s["skipped_sections"]:
        print(f"  sections not read: {', '.join(s['skipped_sections'])}")
    return 0

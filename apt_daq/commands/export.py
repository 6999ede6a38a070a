"""``apt-daq export RUN.h5 --format pos|epos|apt|rrng|nexus -o FILE``: interchange with AP Suite,
IVAS and the NeXus/NOMAD tools. Every format is written to a temporary file beside the target
and renamed at the end, so a failed export leaves nothing half-written.

The ions come from the run's calibrated ion stream (:mod:`apt_daq.pipeline.ions`): the
calibration stored by ``apt-daq analyze`` (or an imported file's own m/n), so an export holds
exactly the masses the analysis reported.

Only what the run has is written: an imported run holds the fields its file held (/meta
"imported" "fields"). Without pulse numbers EPOS gets psl = 0 on every ion; without pulse
numbers and multiplicities (a POS file) each ion is its own event (EPOS ipp = 1); APT leaves
out the sections of the fields the run lacks (pulse, pulseDelta, Multiplicity, tof, Voltage,
...) rather than filling them with NaN; with pulse numbers it writes Multiplicity (the pulse
groups) even where the imported file had none.

Pulse numbers (EPOS psl, APT pulseDelta and pulse) count from the run's origin
(:func:`pulse_origin`), so the sum of the deltas is the run's pulse count as ``apt-daq info``
gives it (docs/formats.md, "Pulse numbers in exports"). An m/n the run never calibrated (an
imported raw-hit file's, from the nominal t0 and flight length) is exported with one warning
(:func:`uncalibrated_note`). The output's folder must exist: a missing one is refused, not
made."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from apt_daq.errors import DataFileError, UserError

if TYPE_CHECKING:
    from apt_daq.io.store import RunReader

FORMATS = ("pos", "epos", "apt", "rrng", "nexus")
log = logging.getLogger("apt_daq.export")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run as POS, EPOS, APT, RRNG or NeXus NXapm")
    p.add_argument("file", help="run file (.h5)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("-o", "--output", required=True, help="output file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_export)


def run_ranges(reader: RunReader):
    """The run's range table (stored in the run, else its config's range file), or None."""
    from apt_daq.io.ranges import run_range_table

    return run_range_table(reader)[0]


def export_run(run: str | Path, fmt: str, out: str | Path, overwrite: bool = False) -> int:
    """Export ``run`` to ``out`` in ``fmt``; returns the number of ions (or ranges) written."""
    from apt_daq.io._common import atomic_output, check_output, one_event_per_ion, run_fields
    from apt_daq.io.store import RunReader
    from apt_daq.pipeline.ions import open_stream

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out = check_output(out, overwrite, [run], new_folders=False)
    with RunReader(run) as r:
        if fmt == "rrng":
            from apt_daq.io.ranges import write_rrng

            table = run_ranges(r)
            if table is None:
                raise DataFileError(f"{r.path}: the run has no range table (neither imported "
                                    "ranges nor analysis.ranges in its config)")
            with atomic_output(out) as tmp:
                write_rrng(table, tmp, comment=f"ranges of {r.path.name}, exported by apt-daq")
            return len(table)
        if not r.count("hits"):
            raise DataFileError(f"{r.path}: no hits to export")
        stream = open_stream(r)
        note = uncalibrated_note(r, stream.calibration)
        if note:
            log.warning("%s", note)
        fields = run_fields(r.meta)  # None: every field (a run apt-daq recorded)
        records = stream.ion_records()
        if fields is not None and not fields & {"pulse", "multiplicity"}:
            records = one_event_per_ion(records)
        if fmt == "pos":
            from apt_daq.io.pos import write_pos

            return write_pos(out, records)
        if fmt == "epos":
            from apt_daq.io.epos import write_epos

            return write_epos(out, records, pulses=fields is None or "pulse" in fields,
                              pulse_origin=pulse_origin(r))
        if fmt == "apt":
            from apt_daq.io.apt import ions_sections, write_apt

            created = (r.meta.get("imported") or {}).get("file_created_filetime")
            return write_apt(out, len(stream), records, ions_sections(fields),
                             created_filetime=created,  # an imported APT's own, else now
                             pulse_origin=pulse_origin(r))
        from apt_daq.io.nexus import write_nexus

        return write_nexus(r, out, stream)


def pulse_origin(reader: RunReader) -> int:
    """The pulse number an export's first pulse delta (EPOS psl, APT pulseDelta) counts from,
    so the deltas sum to the run's pulse count (docs/formats.md, "Pulse numbers in exports").

    A run apt-daq recorded numbers its pulses from 0 at its start (/hits ``pulse``): 0, so
    psl[0] is its first ion's pulse number (the pulses fired before it) and ``cumsum(psl)``
    restores every pulse number. An imported run's count (/meta "imported" "pulse_count")
    spans its pulses through its last ion: last pulse - count. A file of deltas (EPOS, APT)
    counted from the acquisition's start: 0, its own psl again; a file of absolute pulse
    numbers (a raw hit list: apyt, a table) spans its own pulses from its first ion's:
    first - 1, psl[0] = 1. An import that recorded no count: 0 (the numbers as they are)."""
    imp = reader.meta.get("imported")
    count, n = (imp or {}).get("pulse_count"), reader.count("hits")
    if count is None or not n:
        return 0
    return int(reader.read("hits", n - 1, n)["pulse"][0]) - int(count)


def uncalibrated_note(reader: RunReader, cal) -> str | None:
    """The warning for an export of m/n that nothing calibrated, or None: an imported hit list
    without m/n (a raw file) whose m/n the stream computes from TOF with the identity
    corrections and the nominal t0 or flight length (neither given at import nor fitted by
    ``apt-daq calibrate``). A run apt-daq recorded or simulated knows its instrument."""
    imp = reader.meta.get("imported")
    if not imp or cal.mode != "tof" or cal.source == "calibrate" or not cal.is_identity:
        return None
    inst, known = reader.instrument, set(imp.get("instrument_known") or ())
    t0 = cal.t0_ns if cal.t0_ns is not None else getattr(inst, "t0_ns", 0.0)
    lf = cal.flight_path_mm if cal.flight_path_mm is not None else getattr(inst, "flight_path_mm", 0.0)
    nominal = [what for key, what in (("t0_ns", f"t0 {t0:g} ns"),
                                      ("flight_path_mm", f"flight path {lf:g} mm"))
               if key not in known]
    if not nominal:
        return None
    return (f"{reader.path}: m/n is uncalibrated: computed from TOF with the nominal "
            f"{' and '.join(nominal)}, no voltage or bowl correction; calibrate the run with "
            f"`apt-daq calibrate {reader.path} --elements ...` (the specimen's elements) and "
            "export again")


def _export(args: argparse.Namespace) -> int:
    n = export_run(args.file, args.format, args.output, overwrite=args.overwrite)
    what = "ranges" if args.format == "rrng" else "ions"
    print(f"{args.output}: {n} {what} written ({args.format})")
    return 0

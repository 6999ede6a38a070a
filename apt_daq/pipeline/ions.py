"""The calibrated ion stream: the one way from a run file to calibrated ions.

``analyze``, ``plot`` and every export read ions through :class:`IonStream`; none computes m/n
itself. A stream is a run file (simulated, acquired or imported) plus a :class:`Calibration`
(the model, stored in the run) plus a range table; iterating it yields :class:`IonChunk`
s of at most ``chunk`` ions (:data:`ION_CHUNK`, bounded memory), in evaporation order:

- ``hits``: the measured fields (HIT_DTYPE: pulse, tof, det_x, det_y, v_dc, v_pulse,
  laser_pj, multiplicity), from /hits (or decoded from /raw when only raw records exist);
- ``derived``: DERIVED_DTYPE with the calibrated m/n (float32, Da), its range index (-1
  unranged; the index of that float32 value, so a file written from the stream ranges the
  same), and x, y, z (nm): stored positions when the run has them (an imported file's
  reconstruction), else the streaming reconstruction (:mod:`apt_daq.pipeline.reconstruction`),
  else NaN;
- ``truth``: the aligned /truth rows of a simulated run, when asked for.

Where m/n comes from (:func:`run_calibration`):

1. the calibration stored in the run (/meta "calibration", written by ``apt-daq analyze`` or
   import), unless the caller recalibrates;
2. an imported run (EPOS, POS, APT): the file's own m/n, as is ("file" mode);
3. otherwise (a simulated or acquired run) the one m/n kernel
   (:func:`apt_daq.pipeline.tof.mass_da`) over TOF, detector position and voltage with the
   run's t0 and flight length, divided by the voltage and bowl corrections fitted on a
   reference peak (:func:`fit_run_calibration`); deterministic, so an export and an analysis
   of the same run agree even before the fit is stored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apt_daq.config import AnalysisConfig, InstrumentConfig
from apt_daq.errors import DataFileError, UserError
from apt_daq.hits import DERIVED_DTYPE
from apt_daq.pipeline.corrections import (
    Calibration,
    coeffs,
    corrected_mass_kernel,
    fit_calibration,
)
from apt_daq.pipeline.histogram import MassHistogram
from apt_daq.pipeline.process import derive
from apt_daq.pipeline.ranging import RangeLookup, propose_ranges, range_masses
from apt_daq.pipeline.reference import named_da, reference_range, refuse_moving_fit
from apt_daq.rangetable import RangeTable

ION_CHUNK = 1 << 19
"""Ions per stream chunk (bounded memory: ~17 MB of hits, ~9 MB derived). Below glibc's
32 MB ceiling for memory it maps afresh per allocation, so the chunk buffers are reused from
the heap instead of page-faulted in anew each chunk (1 M hits, 33 MB, streamed ~1.7x
slower)."""
FIT_SAMPLE = 2_000_000
log = logging.getLogger("apt_daq.pipeline")


@dataclass
class IonChunk:
    """One chunk of the stream: rows ``start:start + len`` of the run (see module doc)."""

    start: int
    hits: np.ndarray  # HIT_DTYPE
    derived: np.ndarray  # DERIVED_DTYPE: calibrated float32 mass, range index, x, y, z
    truth: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.hits)

    @property
    def mass(self) -> np.ndarray:
        return self.derived["mass"]

    @property
    def ion(self) -> np.ndarray:
        return self.derived["ion"]


# ------------------------------------------------------------------------------ run helpers
def run_analysis_config(reader) -> AnalysisConfig:
    """The run file's analysis section, or the defaults (an imported run has no config)."""
    try:
        rf = reader.run_file
    except Exception:  # an imported run may carry a partial config
        rf = None
    return rf.analysis if rf is not None else AnalysisConfig()


def is_imported(reader) -> bool:
    return bool(reader.meta.get("imported"))


def _hit_source(reader) -> str:
    if reader.has("hits"):
        return "hits"
    if reader.has("raw"):
        return "raw"
    return "none"


def _iter_hits(reader, instrument: InstrumentConfig | None, chunk: int) -> Iterator[np.ndarray]:
    """HIT_DTYPE chunks from /hits, or decoded from /raw when only raw records exist."""
    src = _hit_source(reader)
    if src == "hits":
        yield from reader.iter("hits", chunk)
    elif src == "raw":
        if instrument is None:
            raise DataFileError(f"{reader.path}: raw records but no instrument in /meta to "
                                "decode them with")
        from apt_daq.pipeline.process import process_chunk

        for raw in reader.iter("raw", chunk):
            yield process_chunk(raw, instrument, None)[0]


def has_tof(reader) -> bool:
    """True if the run's hits carry usable TOF and voltage (m/n can be computed)."""
    if _hit_source(reader) == "raw":
        return True
    n = reader.count("hits")
    if n == 0:
        return False
    h = reader.read("hits", 0, min(n, 100_000))
    ok = np.isfinite(h["tof"]) & (h["tof"] > 0) & np.isfinite(h["v_dc"]) & (h["v_dc"] > 0)
    return bool(ok.mean() > 0.5)


def position_source(reader) -> str:
    """"stored" (/derived x, y, z finite for every ion: an imported or reconstructed run),
    "reconstructed" (the streaming reconstruction, from the instrument) or "none"."""
    n = reader.count("hits")
    if n and reader.count("derived") == n:
        imp = reader.meta.get("imported") or {}
        if {"x", "y", "z"} <= set(imp.get("fields", ())):
            return "stored"
        finite = True
        for d in reader.iter("derived", ION_CHUNK):
            if not (np.isfinite(d["x"]).all() and np.isfinite(d["y"]).all()
                    and np.isfinite(d["z"]).all()):
                finite = False
                break
        if finite:
            return "stored"
    return "reconstructed" if reader.instrument is not None else "none"


def reconstructor_for(reader):
    """The streaming Reconstructor configured from the run: its instrument, its
    analysis.reconstruction config, the specimen's k_f and xi, and the run's evaporation
    field (:func:`apt_daq.pipeline.reconstruction.run_fields`)."""
    from apt_daq.pipeline.reconstruction import Reconstructor

    inst = reader.instrument
    try:
        rf = reader.run_file
    except Exception:
        rf = None
    if rf is None:
        return Reconstructor(inst)
    from apt_daq.pipeline.reconstruction import run_fields

    rc = rf.analysis.reconstruction
    f_e, source = run_fields(reader.meta, rf)
    rec = Reconstructor(inst, rc, inst.detection_efficiency,
                        rc.field_factor or rf.specimen.field_factor,
                        rc.image_compression or rf.specimen.image_compression, f_e)
    rec.field_source = source
    return rec


# ------------------------------------------------------------------------------ calibration
def stored_calibration(reader) -> Calibration | None:
    """The calibration stored in the run (/meta "calibration"), or None."""
    d = reader.meta.get("calibration")
    if not d:
        return None
    try:
        return Calibration.from_dict(d)
    except (TypeError, ValueError, KeyError) as e:
        raise DataFileError(f"{reader.path}: /meta calibration is not a calibration ({e})") from None


def run_calibration(reader, ranges: RangeTable | None = None,
                    analysis: AnalysisConfig | None = None, *,
                    recalibrate: bool = False) -> Calibration:
    """The calibration the stream applies to ``reader``'s run (see module doc, 1-3)."""
    if not recalibrate:
        cal = stored_calibration(reader)
        if cal is not None:
            return cal
        imp = reader.meta.get("imported")
        if imp and "mass" in imp.get("fields", ("mass",)):
            return Calibration.from_file(f"{imp.get('format', '?').upper()} {imp.get('file', '')}")
    return fit_run_calibration(reader, ranges, analysis or run_analysis_config(reader),
                               check_reference=True)


def _instrument(reader) -> InstrumentConfig:
    inst = reader.instrument
    if inst is None:
        raise DataFileError(f"{reader.path}: no instrument in /meta: cannot compute m/n")
    return inst


def fit_run_calibration(reader, ranges: RangeTable | None, analysis: AnalysisConfig, *,
                        check_reference: bool = False) -> Calibration:
    """Voltage and bowl corrections fitted on a reference peak of the run (AP Suite practice).

    One pass over the hits: uncorrected m/n (t0 and flight length of the instrument), a
    spectrum and a strided subsample (<= 2 M hits). The reference is the run's
    ``analysis.reference_peak``, else the most counted range within half the detector radius
    (:func:`reference_range`). Without ranges, ranges proposed from the run's ion table on the
    uncorrected spectrum serve only to find that peak (the analysis ranges the corrected
    spectrum). Without either, or with the corrections disabled, the identity, with a note.
    ``check_reference`` (a command's fit, not a live run's): a fit on a reference nobody named
    that moves the other peaks off their m/n is refused (:mod:`apt_daq.pipeline.reference`).
    """
    from apt_daq import __version__
    from apt_daq.io.store import now_iso

    path = reader.path
    inst = _instrument(reader)
    _refuse_refit(reader, inst, ranges)
    if not has_tof(reader):
        raise DataFileError(f"{path}: the hits carry no TOF and voltage: m/n cannot be computed "
                            "(an imported file's own m/n is used unless you recalibrate)")
    t0, lf = float(inst.t0_ns), float(inst.flight_path_mm)
    base: dict[str, Any] = dict(t0_ns=t0, flight_path_mm=lf, source="analyze", created=now_iso(),
                version=__version__)
    if not (analysis.voltage_correction or analysis.bowl_correction):
        return Calibration(notes=["corrections disabled in analysis config"], **base)
    n_hits = reader.count("hits") or reader.count("raw")
    stride = max(1, math.ceil(n_hits / FIT_SAMPLE))
    raw_hist = MassHistogram(0.01, 300.0)
    sample = []
    ident = Calibration()
    for hits in _iter_hits(reader, inst, ION_CHUNK):
        m = np.empty(len(hits), np.float64)
        corrected_mass_kernel(hits["tof"], hits["det_x"], hits["det_y"], hits["v_dc"],
                              hits["v_pulse"], t0, lf, 1.0, coeffs(ident.vc, 5),
                              coeffs(ident.bc, 6), m)
        raw_hist.add(m)
        s = slice(None, None, stride)
        # m[s].copy(): a strided view would keep every chunk's whole m alive
        sample.append((m[s].copy(), (hits["v_dc"][s] + hits["v_pulse"][s]).astype(np.float64),
                       hits["det_x"][s].astype(np.float64), hits["det_y"][s].astype(np.float64)))
    if not sample:
        return Calibration(notes=["no hits: nothing to fit"], **base)
    sm, sv, sx, sy = (np.concatenate([c[i] for c in sample]) for i in range(4))
    del sample
    if ranges is None or len(ranges) == 0:
        names = [str(row[0]) for row in reader.meta.get("ion_table") or []]
        if not names:
            return Calibration(notes=["no ranges and no ion table: no reference peak, m/n "
                                      "uncorrected"], **base)
        ranges = propose_ranges(raw_hist.counts, raw_hist.edges, names)
        if len(ranges) == 0:
            return Calibration(notes=["no peak of the ion table found: m/n uncorrected"], **base)
    raw_ion = range_masses(sm, ranges)
    rc_raw = np.bincount(raw_ion[raw_ion >= 0].astype(np.int64), minlength=len(ranges))
    named = analysis.reference_peak if analysis.reference_peak in ranges.names else None
    if named:
        ref = max(ranges.ranges_of(named), key=lambda i: rc_raw[i])
    else:
        ref = reference_range(raw_ion, sx, sy, 0.5 * inst.detector_diameter_mm, len(ranges))
    unnamed = None
    if analysis.reference_peak and not named:  # said: it was replaced without a word
        unnamed = (f"analysis.reference_peak {analysis.reference_peak} names no range: the "
                   f"corrections are fitted on {ranges.names[ref]}, the most counted central "
                   "range")
        log.warning("%s: %s", path, unnamed)
    lo, hi = ranges.lo_da[ref], ranges.hi_da[ref]
    w = max(hi - lo, 0.02 * hi)  # distortions of a few % must stay inside the fit window
    ref_da = named_da(ranges, ref) or 0.5 * (lo + hi)
    cal = fit_calibration(sm, sv, sx, sy, ref_da, lo - w, hi + w, 0.5 * inst.detector_diameter_mm,
                          voltage=analysis.voltage_correction, bowl=analysis.bowl_correction,
                          reference=ranges.names[ref])  # fmt: skip
    if check_reference and not named:  # the other peaks must stay where they were
        refuse_moving_fit(path, cal, sm, sv, sx, sy, raw_ion, ranges, ref)
    for k, v in base.items():
        setattr(cal, k, v)
    if unnamed:
        cal.notes.append(unnamed)
    return cal


def _refuse_refit(reader, inst: InstrumentConfig, ranges: RangeTable | None) -> None:
    """An imported file's own m/n is kept unless a refit from TOF can do better: not for a
    reflectron instrument (m/n = K V t^2 / L^2 holds for a straight flight only: a reflectron
    LEAP EPOS refitted put calcite's 40Ca2+ at 19.914 Da, MRP 424 -> 206), nor with no
    reference peak (its TOF-derived m/n, uncorrected, put 40Ca2+ at 19.6 Da, named Ni3+)."""
    if "mass" not in ((reader.meta.get("imported") or {}).get("fields") or ()):
        return
    if inst.reflectron:
        raise DataFileError(f"{reader.path}: --recalibrate refits m/n from TOF with a straight "
                            "flight path, and this run's instrument has a reflectron: keep the "
                            "file's own m/n (leave out --recalibrate)")
    if (ranges is None or len(ranges) == 0) and not reader.meta.get("ion_table"):
        raise DataFileError(f"{reader.path}: --recalibrate needs a reference peak: give --ranges "
                            "(a range file for this run), or `apt-daq calibrate --elements "
                            "...`; without --recalibrate the file's own m/n is used")


def store_calibration(path: str | Path, cal: Calibration, ranges: RangeTable | None = None) -> bool:
    """Write ``cal`` (and ``ranges``, if given: ranges the analysis proposed) into the run's
    /meta, so the stream of every later command reloads it. A run still being written, or a
    file that cannot be opened for writing, is left alone (returns False, with a warning)."""
    import h5py

    from apt_daq.io import store
    from apt_daq.rangetable import table_to_meta

    path = Path(path)
    writer_of = getattr(store, "writer_of", None)  # the store's writer lock, when it has one
    if writer_of is not None and writer_of(path) is not None:
        log.warning("%s: a run is writing it: calibration not stored", path)
        return False
    try:
        with h5py.File(path, "r+") as f:
            meta = f["meta"]
            if store.read_meta(meta).get("state") == "running":
                log.warning("%s: the run is still being written: calibration not stored", path)
                return False
            store.write_meta(meta, "calibration", cal.as_dict())
            if ranges is not None:
                store.write_meta(meta, "ranges", table_to_meta(ranges))
    except (OSError, KeyError) as e:
        log.warning("%s: calibration not stored (%s)", path, e)
        return False
    return True


# ------------------------------------------------------------------------------ the stream
class IonStream:
    """Calibrated ions of a run, chunk by chunk (see module doc). Iterate it as often as
    needed while ``reader`` is open; each pass reads the file again (bounded memory).

    ``positions``: "stored", "reconstructed", "none" or None (decided from the run:
    :func:`position_source`). ``truth``: attach /truth rows (when aligned with /hits).
    """

    def __init__(self, reader, calibration: Calibration, ranges: RangeTable | None = None, *,
                 positions: str | None = None, truth: bool = False, chunk: int = ION_CHUNK):
        self.reader = reader
        self.calibration = calibration
        self.ranges = ranges
        self.chunk = int(chunk)
        self.instrument = reader.instrument
        self.source = _hit_source(reader)
        self.n = reader.count("hits") if self.source == "hits" else reader.count("raw")
        if calibration.mode == "file":
            if self.source != "hits" or reader.count("derived") != reader.count("hits"):
                raise DataFileError(f"{reader.path}: /derived has {reader.count('derived')} "
                                    f"rows for {reader.count('hits')} hits: no m/n of the "
                                    "imported file to use")
        else:
            inst = self.instrument
            if inst is None and (calibration.t0_ns is None or calibration.flight_path_mm is None):
                raise DataFileError(f"{reader.path}: no instrument in /meta: cannot compute m/n")
            self.t0_ns = float(calibration.t0_ns if calibration.t0_ns is not None else inst.t0_ns)
            self.flight_path_mm = float(calibration.flight_path_mm
                                        if calibration.flight_path_mm is not None
                                        else inst.flight_path_mm)
        if positions is None:
            positions = position_source(reader) if self.source == "hits" else (
                "reconstructed" if self.instrument is not None else "none")
        if positions == "stored" and self.source != "hits":
            positions = "none"
        if positions == "reconstructed" and self.instrument is None:
            positions = "none"
        self.positions = positions
        self.with_truth = bool(truth and reader.has("truth") and self.source == "hits"
                               and reader.count("truth") == reader.count("hits"))
        self.reconstructor = None  # the last pass's (its depth, k_f, xi...)
        self.lookup = RangeLookup.build(ranges)  # ranging by table, built once per stream

    def __len__(self) -> int:
        return self.n

    def _mass(self, hits: np.ndarray, derived: np.ndarray | None) -> np.ndarray:
        if self.calibration.mode == "file":
            assert derived is not None  # mode "file" reads /derived
            return np.ascontiguousarray(derived["mass"], np.float32)
        cal = self.calibration
        out = np.empty(len(hits), np.float32)
        corrected_mass_kernel(hits["tof"], hits["det_x"], hits["det_y"], hits["v_dc"],
                              hits["v_pulse"], self.t0_ns, self.flight_path_mm, float(cal.beta),
                              coeffs(cal.vc, 5), coeffs(cal.bc, 6), out)  # fmt: skip
        return out

    def __iter__(self) -> Iterator[IonChunk]:
        r = self.reader
        need_derived = self.calibration.mode == "file" or self.positions == "stored"
        rec = None
        if self.positions == "reconstructed":
            rec = reconstructor_for(r)
            self.reconstructor = rec
        start = 0
        if self.source == "hits":
            hit_iter = r.iter("hits", self.chunk)
        else:
            hit_iter = _iter_hits(r, self.instrument, self.chunk)
        for hits in hit_iter:
            k = len(hits)
            stored = r.read("derived", start, start + k) if need_derived else None
            if self.calibration.mode == "file":
                out = np.empty(k, DERIVED_DTYPE)
                out["mass"] = self._mass(hits, stored)
                out["ion"] = range_masses(out["mass"], self.ranges, self.lookup)
            else:  # m/n, range and positions (a schedule's per-step fields: apart)
                out = derive(hits, self.calibration, self.t0_ns, self.flight_path_mm,
                             self.lookup, rec if rec is not None and not rec.step_fields
                             else None)  # fmt: skip
            if self.positions == "stored":
                assert stored is not None  # positions "stored" read /derived
                out["x"], out["y"], out["z"] = stored["x"], stored["y"], stored["z"]
            elif rec is not None and (self.calibration.mode == "file" or rec.step_fields):
                out["x"], out["y"], out["z"] = rec.process(hits)
            elif self.calibration.mode == "file":  # derive() wrote NaN already
                out["x"] = out["y"] = out["z"] = np.nan
            truth = r.read("truth", start, start + k) if self.with_truth else None
            yield IonChunk(start, hits, out, truth)
            start += k

    def ion_records(self) -> Iterator[np.ndarray]:
        """The stream as interchange records (:data:`apt_daq.io._common.ION_DTYPE`) for the
        POS/EPOS/APT/NeXus writers; positions of a run without any are written as 0."""
        if self.positions == "none":
            log.warning("%s: no reconstructed positions and no instrument to reconstruct with: "
                        "x, y, z exported as 0", self.reader.path)
        for c in self:
            yield ion_records(c, self.positions)


def ion_records(chunk: IonChunk, positions: str = "stored") -> np.ndarray:
    """One stream chunk as :data:`apt_daq.io._common.ION_DTYPE` records (x, y, z = 0 when
    ``positions`` is "none")."""
    from apt_daq.io._common import ION_DTYPE

    out = np.empty(len(chunk), ION_DTYPE)
    for f in ("tof", "v_dc", "v_pulse", "det_x", "det_y", "pulse", "multiplicity"):
        out[f] = chunk.hits[f]
    for f in ("mass", "x", "y", "z"):
        out[f] = chunk.derived[f]
    if positions == "none":
        out["x"] = out["y"] = out["z"] = 0.0
    return out


def open_stream(reader, ranges: RangeTable | None = None, *, calibration: Calibration | None = None,
                recalibrate: bool = False, use_run_ranges: bool = True, **kw) -> IonStream:
    """The stream of ``reader``'s run: ``ranges`` (default: the run's own, when
    ``use_run_ranges``) and its calibration (:func:`run_calibration` unless given)."""
    if ranges is None and use_run_ranges:
        from apt_daq.io.ranges import run_range_table

        ranges = run_range_table(reader)[0]
    if calibration is None:
        calibration = run_calibration(reader, ranges, recalibrate=recalibrate)
    return IonStream(reader, calibration, ranges, **kw)


def require_ranges_or_ions(reader, ranges: RangeTable | None) -> None:
    if ranges is None and not reader.meta.get("ion_table"):
        raise UserError(f"{reader.path}: no range file (give --ranges FILE) and no ion table to "
                        "propose ranges from")

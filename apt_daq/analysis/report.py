"""Analysis of a stored run: masses from /hits with fitted corrections, then everything else.

``analyze_run(path, ranges_path=None, roi=None) -> dict`` is what ``apt-daq analyze --json``
prints. It streams /hits twice (bounded memory apart from the per-ion range index of the
analysed region, 2 bytes an ion, kept for FDA):

1. raw m/n of every hit; counts per range; a strided subsample (<= 2 M hits) on which the
   voltage and bowl corrections are fitted around the reference peak;
2. corrected m/n, ranging, mass spectrum, reconstruction (streaming Bas/Geiser), ROI,
   counts, profile, hit map, slices, MRP peak samples and truth scoring.

Masses are recomputed from /hits (never taken from /derived): the stored /derived masses were
computed per chunk during acquisition, before any correction could be fitted on the whole run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from apt_daq.analysis.composition import Composition, composition
from apt_daq.analysis.fda import FdaResult, fda
from apt_daq.analysis.mrp import main_peaks, mrp
from apt_daq.analysis.profile import ProfileAccumulator
from apt_daq.analysis.ratios import ratios
from apt_daq.analysis.reconstruction import Reconstructor
from apt_daq.analysis.roi import Roi, parse_roi
from apt_daq.analysis.truth import TruthScorer
from apt_daq.config import AnalysisConfig, InstrumentConfig
from apt_daq.errors import DataFileError, UserError
from apt_daq.io.ranges import RangeTable, read_ranges, run_range_table
from apt_daq.pipeline.corrections import Calibration, corrected_mass, fit_calibration
from apt_daq.pipeline.histogram import MassHistogram
from apt_daq.pipeline.ranging import propose_ranges, range_masses

CHUNK = 1_000_000
FIT_SAMPLE = 2_000_000
SLICE_POINTS = 300_000


@dataclass
class RunAnalysis:
    """Everything ``analyze`` computes; ``summary`` is the JSON dict, the rest feeds the plots."""

    summary: dict[str, Any]
    ranges: RangeTable
    spectrum: MassHistogram
    hitmap: tuple[np.ndarray, np.ndarray, np.ndarray]  # counts, x edges, y edges (mm)
    fda: dict[str, FdaResult]
    profile: dict
    slices: dict[str, np.ndarray]  # x, y, z (nm), ion (range index) of a subsample
    calibration: Calibration
    composition: Composition | None = None
    extras: dict = field(default_factory=dict)


def _load_ranges(reader, ranges_path: str | Path | None) -> tuple[RangeTable | None, str]:
    if ranges_path is not None:
        return read_ranges(ranges_path), str(ranges_path)
    return run_range_table(reader)


def _hits_iter(reader, instrument: InstrumentConfig):
    """Yield HIT_DTYPE chunks from /hits, or decoded from /raw when only raw records exist."""
    if reader.has("hits"):
        yield from reader.iter("hits", CHUNK)
    elif reader.has("raw"):
        from apt_daq.pipeline.process import process_chunk

        for raw in reader.iter("raw", CHUNK):
            hits, _d, _k, _c = process_chunk(raw, instrument, None)
            yield hits


def analyze(
    path: str | Path,
    ranges_path: str | Path | None = None,
    roi: str | None = None,
    *,
    subtract_background: bool = False,
    select: Callable[[np.ndarray], np.ndarray] | None = None,
) -> RunAnalysis:
    """Analyse a run file (see module doc). ``roi``: 'cylinder:25', 'box:..', 'none', or None
    for the run file's ``analysis.roi``.

    ``select``: optional function of a HIT_DTYPE chunk returning a boolean mask; hits outside
    it are left out of every result (counts, spectrum, hit map, FDA, profile, slices, truth),
    but still reconstructed, so depths stay those of the whole run. E.g.
    :func:`laser_pj_select` for one step of a laser-energy schedule. The corrections are
    fitted on the whole run.
    """
    from apt_daq.io.store import RunReader

    with RunReader(path) as r:
        instrument = r.instrument
        if instrument is None:
            raise DataFileError(f"{path}: no instrument in /meta: cannot compute m/n")
        try:
            rf = r.run_file
        except Exception:
            rf = None
        acfg = rf.analysis if rf is not None else AnalysisConfig()
        ranges, ranges_src = _load_ranges(r, ranges_path)
        n_hits = r.count("hits") if r.has("hits") else r.count("raw")
        if n_hits == 0:
            raise DataFileError(f"{path}: no hits to analyse")
        ion_table = r.meta.get("ion_table") or []
        t0, lf = instrument.t0_ns, instrument.flight_path_mm

        # ---- pass 1: raw masses, range counts, fit subsample
        stride = max(1, math.ceil(n_hits / FIT_SAMPLE))
        sample = []
        raw_hist = MassHistogram(0.01, 300.0)
        for hits in _hits_iter(r, instrument):
            m = corrected_mass(hits, t0, lf)
            raw_hist.add(m)
            s = slice(None, None, stride)
            sample.append((m[s], (hits["v_dc"][s] + hits["v_pulse"][s]).astype(np.float64),
                           hits["det_x"][s].astype(np.float64), hits["det_y"][s].astype(np.float64)))  # fmt: skip
        sm, sv, sx, sy = (np.concatenate([c[i] for c in sample]) for i in range(4))
        del sample
        if ranges is None:
            names = [str(row[0]) for row in ion_table]
            if not names:
                raise UserError(
                    f"{path}: no range file (give --ranges FILE) and no ion table to propose ranges from"
                )
            ranges = propose_ranges(raw_hist.counts, raw_hist.edges, names)
            ranges_src = "proposed from the ion table (assisted ranging)"
        if len(ranges) == 0:
            raise UserError(f"{path}: the range table is empty")
        max_da = float(ranges.hi_da.max()) + 20.0

        # ---- corrections on the reference peak
        raw_ion = range_masses(sm, ranges)
        rc_raw = np.bincount(raw_ion[raw_ion >= 0].astype(np.int64), minlength=len(ranges))
        if acfg.reference_peak and acfg.reference_peak in ranges.names:
            cands = ranges.ranges_of(acfg.reference_peak)
            ref = max(cands, key=lambda i: rc_raw[i])
        else:
            ref = _reference_range(raw_ion, sx, sy, 0.5 * instrument.detector_diameter_mm,
                                   len(ranges))
        lo, hi = ranges.lo_da[ref], ranges.hi_da[ref]
        w = max(hi - lo, 0.02 * hi)  # distortions of a few % must stay inside the fit window
        from apt_daq.isotopes import isotopologues

        peaks = [m for m, _ in isotopologues(ranges.composition[ref], ranges.charge[ref])
                 if lo <= m < hi]  # fmt: skip
        ref_da = peaks[0] if peaks else 0.5 * (lo + hi)
        if acfg.voltage_correction or acfg.bowl_correction:
            cal = fit_calibration(sm, sv, sx, sy, ref_da, lo - w, hi + w,
                                  0.5 * instrument.detector_diameter_mm,
                                  voltage=acfg.voltage_correction, bowl=acfg.bowl_correction,
                                  reference=ranges.names[ref])  # fmt: skip
        else:
            cal = Calibration(reference="", notes=["corrections disabled in analysis config"])
        del sm, sv, sx, sy

        # ---- pass 2
        roi_obj: Roi | None = parse_roi(roi if roi is not None else acfg.roi)
        recon_cfg = acfg.reconstruction
        k_f = recon_cfg.field_factor or (rf.specimen.field_factor if rf is not None else None)
        xi = recon_cfg.image_compression or (
            rf.specimen.image_compression if rf is not None else None
        )
        recon = Reconstructor(instrument, recon_cfg, instrument.detection_efficiency, k_f, xi)
        hist = MassHistogram(0.001, max_da)
        rc_all = np.zeros(len(ranges), dtype=np.int64)
        rc_roi = np.zeros(len(ranges), dtype=np.int64)
        roi_ions: list[np.ndarray] = []
        profile = ProfileAccumulator(ranges, 1.0)
        det_r = 0.5 * instrument.detector_diameter_mm
        hm_edges = np.linspace(-det_r, det_r, 129)
        hitmap = np.zeros((128, 128), dtype=np.int64)
        counts_by_ion_raw = {n: 0.0 for n in ranges.ions}
        for i, n in enumerate(ranges.names):
            counts_by_ion_raw[n] += float(rc_raw[i])
        mrp_peaks = main_peaks(ranges, counts_by_ion_raw, top=5)
        mrp_mass: list[list[np.ndarray]] = [[] for _ in mrp_peaks]
        slice_stride = max(1, math.ceil(n_hits / SLICE_POINTS))
        sl: dict[str, list[np.ndarray]] = {"x": [], "y": [], "z": [], "ion": []}
        has_truth = r.has("truth") and r.count("truth") == r.count("hits")
        scorer = TruthScorer(ion_table, ranges) if has_truth and ion_table else None
        truth_iter = r.iter("truth", CHUNK) if scorer is not None else None
        n_roi = 0
        n_selected = 0
        for hits in _hits_iter(r, instrument):
            m = corrected_mass(hits, t0, lf, cal)
            ion = range_masses(m, ranges)
            x, y, z = recon.process(hits)
            truth = next(truth_iter) if truth_iter is not None else None
            if select is not None:
                keep = np.asarray(select(hits), dtype=bool)
                hits, m, ion, x, y, z = hits[keep], m[keep], ion[keep], x[keep], y[keep], z[keep]
                truth = truth[keep] if truth is not None else None
                n_selected += len(hits)
            hist.add(m)
            rc_all += np.bincount(ion[ion >= 0].astype(np.int64), minlength=len(ranges))
            inside = roi_obj.mask(x, y, z) if roi_obj is not None else np.ones(len(m), bool)
            sel = inside & (ion >= 0)
            n_roi += int(inside.sum())
            rc_roi += np.bincount(ion[sel].astype(np.int64), minlength=len(ranges))
            roi_ions.append(ion[sel])
            profile.add(z[inside], ion[inside])
            hitmap += np.histogram2d(hits["det_x"], hits["det_y"], [hm_edges, hm_edges])[0].astype(
                np.int64
            )
            for j, (_name, m0) in enumerate(mrp_peaks):
                near = np.abs(m - m0) < max(0.5, 0.03 * m0)
                mrp_mass[j].append(m[near & inside])
            s = slice(None, None, slice_stride)
            for k, a in (("x", x), ("y", y), ("z", z), ("ion", ion)):
                sl[k].append(a[s])
            if scorer is not None:
                scorer.add(truth, ion, x, y, z)
        if select is not None and n_selected == 0:
            raise UserError(f"{path}: the selection keeps no hits")
        if scorer is not None and r.has("lost") and select is None:
            for lost in r.iter("lost", CHUNK):
                scorer.add_lost(lost)
        meta_counters = r.meta.get("counters")

    # ---- results
    spectrum = (hist.counts, hist.edges)
    comp, counts_by_ion = composition(rc_roi, ranges, spectrum, subtract_background)
    rat, rat_err = ratios(counts_by_ion, comp.atoms)
    seq = np.concatenate(roi_ions) if roi_ions else np.zeros(0, np.int16)
    ion_of_range = ranges.ion_index()
    fda_res: dict[str, FdaResult] = {}
    ion_names = ranges.ions
    for sp in acfg.fda_ions:
        if sp in ion_names and len(seq):
            is_sp = ion_of_range[seq.astype(np.int64)] == ion_names.index(sp)
            fda_res[sp] = fda(is_sp, acfg.fda_block_ions, sp)
    peaks = [(name, m0) for name, m0 in mrp_peaks]
    mrp_list = mrp(
        np.concatenate([np.concatenate(a) if a else np.zeros(0) for a in mrp_mass]
                       or [np.zeros(0)]), peaks  # a run too short to have a reference peak
    )
    summary: dict[str, Any] = {
        "file": str(path),
        "ions": int(n_roi),
        "ions_total": int(n_hits),
        "ranged_ions": int(rc_roi.sum()),
        "ranged_ions_total": int(rc_all.sum()),
        "roi": roi_obj.describe() if roi_obj is not None else "all ions",
        "ranges": ranges_src,
        "composition": {
            el: {"fraction": comp.fraction(el), "error": comp.error(el)} for el in comp.atoms
        },
        "ion_counts": {k: round(v) for k, v in counts_by_ion.items()},
        "ratios": rat,
        "ratio_errors": rat_err,
        "mrp": mrp_list,
        "fda": {k: v.as_dict() for k, v in fda_res.items()},
        "calibration": cal.as_dict(),
        "reconstruction": {
            "method": recon.method,
            "k_f": recon.k_f,
            "xi": recon.xi,
            "evaporation_field_v_per_nm": recon.f_e,
            "depth_nm": recon.z_nm,
        },
        "background_subtracted": bool(subtract_background),
    }
    if meta_counters:
        summary["counters"] = meta_counters
    if select is not None:
        summary["ions_selected"] = int(n_selected)
    if scorer is not None:
        summary["truth"] = scorer.result({el: comp.fraction(el) for el in comp.atoms})
    slices = {k: np.concatenate(v) if v else np.zeros(0) for k, v in sl.items()}
    return RunAnalysis(summary, ranges, hist, (hitmap, hm_edges, hm_edges), fda_res,
                       profile.result(min_atoms=20), slices, cal, comp)  # fmt: skip


def laser_pj_select(laser_pj: float, tol_pj: float = 0.01) -> Callable[[np.ndarray], np.ndarray]:
    """A ``select`` for :func:`analyze`: the hits taken at one laser energy (a schedule step)."""

    def sel(hits: np.ndarray) -> np.ndarray:
        return np.abs(hits["laser_pj"].astype(np.float64) - laser_pj) <= tol_pj

    return sel


def _reference_range(ion: np.ndarray, x_mm: np.ndarray, y_mm: np.ndarray, radius_mm: float,
                     n_ranges: int) -> int:
    """The range to fit the corrections on: the most counted one in the central half of the
    detector radius. A bowl correction needs its reference across the field of view; a peak
    that only lands at the rim (the Cr of a coating shell, ~30 % of a coated run's ions) leaves
    the centre to extrapolation. Falls back to the most counted range overall."""
    ok = ion >= 0
    central = ok & (np.hypot(x_mm, y_mm) < 0.5 * radius_mm)
    use = central if central.any() else ok
    return int(np.argmax(np.bincount(ion[use].astype(np.int64), minlength=n_ranges)))


def settled_select(path: str | Path, fraction: float = 0.5) -> Callable[[np.ndarray], np.ndarray]:
    """A ``select`` for :func:`analyze`: the hits from the first readout block whose detection
    rate reached ``fraction`` of the run's target on, i.e. without the ramp-up, whose hits are
    mostly detector background at ~0.03 % per pulse (AP Suite users crop it the same way).
    A run that never settled keeps all its hits."""
    from apt_daq.io.store import RunReader

    with RunReader(path) as r:
        rf = r.run_file
        if not r.has("log") or rf is None:
            raise DataFileError(f"{path}: no {'/log' if rf else 'run file in /meta'}: cannot "
                                "tell the ramp-up from the acquisition")
        log = r.read("log")
        target = rf.run.target_detection_rate
    ok = np.nonzero(log["rate"] >= fraction * target)[0]
    if len(ok) == 0:
        first = 0
    else:  # the block's first pulse: the previous log row's count
        first = int(log["pulses"][ok[0] - 1]) if ok[0] > 0 else 0

    def sel(hits: np.ndarray) -> np.ndarray:
        return hits["pulse"] >= first

    return sel


def analyze_run(
    path: str | Path, ranges_path: str | Path | None = None, roi: str | None = None
) -> dict:
    """The JSON summary of :func:`analyze` (keys: ions, ranged_ions, composition {el:
    {fraction, error}}, ion_counts, ratios, mrp, fda {species: {mu, chi2, blocks}}, truth...)."""
    return _jsonable(analyze(path, ranges_path, roi).summary)


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    return o

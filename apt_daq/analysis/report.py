"""Analysis of a stored run: everything computed from its calibrated ion stream.

``analyze_run(path, ranges_path=None, roi=None) -> dict`` is what ``apt-daq analyze --json``
prints. Every m/n comes from the run's ion stream (:mod:`apt_daq.pipeline.ions`): the stored
calibration, an imported file's own m/n, or voltage and bowl corrections fitted on a
reference peak; ``export`` writes the same masses. Every pass streams the run in chunks, so
memory does not grow with the run (tests/analysis/test_bounded_memory.py): FDA counts blocks
as the ions come (:class:`~apt_daq.analysis.fda.FdaAccumulator`), the MRP peaks keep a
counter per float32 m/n value of their windows (:class:`~apt_daq.analysis.mrp.WindowCounts`,
exactly the masses), slices a strided subsample. Passes over the run:

1. (only without a stored calibration, on a run with TOF) the fit of the corrections;
2. (only without ranges) ranges proposed on the calibrated spectrum (ranging on the corrected
   spectrum, always);
3. the stream with ranges and positions, one read of each chunk feeding every result at once
   (:class:`~apt_daq.analysis.ionpass.IonPass`, one fused kernel): the spectrum of every hit
   whose counts per range pick the peaks whose resolving power is measured (MRP window
   counters are kept for every ion's main peak, the five are picked at the end), counts,
   spectrum, ROI, profile, hit map, slices, the fine spectrum (0.5 mDa bins) of the per-peak
   table (``peaks``: per range its isotope, apex, counts, flank background, FWHM, MRP at 50
   and 10 % of that isotope peak alone; :func:`apt_daq.analysis.mrp.peak_table`), FDA blocks,
   multi-hit events and truth scoring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from apt_daq.analysis.composition import Composition, composition, range_background
from apt_daq.analysis.fda import FdaResult
from apt_daq.analysis.ionpass import SLICE_POINTS as SLICE_POINTS  # re-exported
from apt_daq.analysis.ionpass import IonPass
from apt_daq.analysis.mrp import mrp_and_peak_table
from apt_daq.analysis.multihit import multihit_unavailable
from apt_daq.analysis.ratios import ratios
from apt_daq.analysis.roi import Roi, parse_roi
from apt_daq.analysis.truth import TruthScorer
from apt_daq.errors import DataFileError, UserError
from apt_daq.io.ranges import run_range_table
from apt_daq.isotopes import parse_ion
from apt_daq.pipeline.autorange import auto_ranges
from apt_daq.pipeline.corrections import Calibration
from apt_daq.pipeline.histogram import MassHistogram
from apt_daq.pipeline.ions import (
    ION_CHUNK,
    IonStream,
    reference_range,
    run_analysis_config,
    run_calibration,
    store_calibration,
)
from apt_daq.rangetable import RangeTable

CHUNK = ION_CHUNK
_reference_range = reference_range  # kept for callers of the old name


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
    if ranges_path is not None:  # any range file import --ranges takes (ifes formats too)
        from apt_daq.io.rangefiles import read_range_file

        return read_range_file(ranges_path), str(ranges_path)
    return run_range_table(reader)


def analyze(
    path: str | Path,
    ranges_path: str | Path | None = None,
    roi: str | None = None,
    *,
    subtract_background: bool = False,
    select: Callable[[np.ndarray], np.ndarray] | None = None,
    recalibrate: bool = False,
    store: bool = False,
) -> RunAnalysis:
    """Analyse a run file (see module doc). ``roi``: 'cylinder:25', 'box:..', 'none', or None
    for the run file's ``analysis.roi``.

    ``select``: optional function of a HIT_DTYPE chunk returning a boolean mask; hits outside
    it are left out of every result (counts, spectrum, hit map, FDA, profile, slices, truth),
    but still reconstructed, so depths stay those of the whole run. E.g.
    :func:`laser_pj_select` for one step of a laser-energy schedule. The calibration is that
    of the whole run.

    ``recalibrate``: fit the corrections again from TOF and voltage, ignoring a stored
    calibration and an imported file's m/n. ``store``: write the calibration (and ranges the
    analysis proposed) into the run, so later commands (export, plot) reload it.
    """
    from apt_daq.io.store import RunReader

    with RunReader(path) as r:
        acfg = run_analysis_config(r)
        ranges, ranges_src = _load_ranges(r, ranges_path)
        n_hits = r.count("hits") if r.has("hits") else r.count("raw")
        if n_hits == 0:
            raise DataFileError(f"{path}: no hits to analyse")
        if ranges is not None and len(ranges) == 0:
            raise UserError(f"{path}: the range table is empty")
        ion_table = r.meta.get("ion_table") or []
        cal = run_calibration(r, ranges, acfg, recalibrate=recalibrate)
        proposed = None
        if ranges is None:  # proposed on the calibrated spectrum (a pass of its own)
            ranges, ranges_src = _proposed_ranges(r, path, cal, ion_table)
            proposed = ranges
        # ---- the pass: the stream with ranges and positions, every result at once
        roi_obj: Roi | None = _placed(parse_roi(roi if roi is not None else acfg.roi),
                                      lambda: IonStream(r, cal, ranges))
        stream = IonStream(r, cal, ranges, truth=True)
        inst = r.instrument
        acc = IonPass(ranges, roi_obj, 0.5 * (inst.detector_diameter_mm if inst is not None
                                              else 80.0), n_hits,
                      TruthScorer(ion_table, ranges) if stream.with_truth and ion_table
                      else None, acfg)
        acc.consume(stream, select)
        acc.finish()
        if acc.needs_reread():  # a main peak's window was not counted from the first chunk
            for c in IonStream(r, cal, ranges):
                acc.add_windows(c, select)
                if not acc.needs_reread():
                    break
        if select is not None and acc.n_selected == 0:
            raise UserError(f"{path}: the selection keeps no hits")
        if acc.scorer is not None and r.has("lost") and select is None:
            for lost in r.iter("lost", CHUNK):
                acc.scorer.add_lost(lost)
        meta_counters = r.meta.get("counters")
        no_events = multihit_unavailable(r.meta)
        positions = stream.positions
        recon = stream.reconstructor

    if store:
        store_calibration(path, cal, proposed)

    return _results(path, acc, cal, acfg, ranges_src, roi_obj, n_hits, subtract_background,
                    select is not None, (meta_counters, positions, recon, no_events))


def _placed(roi: Roi | None, stream: Callable[[], Iterable]) -> Roi | None:
    """A box ROI without a z centre centred on the middle of the run's depth range, found by
    a pass of its own over ``stream()`` (z only); any other ROI as it is."""
    if roi is None or not roi.needs_depth:
        return roi
    lo, hi = math.inf, -math.inf
    for c in stream():
        z = c.derived["z"]
        z = z[np.isfinite(z)]
        if len(z):
            lo, hi = min(lo, float(z.min())), max(hi, float(z.max()))
    return roi.placed(lo, hi)


def _results(path: str | Path, acc: IonPass, cal: Calibration, acfg, ranges_src: str,
             roi_obj: Roi | None, n_hits: int, subtract_background: bool, selected: bool,
             run: tuple) -> RunAnalysis:
    """The RunAnalysis of what the pass accumulated: composition, ratios, FDA, MRP, the JSON
    summary; ``run`` is (meta counters, positions, reconstructor, why multi-hits cannot be
    counted or None) of the run read."""
    meta_counters, positions, recon, no_events = run
    ranges = acc.ranges
    mrp_list, peak_rows = mrp_and_peak_table(ranges, acc.fine.counts, acc.fine.edges,
                                             acc.mrp_peaks, acc.mrp_win)
    # the per-peak table's background (the same estimator on the same spectrum) is the one
    # the composition takes off: its ion counts are the table's nets summed per ion. The
    # spectrum holds every ion analysed: in a ROI, its share of them.
    bg, bg_err = range_background(acc.fine.counts, acc.fine.edges, ranges)
    notes = _background_notes(peak_rows, bg_err)
    n_all = acc.n_selected if selected else n_hits
    share = acc.n_roi / n_all if roi_obj is not None and n_all > 0 else 1.0
    comp, counts_by_ion = composition(acc.rc_roi, ranges, None, subtract_background,
                                      background=bg * share, background_error=bg_err * share)
    rat, rat_err = ratios(counts_by_ion, comp.atoms)
    if subtract_background:  # a net count's error is more than its Poisson error
        var = acc.rc_roi + (bg_err * share) ** 2
        var_by_ion = {name: float(var[[k for k, n in enumerate(ranges.names) if n == name]].sum())
                      for name in counts_by_ion}
        for key, r in rat.items():
            a, _, b = key.partition("/")
            if a in var_by_ion and b in var_by_ion:
                rat_err[key] = r * math.sqrt(var_by_ion[a] / counts_by_ion[a] ** 2
                                             + var_by_ion[b] / counts_by_ion[b] ** 2)
    fda_res = {sp: a.result() for sp, (_, a) in acc.fda.items() if a.n_ions}
    summary: dict[str, Any] = {
        "file": str(path),
        "ions": int(acc.n_roi),
        "ions_total": int(n_hits),
        "ranged_ions": int(acc.rc_roi.sum()),
        "ranged_ions_total": int(acc.rc_all.sum()),
        "roi": roi_obj.describe() if roi_obj is not None else "all ions",
        "roi_spec": roi_obj.spec() if roi_obj is not None else None,  # as placed (plots)
        "ranges": ranges_src,
        "mass_source": ("the imported file's m/n" if cal.mode == "file"
                        else "TOF and voltage, calibrated"),
        "composition": {
            el: {"fraction": comp.fraction(el), "error": comp.error(el)} for el in comp.atoms
        },
        "ion_counts": {k: round(v) for k, v in counts_by_ion.items()},
        "ratios": rat,
        "ratio_errors": rat_err,
        "mrp": mrp_list,
        "peaks": peak_rows,
        "fda": {k: v.as_dict() for k, v in fda_res.items()},
        # why an asked-for ion has no FDA ({} alone told a JSON reader nothing)
        "fda_missing": {sp: ("no range names it" if sp not in acc.fda else
                             "no ion of it in the ROI")
                        for sp in acfg.fda_ions if sp not in fda_res},
        "calibration": cal.as_dict(),
        "positions": positions,
        "background_subtracted": bool(subtract_background),
        "background_notes": notes,
    }
    if recon is not None:
        summary["reconstruction"] = _reconstruction_summary(recon)
    mh = None if no_events else acc.multihit.result()
    summary["multihit"] = ({"available": False, "reason": no_events} if mh is None
                           else {"available": True, **mh.as_dict()})
    if meta_counters:
        summary["counters"] = meta_counters
    if selected:
        summary["ions_selected"] = int(acc.n_selected)
    if acc.scorer is not None:
        summary["truth"] = acc.scorer.result({el: comp.fraction(el) for el in comp.atoms})
    slices = {k: np.concatenate(v) if v else np.zeros(0) for k, v in acc.sl.items()}
    return RunAnalysis(summary, ranges, acc.spectrum, (acc.hitmap, acc.hm_edges, acc.hm_edges),
                       fda_res, acc.profile.result(min_atoms=20), slices, cal, comp,
                       {"multihit": mh})  # fmt: skip


def _background_notes(rows: list[dict], bg_err: np.ndarray) -> list[str]:
    """Gives each per-peak row its ``net_error`` (Poisson of its counts and the error of its
    background) and returns a line for each row whose net is below zero by more than it:
    more background estimated than ions counted (a misplaced range, or a background that is
    not flat there)."""
    out = []
    for row, e in zip(rows, bg_err, strict=True):
        err = math.sqrt(row["counts"] + float(e) ** 2)
        row["net_error"] = round(err, 1)
        if row["net"] < -err:
            out.append(f"range {row['range']} {row['ion']} ({row['lo_da']:g}-{row['hi_da']:g} "
                       f"Da): net {row['net']:g} +- {err:.1f}, more background "
                       f"({row['background']:g}) than ions ({row['counts']}) beyond its error")
    return out


def _proposed_ranges(r, path: str | Path, cal: Calibration, ion_table: list
                     ) -> tuple[RangeTable, str]:
    """No range file: the unsupervised engine of `apt-daq range` on the calibrated spectrum;
    a simulated run names its elements (as a user names a specimen's)."""
    elements = sorted({el for row in ion_table for el in parse_ion(str(row[0]))[0]}) or None
    ranges = auto_ranges(IonStream(r, cal, None, positions="none"), elements)
    src = ("found on the calibrated spectrum with no range file (apt-daq range"
           + (f", elements {','.join(elements)})" if elements else ", no input)"))
    if len(ranges) == 0:
        raise UserError(f"{path}: no peak identified in its spectrum (give --ranges FILE)")
    return ranges, src


def _reconstruction_summary(recon) -> dict[str, Any]:
    return {
        "method": recon.method,
        "k_f": recon.k_f,
        "xi": recon.xi,
        "evaporation_field_v_per_nm": recon.f_e,
        "field_source": getattr(recon, "field_source", "configured"),
        "step_fields": {f"{k:g}": v for k, v in getattr(recon, "step_fields", {}).items()},
        "depth_nm": recon.z_nm,
    }


def laser_pj_select(laser_pj: float, tol_pj: float = 0.01) -> Callable[[np.ndarray], np.ndarray]:
    """A ``select`` for :func:`analyze`: the hits taken at one laser energy (a schedule step)."""

    def sel(hits: np.ndarray) -> np.ndarray:
        return np.abs(hits["laser_pj"].astype(np.float64) - laser_pj) <= tol_pj

    return sel


def step_select(path: str | Path, step: str | int) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                             str]:
    """A ``select`` for :func:`analyze`: the hits of one schedule step, by index (``2``) or by
    its laser energy (``10pJ``, ``10``... as the schedule lists it), and a label for it. The
    step's pulses are read from /log (each row carries its step index and the pulse count).
    A step that does not exist is one UserError line naming the valid steps."""
    try:
        log, rf = _log_and_run(path, "tell its schedule steps apart")
    except DataFileError as e:
        why = "no /log" if "/log" in str(e) else "no run file in /meta: an imported run?"
        raise UserError(f"--step {step}: {path} has no schedule steps to choose from ({why}); "
                        "analyze it without --step") from None
    steps = rf.run.steps()
    ran = sorted({int(i) for i in log["step"]})
    valid = "valid steps: " + ", ".join(f"{i} ({steps[i].laser_pj:g} pJ)" for i in ran
                                        if i < len(steps))
    index = _step_index(str(step), [s.laser_pj for s in steps], valid)
    rows = np.nonzero(log["step"] == index)[0]
    if len(rows) == 0:
        raise UserError(f"--step {step}: step {index} ({steps[index].laser_pj:g} pJ) never "
                        f"ran (the run ended in step {int(log['step'].max())}); {valid}")
    first = int(log["pulses"][rows[0] - 1]) if rows[0] > 0 else 0
    last = int(log["pulses"][rows[-1]])

    def sel(hits: np.ndarray) -> np.ndarray:
        return (hits["pulse"] >= first) & (hits["pulse"] < last)

    return sel, f"step {index} ({steps[index].laser_pj:g} pJ)"


def _step_index(step: str, energies: list[float], valid: str) -> int:
    """The schedule index ``step`` names: an index (``1``), else a laser energy (``10pJ``;
    a bare number that is no index, ``10``, is read as one); a UserError ending in
    ``valid`` otherwise."""
    text = step.strip().lower()
    number = text.removesuffix("pj").strip()
    if not text.endswith("pj") and number.lstrip("-").isdigit():
        i = int(number)
        if 0 <= i < len(energies):
            return i
        at = [k for k, pj in enumerate(energies) if abs(pj - i) < 1e-6]
        if at:
            return at[0]
        nor = " (steps count from 0)" if i < 0 else f" (nor a step at {i} pJ)"
        raise UserError(f"--step {step}: no step {i}{nor}; {valid}")
    try:
        pj = float(number)
    except ValueError:
        raise UserError(f"--step {step}: not a step index or a laser energy such as "
                        f"{energies[0]:g}pJ; {valid}") from None
    at = [k for k, e in enumerate(energies) if abs(e - pj) < 1e-6]
    if not at:
        raise UserError(f"--step {step}: no step at {pj:g} pJ; {valid}")
    return at[0]


def ramp_up_share(path: str | Path, fraction: float = 0.5, per: str = "pulses") -> float | None:
    """The share of the run's pulses (``per="pulses"``) or detected ions (``per="ions"``)
    before the detection rate first reached ``fraction`` of its target (the ramp-up), from
    /log; None without a log or a run file."""
    if per not in ("pulses", "ions"):
        raise ValueError(f"per: 'pulses' or 'ions', not {per!r}")
    try:
        log, rf = _log_and_run(path, "")
    except DataFileError:
        return None
    total = int(log[per].max()) if len(log) else 0
    if total <= 0:
        return None
    row = _settled_row(log, rf.run.target_detection_rate, fraction)
    if row is None:
        return 1.0
    return (int(log[per][row - 1]) if row > 0 else 0) / total


BURST_RATE = 5.0
"""A readout block detecting more than this many times the target rate is a burst."""


def burst_share(path: str | Path, factor: float = BURST_RATE) -> float | None:
    """The share of the run's detected ions that came in readout blocks whose detection rate
    was above ``factor`` times the target (from /log); None without a log or ions. The
    feedback holds the rate within +-10 %; a burst is not held: an uncoated 20 pJ point asked
    for 30 000 ions took 67 748 in one 31 294-pulse block at 2.16 ions a pulse (430 times
    its target), and its ratios are that block's."""
    try:
        log, rf = _log_and_run(path, "")
    except DataFileError:
        return None
    ions = log["ions"].astype(np.int64)
    total = int(ions.max()) if len(ions) else 0
    if total <= 0:
        return None
    got = np.diff(ions, prepend=0)
    fast = log["rate"] > factor * rf.run.target_detection_rate
    return float(got[fast].sum()) / total


def settled_rate(path: str | Path, fraction: float = 0.5) -> tuple[float, int] | None:
    """(detection rate, pulses before it) of the run from the first readout block whose rate
    reached ``fraction`` of its target to the end: the rate the feedback held, without the
    ramp-up's pulses at a fraction of it. None without a log, or if the run never settled
    or settled in its first block (its overall rate is then the settled one)."""
    try:
        log, rf = _log_and_run(path, "")
    except DataFileError:
        return None
    row = _settled_row(log, rf.run.target_detection_rate, fraction)
    if not row:
        return None
    before = row - 1  # the /log row that closed the last ramp-up block: the counts so far
    first = int(log["pulses"][before])
    pulses = int(log["pulses"].max()) - first
    if first <= 0 or pulses <= 0:
        return None
    return (int(log["ions"].max()) - int(log["ions"][before])) / pulses, first


def settled_select(path: str | Path, fraction: float = 0.5) -> Callable[[np.ndarray], np.ndarray]:
    """A ``select`` for :func:`analyze`: the hits from the first readout block whose detection
    rate reached ``fraction`` of the run's target on, i.e. without the ramp-up, whose hits are
    mostly detector background at ~0.03 % per pulse (AP Suite users crop it the same way).
    A run that never settled keeps all its hits."""
    log, rf = _log_and_run(path, "tell the ramp-up from the acquisition")
    first = _settled_pulse(log, rf.run.target_detection_rate, fraction) or 0

    def sel(hits: np.ndarray) -> np.ndarray:
        return hits["pulse"] >= first

    return sel


def _log_and_run(path: str | Path, what: str) -> tuple[np.ndarray, Any]:
    """A run's /log and run file, or a DataFileError saying it cannot ``what`` without them."""
    from apt_daq.io.store import RunReader

    with RunReader(path) as r:
        rf = r.run_file
        if not r.has("log") or rf is None:
            raise DataFileError(f"{path}: no {'/log' if rf else 'run file in /meta'}: cannot "
                                f"{what}")
        return r.read("log"), rf


def _settled_row(log: np.ndarray, target: float, fraction: float) -> int | None:
    """The /log row of the first readout block whose rate reached ``fraction`` of
    ``target`` (the ramp-up ends at the row before it), None if none did."""
    ok = np.nonzero(log["rate"] >= fraction * target)[0]
    return int(ok[0]) if len(ok) else None


def _settled_pulse(log: np.ndarray, target: float, fraction: float) -> int | None:
    """The first pulse of the first readout block whose rate reached ``fraction`` of
    ``target`` (the previous /log row's pulse count), None if none did."""
    row = _settled_row(log, target, fraction)
    if row is None:
        return None
    return int(log["pulses"][row - 1]) if row > 0 else 0


def analyze_run(
    path: str | Path, ranges_path: str | Path | None = None, roi: str | None = None, **kw
) -> dict:
    """The JSON summary of :func:`analyze` (keys: ions, ranged_ions, composition {el:
    {fraction, error}}, ion_counts, ratios, mrp, fda {species: {mu, chi2, blocks}}, truth...)."""
    return _jsonable(analyze(path, ranges_path, roi, **kw).summary)


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

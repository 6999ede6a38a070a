"""Unsupervised ranging: every peak of a calibrated mass spectrum identified, with no input.

``auto_ranges(stream_or_spectrum, elements=None, charges=(1, 2, 3, 4)) -> RangeTable`` is the
entry point for ``analyze`` and ``apt-daq range``; :func:`autorange` returns the full result
(peaks, decomposed counts with errors, confidences) behind the JSON report.

1. The calibrated m/n of every ion (an :class:`~apt_daq.pipeline.ions.IonStream`, an array of
   m/n, or a spectrum) is binned in log(m) by a numba kernel: the only per-ion work.
2. :mod:`.spectrum`: a background flat in time of flight (flat in sqrt(m)), the significant
   peaks and each peak's window from its own width and tail.
3. :mod:`.candidates`: ions of up to 3 atoms, charges 1-4, with a strong isotopologue on a
   peak, over all elements H..U (or the given ones), with prior costs.
4. :mod:`.identify`: the candidate set whose isotope patterns explain all peaks jointly, by
   penalised non-negative least squares; overlapping ions share a peak by the fit.
5. One range per identified peak, named after the ion with the largest share of it; a peak
   shared by ions whose m/n differ by a bin or more is cut where one ion's expected counts
   overtake the other's (:mod:`.split`), one range per ion, in m/n order.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from apt_daq.isotopes import mass_numbers
from apt_daq.pipeline.autorange.candidates import Candidate, matching_candidates
from apt_daq.pipeline.autorange.design import build_design, tolerance_rel
from apt_daq.pipeline.autorange.identify import Fit, select
from apt_daq.pipeline.autorange.spectrum import (
    LogSpectrum,
    Peak,
    background,
    extend_windows,
    find_peaks,
    net_counts,
)
from apt_daq.pipeline.autorange.split import (
    CLEAN_SHARE,
    MIN_TEMPLATE_COUNTS,
    nearest_template,
    split_peak,
    template_of,
)
from apt_daq.rangetable import RangeTable

__all__ = ["AutoRange", "LogSpectrum", "RangeReport", "auto_ranges", "autorange",
           "spectrum_of"]

MIN_EXPLAINED = 0.3  # a peak the model explains less than this share of stays unranged
CALIBRATION_REL = (7e-4, 5e-3)
"""Relative m/n tolerances tried in turn: a well calibrated spectrum, then one whose scale is
off by up to 0.5 % (a real file's, e.g. apav's Si run: Si2+ 0.36 % high); the second pass
runs only if the first leaves more than 1 % of the peak counts unexplained."""


@dataclass
class RangeReport:
    """One range of the result, for the RRNG comments and the JSON report."""

    ion: str
    charge: int
    isotopes: list[str]
    lo_da: float
    hi_da: float
    peak_da: float
    counts: float  # all counts in the window
    background: float  # estimated background counts in the window
    confidence: float
    shares: dict[str, tuple[float, float]] = field(default_factory=dict)  # ion -> (n, err)

    def as_dict(self) -> dict:
        return {"ion": self.ion, "charge": self.charge, "isotopes": self.isotopes,
                "window_da": [round(self.lo_da, 4), round(self.hi_da, 4)],
                "peak_da": round(self.peak_da, 4), "counts": round(self.counts, 1),
                "background": round(self.background, 1),
                "confidence": round(self.confidence, 4),
                "decomposed": {k: {"counts": round(v[0], 1), "error": round(v[1], 1)}
                               for k, v in self.shares.items()}}


@dataclass
class AutoRange:
    """The result: the range table, one report per range, unexplained peaks, the fit."""

    table: RangeTable
    ranges: list[RangeReport]
    unidentified: list[Peak]
    ions: dict[str, dict]  # ion -> counts, error, confidence
    spectrum: LogSpectrum
    fit: Fit | None = None
    calibration_rel: float = 0.0
    resolving_power: float = 0.0  # m/dm (FWHM) of the strong peaks, median

    @property
    def unexplained(self) -> float:
        """Share of the net peak counts in unidentified peaks."""
        tot = sum(r.counts - r.background for r in self.ranges) + sum(
            max(p.net, 0.0) for p in self.unidentified)
        return sum(max(p.net, 0.0) for p in self.unidentified) / tot if tot > 0 else 0.0

    def composition(self) -> dict[str, tuple[float, float]]:
        """Atomic fractions (and their errors) from the fit's decomposed ion counts, overlaps
        included (69Ga+ under 53Cr16O+ counts as Ga whichever range it falls in); errors from
        each ion's count error, covariances between ions ignored."""
        from apt_daq.isotopes import parse_ion

        atoms: dict[str, float] = {}
        var: dict[str, float] = {}
        for name, d in self.ions.items():
            for el, n in parse_ion(name)[0].items():
                atoms[el] = atoms.get(el, 0.0) + n * d["counts"]
                var[el] = var.get(el, 0.0) + (n * d["error"]) ** 2
        tot = sum(atoms.values())
        if tot <= 0:
            return {}
        return {el: (a / tot, math.sqrt(var[el]) / tot) for el, a in sorted(atoms.items())}

    def as_dict(self) -> dict:
        return {"ranges": [r.as_dict() for r in self.ranges],
                "ions": self.ions,
                "composition": {el: {"fraction": round(f, 6), "error": round(e, 6)}
                                for el, (f, e) in self.composition().items()},
                "unidentified": [{"peak_da": round(p.mass_da, 4),
                                  "window_da": [round(p.lo_da, 4), round(p.hi_da, 4)],
                                  "net_counts": round(p.net, 1)} for p in self.unidentified],
                "ions_binned": int(self.spectrum.counts.sum()),
                "resolving_power": round(self.resolving_power, 1),
                "mass_tolerance_rel": self.calibration_rel}


def spectrum_of(source) -> LogSpectrum:
    """The log-binned spectrum of an IonStream, IonChunk iterable, m/n array, LogSpectrum or
    a ``(counts, edges)`` fixed-width histogram."""
    if isinstance(source, LogSpectrum):
        return source
    if isinstance(source, tuple) and len(source) == 2:
        return LogSpectrum.from_linear(np.asarray(source[0]), np.asarray(source[1]))
    if isinstance(source, np.ndarray):
        return LogSpectrum.of(source)
    spec = LogSpectrum.empty()
    for chunk in source:
        spec.add(chunk.mass if hasattr(chunk, "mass") else np.asarray(chunk))
    return spec


def _isotope_label(formula: dict[str, int], total_a: int) -> str:
    """The most abundant isotopic composition of ``formula`` with mass number ``total_a``:
    "58Ni", "52Cr16O", "16O18O"."""
    from apt_daq.isotopes import isotopes

    atoms = [el for el, n in formula.items() for _ in range(n)]
    choices = [list(zip(mass_numbers(el), [a for _, a in isotopes(el)], strict=True))
               for el in atoms]
    best, best_p = None, -1.0
    for combo in itertools.product(*choices):
        if sum(a for a, _ in combo) != total_a:
            continue
        p = math.prod(x for _, x in combo)
        if p > best_p:
            best, best_p = combo, p
    if best is None:
        return f"A={total_a}"
    return "".join(f"{a}{el}" for (a, _), el in zip(best, atoms, strict=True))


def _total_mass_number(c: Candidate, m_da: float) -> int:
    """Nominal mass number of the isotopologue of ``c`` nearest ``m_da``."""
    return round(m_da * c.charge)


def autorange(source, elements: list[str] | None = None,
              charges: tuple[int, ...] = (1, 2, 3, 4), *, max_atoms: int = 3,
              min_counts: float | None = None) -> AutoRange:
    """Range ``source`` with no input (see module doc); ``elements`` restricts the
    candidates to those elements (then any formula of up to ``max_atoms`` of them).
    ``min_counts``: the smallest peak (net counts) considered, default max(10, 1e-4 of the
    ions): below that a peak carries too little isotope-pattern evidence to name."""
    spec = spectrum_of(source)
    if min_counts is None:
        min_counts = max(10.0, 1e-4 * float(spec.counts.sum()))
    bg = background(spec)
    peaks = find_peaks(spec, bg, min_counts=min_counts)
    empty = RangeTable([], np.zeros(0), np.zeros(0), [], [], source="apt_daq autorange")
    if not peaks:
        return AutoRange(empty, [], [], {}, spec)
    strong = sorted(peaks, key=lambda p: -p.net)[: max(3, len(peaks) // 3)]
    fwhm_rel = float(np.median([p.fwhm_rel for p in strong]))
    resolving_power = 1.0 / fwhm_rel if fwhm_rel > 0 else 0.0
    els = list(elements) if elements else None
    best = None
    for cal_rel in CALIBRATION_REL:
        cands = matching_candidates(np.array([p.mass_da for p in peaks]),
                                    tolerance_rel(peaks, cal_rel), els, tuple(charges),
                                    max_atoms)
        if not cands:
            continue
        rows, a_mat, pos_cost = build_design(spec, bg, peaks, cands, fwhm_rel, cal_rel)
        fit = select(rows, a_mat, cands, pos_cost)
        res = _result(spec, bg, peaks, cands, rows, a_mat, fit)
        res.calibration_rel = cal_rel
        res.resolving_power = resolving_power
        if best is None or res.unexplained < best.unexplained - 0.01:
            best = res
        if res.unexplained < 0.01:
            break
    if best is None:
        best = AutoRange(empty, [], list(peaks), {}, spec)
        best.resolving_power = resolving_power
    return best


def _near_isotopologue(c: Candidate, shift: float, m_da: float) -> float:
    """The m/n (unshifted) of ``c``'s isotopologue nearest ``m_da`` at offset ``shift``."""
    return float(c.peaks_da[np.argmin(np.abs(c.peaks_da * (1.0 + shift) - m_da))])


def _result(spec: LogSpectrum, bg: np.ndarray, peaks: list[Peak], cands: list[Candidate],
            rows, a_mat, fit: Fit) -> AutoRange:
    n_p = len(peaks)
    sel = fit.selected
    contrib = a_mat[:n_p][:, sel] * fit.x[None, :] if sel else np.zeros((n_p, 0))
    contrib_err = a_mat[:n_p][:, sel] * fit.x_err[None, :] if sel else np.zeros((n_p, 0))
    id_conf = {k: 1.0 / (1.0 + math.exp(-min(50.0, max(-50.0, 0.5 * fit.delta_cost.get(k, 0)))))
               for k in sel}
    shift = rows.shift if rows.shift is not None else np.zeros(len(cands))
    tot = contrib.sum(1)
    named = [p for p in range(n_p)
             if tot[p] > 0 and tot[p] >= MIN_EXPLAINED * max(rows.y[p], 0.0)]
    # the windows of the peaks to be ranged widened over the background (an unidentified
    # peak keeps its own window, unranged, and bounds its neighbours')
    peaks = extend_windows(spec, bg, peaks, [p in named for p in range(n_p)])
    templates = []
    for p in range(n_p):
        if sel and tot[p] >= MIN_TEMPLATE_COUNTS and contrib[p].max() >= CLEAN_SHARE * tot[p]:
            k = sel[int(np.argmax(contrib[p]))]
            true_da = _near_isotopologue(cands[k], shift[k], peaks[p].mass_da)
            templates.append(template_of(spec, bg, peaks[p], true_da))
    reports, unidentified = [], []
    names, lo, hi, comp, charge = [], [], [], [], []
    for p in range(n_p):
        pk = peaks[p]
        if p not in named:
            unidentified.append(pk)
            continue
        there = [i for i in np.argsort(-contrib[p]) if contrib[p, i] > 0.001 * tot[p]]
        trues = [_near_isotopologue(cands[sel[i]], shift[sel[i]], pk.mass_da) for i in there]
        ions = [(float(contrib[p, i]), float(contrib_err[p, i]), t)
                for i, t in zip(there, trues, strict=True)]
        for seg in split_peak(spec, pk, ions, nearest_template(templates, pk.mass_da)):
            i = there[seg.ion]
            k = sel[i]
            c = cands[k]
            seg_tot = sum(v[0] for v in seg.shares.values())
            share = seg.shares[seg.ion][0] / seg_tot if seg_tot > 0 else 0.0
            label = _isotope_label(c.formula_dict, _total_mass_number(c, trues[seg.ion]))
            shares = {cands[sel[there[j]]].name: v for j, v in
                      sorted(seg.shares.items(), key=lambda kv: -kv[1][0])}
            lo_da, hi_da = float(spec.mass_at(seg.lo_bin)), float(spec.mass_at(seg.hi_bin))
            n_seg, bg_seg = net_counts(spec, bg, lo_da, hi_da)
            reports.append(RangeReport(c.name, c.charge, [label], lo_da, hi_da, pk.mass_da,
                                       n_seg + bg_seg, bg_seg, float(share * id_conf[k]),
                                       shares))
            names.append(c.name)
            lo.append(round(lo_da, 4))
            hi.append(round(hi_da, 4))
            comp.append(c.formula_dict)
            charge.append(c.charge)
    # rounding to 4 decimals must not make neighbours overlap
    for j in range(1, len(lo)):
        if lo[j] < hi[j - 1]:
            lo[j] = hi[j - 1]
    table = RangeTable(names, np.array(lo), np.array(hi), comp, charge,
                       source="apt_daq autorange")
    ions_out = {}
    for i, k in enumerate(sel):
        ions_out[cands[k].name] = {"counts": round(float(fit.x[i]), 1),
                                   "error": round(float(fit.x_err[i]), 1),
                                   "confidence": round(id_conf[k], 4),
                                   "delta_cost": round(float(fit.delta_cost.get(k, 0.0)), 1)}
    return AutoRange(table, reports, unidentified, ions_out, spec, fit)


def auto_ranges(stream_or_spectrum, elements: list[str] | None = None,
                charges: tuple[int, ...] = (1, 2, 3, 4)) -> RangeTable:
    """The range table of :func:`autorange` (what ``analyze`` uses without a range file)."""
    return autorange(stream_or_spectrum, elements, charges).table

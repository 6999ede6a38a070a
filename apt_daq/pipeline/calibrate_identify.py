"""Step 1 of the calibration (:mod:`apt_daq.pipeline.calibrate`): identify the ions present and
their isotope peaks by sliding the candidates' isotope patterns over the spectrum for trial
t0 on a grid."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from apt_daq.pipeline.calibrate_model import CENTRAL, LOG_BIN, Candidate, Sample, mass
from apt_daq.pipeline.peaks import background_level


@dataclass
class Identification:
    t0_ns: float
    flight_path_mm: float
    scale: float  # true m/n over trial m/n
    present: list[str]  # ions whose pattern was found
    peaks: list[Candidate]  # their isotope peaks that are resolved and counted
    score: float
    notes: list[str] = field(default_factory=list)
    strongest: list[float] = field(default_factory=list)  # m/n of the strongest peaks


def _significance(m: np.ndarray) -> tuple[np.ndarray, float]:
    """Per log(m/n) bin: (smoothed counts - background) / sqrt(background + 1), and the lower
    edge (ln Da) of the first bin."""
    ln = np.log(m[(m > 0.5) & (m < 400)])
    lo = math.log(0.5)
    nb = int((math.log(400) - lo) / LOG_BIN) + 1
    h = np.bincount(((ln - lo) / LOG_BIN).astype(np.int64), minlength=nb)[:nb].astype(float)
    hs = np.convolve(h, np.ones(3), "same")
    bg = background_level(hs, 401)
    return np.log1p(np.clip((hs - bg) / np.sqrt(bg + 1.0), 0.0, None)), lo


def _score(sig: np.ndarray, lo: float, groups: dict[str, list[Candidate]],
           offsets: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
    """Score of each log-scale offset (bins): per ion, the abundance-weighted mean
    significance at its isotopes; summed over ions. Also each ion's score."""
    total = np.zeros(len(offsets))
    per = {}
    for name, cands in groups.items():
        w = np.array([c.abundance for c in cands])
        k = ((np.log([c.mass_da for c in cands]) - lo) / LOG_BIN).astype(np.int64)
        idx = k[:, None] - offsets[None, :]
        ok = (idx >= 0) & (idx < len(sig))
        vals = np.where(ok, sig[np.clip(idx, 0, len(sig) - 1)], 0.0)
        g = (w[:, None] * vals).sum(0) / w.sum()
        per[name] = g
        total += g
    return total, per


def identify(s: Sample, groups: dict[str, list[Candidate]], nominal_l_mm: float,
             radius_mm: float, *, t0_ns: float | None = None,
             flight_path_mm: float | None = None) -> Identification:  # fmt: skip
    """Find the trial (t0, L) that lines the candidate patterns up with the central spectrum."""
    central = s.take(s.r2 < (CENTRAL * radius_mm) ** 2)
    if len(central) < 2000:
        central = s
    l_try = flight_path_mm or nominal_l_mm
    # ln of the scale range searched: the flight length's, or (L given) the corrections'
    max_off = 0.03 if flight_path_mm else 0.20
    offsets = np.arange(-int(max_off / LOG_BIN), int(max_off / LOG_BIN) + 1)

    def best_at(t0):
        sig, lo = _significance(mass(central, t0, l_try))
        sc, _ = _score(sig, lo, groups, offsets)
        j = int(np.argmax(sc))
        return float(sc[j]), int(offsets[j])

    if t0_ns is not None:
        grid = [float(t0_ns)]
    else:
        grid = list(np.arange(-100.0, 100.1, 4.0))
    results = [(best_at(t), t) for t in grid]
    (score, off), t0 = max(results, key=lambda r: r[0][0])
    if t0_ns is None:
        for step, span in ((0.5, 4.0), (0.1, 0.5)):
            fine = [(best_at(t), t) for t in np.arange(t0 - span, t0 + span + 1e-9, step)]
            (score, off), t0 = max(fine, key=lambda r: r[0][0])
    # the scale: m_true = scale * m_trial; L = L_try / sqrt(scale) near the axis
    scale = math.exp(off * LOG_BIN)
    l_fit = flight_path_mm or l_try / math.sqrt(scale)
    sig, lo = _significance(mass(central, t0, l_try) * scale)
    present = []
    for name, cands in groups.items():
        strongest = max(c.abundance for c in cands)
        main = [c for c in cands if c.abundance >= 0.3 * strongest]
        seen = [_sig_at(sig, lo, c.mass_da) >= math.log1p(5.0) for c in main]
        if all(seen):
            present.append(name)
    peaks = resolved_peaks(groups, present)
    ident = Identification(t0, l_fit, scale, present, peaks, score)
    ident.strongest = _strongest(sig, lo, 5)
    return ident


def _strongest(sig: np.ndarray, lo: float, n: int) -> list[float]:
    """m/n of the ``n`` most significant local maxima of the identification spectrum."""
    is_max = np.zeros(len(sig), bool)
    is_max[1:-1] = (sig[1:-1] >= sig[:-2]) & (sig[1:-1] > sig[2:]) & (sig[1:-1] > 0)
    idx = np.flatnonzero(is_max)
    out: list[int] = []
    for i in idx[np.argsort(-sig[idx])]:
        if all(abs(i - j) > 10 for j in out):  # one maximum per 2e-3 of m/n
            out.append(int(i))
        if len(out) == n:
            break
    return [math.exp(lo + (i + 0.5) * LOG_BIN) for i in out]


def explained(ident: Identification, groups: dict[str, list[Candidate]],
              rel: float = 2e-3) -> list[bool]:  # fmt: skip
    """For each of the spectrum's strongest peaks: does an isotope of a present ion sit on it?"""
    allm = np.array([c.mass_da for n in ident.present for c in groups[n]] or [np.nan])
    return [bool(np.nanmin(np.abs(allm / m - 1)) < rel) for m in ident.strongest]


def _sig_at(sig: np.ndarray, lo: float, m: float) -> float:
    k = int((math.log(m) - lo) / LOG_BIN)
    return float(sig[max(k - 2, 0):k + 3].max()) if 0 <= k < len(sig) else 0.0


def resolved_peaks(groups: dict[str, list[Candidate]], present: list[str],
                   min_abundance: float = 0.01, overlap_rel: float = 1.5e-3) -> list[Candidate]:  # fmt: skip
    """The isotope peaks of the present ions that no other present ion's peak overlaps
    (within ``overlap_rel`` of m/n)."""
    allp = [c for n in present for c in groups[n]]
    out = []
    for c in allp:
        if c.abundance < min_abundance:
            continue
        if any(o.ion != c.ion and abs(o.mass_da / c.mass_da - 1) < overlap_rel
               and o.abundance >= 1e-3 for o in allp):
            continue
        out.append(c)
    return sorted(out, key=lambda c: c.mass_da)


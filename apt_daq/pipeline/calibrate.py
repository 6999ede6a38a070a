"""Calibrating a straight-flight instrument from its own raw hits: t0, flight length, voltage
and bowl corrections, fitted on identified isotope peaks (``apt-daq calibrate``).

The model is the pipeline's one m/n (:func:`apt_daq.pipeline.tof.mass_da`)::

    m/n = K V (t - t0)^2 / (L^2 + x^2 + y^2) / (f_V(V) f_B(x, y))

so at fixed V and detector point sqrt(m/n) is linear in t: a wrong t0 shifts light and heavy
peaks by different fractions, a wrong L all by the same. Reflectron instruments do not follow
it and are refused. Steps (:func:`calibrate_sample`):

1. **Identify** (unless t0 and L are both given): on the central ions (r < 0.45 R, where the
   bowl is small) the spectrum is computed for trial t0 on a grid; for each, the isotope
   patterns of the candidate ions (given elements at charges 1-4, or named ions) are slid over
   it in log(m/n) (a scale: the flight length) and scored by the significance of the counts at
   each predicted isotope, weighted by its abundance within its ion. The best (t0, scale)
   identifies the ions present (their pattern found: every isotope of >= 30 % of the strongest
   one's abundance seen) and their isotope peaks.
2. **t0 and L** (with first guesses of the voltage and bowl terms): a per-ion least-squares fit
   in TOF space, t_j = t0 + sqrt(m_i f_V f_B (L^2 + r_j^2) / (K V_j)) for the ions j in a
   narrow window (+-0.3 of the isotope spacing) around each identified isotope peak i
   (linearised, iterated, 3-sigma trimmed; windows re-centred at each iteration).
3. **Voltage and bowl corrections on ONE reference isotope peak** (``--reference`` or the most
   counted isolated identified peak): windows +-0.3 x the spacing to the neighbouring isotope
   of that ion, voltage bins and detector cells that pool >= 200 ions in the window, the apex
   of each by a histogram mode refined by a mean shift over +-1 FWHM (so the neighbouring
   isotope never pulls it), centred on where the current model puts the peak; alternately,
   twice.
4. t0 and L again with the corrections fixed, then 3 again; then the residual (ppm) of every
   identified isotope peak's apex against its true m/n.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from apt_daq.errors import UserError
from apt_daq.isotopes import ion_name, isotopologues, parse_ion
from apt_daq.pipeline.corrections import (
    Calibration,
    _bowl_terms,
    corrected_mass_kernel,
)
from apt_daq.pipeline.peaks import background_level
from apt_daq.pipeline.tof import flight_time_ns

CHARGES = (1, 2, 3, 4)
MIN_WINDOW_IONS = 200
FIT_IONS = 200_000  # ions the t0 / L least squares uses at most (a stride over the windows)
LOG_BIN = 2e-4  # relative bin of the identification spectrum
CENTRAL = 0.45  # identification uses ions within this fraction of the detector radius


# ----------------------------------------------------------------------------- candidates
@dataclass(frozen=True)
class Candidate:
    """One predicted isotope peak: ``isotope`` "184W3+", of ``ion`` "W3+"."""

    ion: str
    isotope: str
    element: str
    charge: int
    mass_da: float  # m/n of the isotope (atomic masses / charge)
    abundance: float  # fraction of the ion's ions in this peak
    spacing_da: float  # m/n distance to the neighbouring isotope peak of the same ion


def ion_candidates(ion: str, min_abundance: float = 1e-3) -> list[Candidate]:
    """The isotope peaks of one ion (abundance >= ``min_abundance``), with their spacings."""
    formula, z = parse_ion(ion)
    name = ion_name(formula, z)
    pat = isotopologues(formula, z, min_abundance)
    ms = np.array([m for m, _ in pat])
    out = []
    for m, p in pat:
        d = np.abs(ms - m)
        d = d[d > 1e-6]
        spacing = float(d.min()) if len(d) else 1.0 / z
        a = round(m * z)
        out.append(Candidate(name, f"{a}{name}", "".join(formula), z, float(m), float(p),
                             spacing))  # fmt: skip
    return out


def candidates(names: list[str], charges: tuple[int, ...] = CHARGES) -> dict[str, list[Candidate]]:
    """Ion name -> its isotope peaks, for elements (every charge in ``charges``) or ions."""
    out: dict[str, list[Candidate]] = {}
    for raw in names:
        n = raw.strip()
        if not n:
            continue
        try:
            if n.endswith("+"):
                ions = [n]
            else:
                formula, _ = parse_ion(n + "+")
                ions = [ion_name(formula, z) for z in charges]
            for ion in ions:
                c = ion_candidates(ion)
                out[c[0].ion] = c
        except (KeyError, ValueError) as e:
            raise UserError(f"--elements: {n!r}: {str(e).strip(chr(39))}") from None
    if not out:
        raise UserError("--elements: no element or ion given")
    return out


# ----------------------------------------------------------------------------- the sample
@dataclass
class Sample:
    """Hits of a run as float64 arrays: TOF (ns), detector x, y (mm), V = V_dc + beta V_pulse."""

    tof: np.ndarray
    x: np.ndarray
    y: np.ndarray
    v: np.ndarray

    def __len__(self) -> int:
        return len(self.tof)

    @property
    def r2(self) -> np.ndarray:
        return self.x * self.x + self.y * self.y

    def take(self, sel) -> Sample:
        return Sample(self.tof[sel], self.x[sel], self.y[sel], self.v[sel])


def mass(s: Sample, t0_ns: float, flight_path_mm: float, cal: Calibration | None = None) -> np.ndarray:
    """m/n (Da) of the sample by the pipeline's one corrected-mass kernel."""
    cal = cal or Calibration()
    out = np.empty(len(s), np.float64)
    zero = np.zeros(len(s), np.float64)
    corrected_mass_kernel(s.tof, s.x, s.y, s.v, zero, float(t0_ns), float(flight_path_mm), 1.0,
                          cal.vc, cal.bc, out)  # fmt: skip
    return out


def factor(cal: Calibration, s: Sample) -> np.ndarray:
    """f_V(V) f_B(x, y) of each hit."""
    u = s.v * 1e-3
    vc = cal.vc
    return (vc[0] + u * (vc[1] + u * vc[2])) * (_bowl_terms(s.x, s.y) @ cal.bc)


# ----------------------------------------------------------------------------- apex
def apex(m: np.ndarray, guess: float, half: float, min_ions: int = 20) -> tuple[float, int, float]:
    """(apex, ions, FWHM) of the peak near ``guess`` among ``m`` within +- ``half``: the
    histogram maximum (5-bin smoothed), then a mean shift over +- 1 FWHM around it, so a
    neighbouring isotope beyond the window never pulls it. NaN apex if too few ions."""
    sel = m[np.abs(m - guess) < half]
    if len(sel) < min_ions:
        return float("nan"), len(sel), float("nan")
    nb = int(np.clip(len(sel) // 10, 30, 200))
    counts, edges = np.histogram(sel, nb, (guess - half, guess + half))
    c = 0.5 * (edges[1:] + edges[:-1])
    k = np.convolve(counts.astype(float), np.ones(5) / 5, "same")
    i = int(np.argmax(k))
    top = float(c[i])
    # the contiguous run of bins above half maximum around the top
    lo = i
    while lo > 0 and k[lo - 1] >= 0.5 * k[i]:
        lo -= 1
    hi = i
    while hi < len(k) - 1 and k[hi + 1] >= 0.5 * k[i]:
        hi += 1
    bw = edges[1] - edges[0]
    fwhm = max((hi - lo + 1) * bw, 2 * bw)
    h = max(fwhm, 3 * bw)
    for _ in range(30):
        near = sel[np.abs(sel - top) < h]
        if len(near) < 5:
            break
        new = float(near.mean())
        if abs(new - top) < 1e-3 * bw:
            top = new
            break
        top = new
    return top, len(sel), fwhm


# ----------------------------------------------------------------------------- identification
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


# ----------------------------------------------------------------------------- t0 and L
def _lsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares by the normal equations of the column-scaled design (few columns, many
    rows: much faster than an SVD, and well conditioned once scaled)."""
    scale = np.sqrt((a * a).sum(0))
    scale[scale == 0] = 1.0
    an = a / scale
    return np.linalg.solve(an.T @ an, an.T @ b) / scale


def _half_rel(c: Candidate) -> float:
    return 0.3 * c.spacing_da / c.mass_da


def fit_t0_l(s: Sample, peaks: list[Candidate], t0_ns: float, flight_path_mm: float,
             cal: Calibration, *, fit_t0: bool = True, fit_l: bool = True,
             fit_corrections: bool = False, iterations: int = 12) -> tuple[float, float, Calibration, int]:  # fmt: skip
    """Per-ion least squares in TOF space on the ions near each identified isotope peak.

    t_j = t0 + sqrt(m_i F_j (L^2 + r_j^2) / (K V_j)); linearised in t0, L and (with
    ``fit_corrections``) the voltage terms (u - u_m, (u - u_m)^2, u_m the median voltage in
    kV: f_V(u_m) stays 1, so the scale is all in L) and bowl terms (x, y, x^2, xy, y^2: f_B
    stays 1 on the axis) of F; 3-sigma trimmed; iterated with the windows re-centred.
    Returns (t0, L, calibration, ions used)."""
    vc = np.array(cal.vc, float)
    bc = np.array(cal.bc, float)
    n_used = 0
    masses = np.array([c.mass_da for c in peaks])
    half = np.array([_half_rel(c) for c in peaks])
    u_m = float(np.median(s.v)) * 1e-3
    for it in range(iterations):
        cur = Calibration(tuple(vc), tuple(bc))
        m = mass(s, t0_ns, flight_path_mm, cur)
        # each ion to its nearest identified peak, if within that peak's window
        order = np.argsort(masses)
        ms, hs = masses[order], half[order]
        j = np.clip(np.searchsorted(ms, m), 1, len(ms) - 1)
        left = np.abs(m / ms[j - 1] - 1) < np.abs(m / ms[j] - 1)
        k = np.where(left, j - 1, j)
        if len(ms) == 1:
            k = np.zeros_like(k)
        rel = m / ms[k] - 1
        inw = np.abs(rel) < hs[k]
        if inw.sum() < 50:
            raise UserError("t0 / flight-length fit: fewer than 50 ions near the identified "
                            "peaks")
        idx = np.flatnonzero(inw)
        if len(idx) > FIT_IONS:  # plenty for a few parameters; keeps the fit quick
            idx = idx[:: math.ceil(len(idx) / FIT_IONS)]
        sub = s.take(idx)
        mi = ms[k[idx]]
        f = factor(cur, sub)
        tp = flight_time_ns(mi * f, sub.v, flight_path_mm, sub.x, sub.y, t0_ns)
        tau = tp - t0_ns
        e = sub.tof - tp
        cols = []
        if fit_t0:
            cols.append(np.ones_like(tau))
        if fit_l:
            cols.append(tau * flight_path_mm / (flight_path_mm**2 + sub.r2))
        if fit_corrections:
            u = sub.v * 1e-3
            fv = vc[0] + u * (vc[1] + u * vc[2])
            fb = _bowl_terms(sub.x, sub.y) @ bc
            cols += [0.5 * tau * (u - u_m) / fv, 0.5 * tau * (u - u_m) ** 2 / fv]
            bt = _bowl_terms(sub.x, sub.y)
            cols += [0.5 * tau * bt[:, q] / fb for q in range(1, 6)]
        if not cols:
            return t0_ns, flight_path_mm, cur, int(inw.sum())
        a = np.stack(cols, 1)
        keep = np.ones(len(e), bool)
        for _ in range(3):  # trimmed: background in the windows, the tails
            p = _lsq(a[keep], e[keep])
            res = e - a @ p
            sig = 1.4826 * np.median(np.abs(res[keep] - np.median(res[keep])))
            keep = np.abs(res) < 3 * max(sig, 1e-6)
        n_used = int(keep.sum())
        q = 0
        if fit_t0:
            t0_ns += float(p[q])
            q += 1
        if fit_l:
            flight_path_mm += float(p[q])
            q += 1
        if fit_corrections:
            a1, a2 = p[q], p[q + 1]
            vc += (-a1 * u_m + a2 * u_m * u_m, a1 - 2 * a2 * u_m, a2)
            bc[1:] += p[q + 2:q + 7]
        step = float(np.max(np.abs(p[:2])))
        if it >= 2 and step < 1e-3:
            break
    return t0_ns, flight_path_mm, Calibration(tuple(vc), tuple(bc)), n_used


# ----------------------------------------------------------------------------- voltage, bowl
def _grid_for(n_in_window: int, min_per_cell: int = MIN_WINDOW_IONS) -> int:
    """Cells across the detector so that a cell holds ~2x the minimum on average."""
    cells = n_in_window / (2.0 * min_per_cell) * 4 / math.pi
    return int(np.clip(math.floor(math.sqrt(max(cells, 1.0))), 3, 15))


def fit_reference(s: Sample, ref: Candidate, t0_ns: float, flight_path_mm: float,
                  cal: Calibration, radius_mm: float, *, voltage: bool = True,
                  bowl: bool = True, min_ions: int = MIN_WINDOW_IONS,
                  fit_scale_in_l: bool = True) -> tuple[Calibration, list[str]]:  # fmt: skip
    """Voltage and bowl corrections on one reference isotope peak (module doc, step 3).

    Windows are +-0.3 of the spacing to the neighbouring isotope, centred on where the current
    calibration ``cal`` puts the peak; f_V from voltage bins, f_B from detector cells, each
    holding >= ``min_ions`` ions of the window; the apex of each by :func:`apex`."""
    notes = []
    m_raw = mass(s, t0_ns, flight_path_mm)
    ref_da = ref.mass_da
    half_rel = _half_rel(ref)
    vc, bc = np.array(cal.vc, float), np.array(cal.bc, float)
    u_all = s.v * 1e-3
    bt_all = _bowl_terms(s.x, s.y)
    for _ in range(2):
        fv = vc[0] + u_all * (vc[1] + u_all * vc[2])
        fb = bt_all @ bc
        inw = np.abs(m_raw / (fv * fb) / ref_da - 1) < half_rel
        n_w = int(inw.sum())
        if n_w < 2 * min_ions:
            notes.append(f"voltage and bowl corrections kept from the t0 / L fit: {n_w} ions in "
                         f"the {ref.isotope} window")
            break
        if voltage:
            # the bowl-corrected masses of the window, by voltage bins of equal counts
            mv = m_raw / fb
            v = s.v[inw]
            n_bins = int(min(12, n_w // min_ions))
            edges = np.quantile(v, np.linspace(0, 1, n_bins + 1))
            us, rs, ws = [], [], []
            for a, b in itertools.pairwise(edges):
                k = (s.v >= a) & (s.v <= b)
                kk = k & inw
                if kk.sum() < min_ions:
                    continue
                guess = ref_da * float(np.median(fv[kk]))
                top, n, _ = apex(mv[k], guess, half_rel * ref_da)
                if np.isfinite(top):
                    us.append(float(np.median(s.v[kk])) * 1e-3)
                    rs.append(top / ref_da)
                    ws.append(math.sqrt(n))
            if len(us) >= 3 and np.ptp(us) > 1e-3:
                vc = np.polynomial.polynomial.polyfit(us, rs, 2, w=ws)
            elif us:
                vc = np.array([float(np.average(rs, weights=ws)), 0.0, 0.0])
            fv = vc[0] + u_all * (vc[1] + u_all * vc[2])
        if bowl:
            mb = m_raw / fv
            g = _grid_for(n_w, min_ions)
            cell = 2 * radius_mm / g
            ix = np.clip(((s.x + radius_mm) / cell).astype(np.int64), 0, g - 1)
            iy = np.clip(((s.y + radius_mm) / cell).astype(np.int64), 0, g - 1)
            key = ix * g + iy
            cnt = np.bincount(key[inw], minlength=g * g)
            xs, ys, rs, ws = [], [], [], []
            for kk in np.flatnonzero(cnt >= min_ions):
                sel = key == kk
                guess = ref_da * float(np.median(fb[sel & inw]))
                top, n, _ = apex(mb[sel], guess, half_rel * ref_da)
                if np.isfinite(top):
                    xs.append(float(np.mean(s.x[sel & inw])))
                    ys.append(float(np.mean(s.y[sel & inw])))
                    rs.append(top / ref_da)
                    ws.append(math.sqrt(n))
            if len(xs) >= 6:
                a = _bowl_terms(np.array(xs), np.array(ys)) * np.array(ws)[:, None]
                bc, *_ = np.linalg.lstsq(a, np.array(rs) * np.array(ws), rcond=None)
            else:
                notes.append(f"bowl kept from the t0 / L fit: {len(xs)} detector cells hold "
                             f">= {min_ions} {ref.isotope} ions")
    # f_V = 1 at the median voltage, f_B = 1 on the axis: the scale belongs to L ...
    u_m = float(np.median(s.v)) * 1e-3
    vc = vc / (vc[0] + u_m * (vc[1] + u_m * vc[2]))
    bc = bc / bc[0]
    if not fit_scale_in_l:  # ... unless L is given: then the reference lands on its mass
        out = Calibration(tuple(float(c) for c in vc), tuple(float(c) for c in bc))
        top, _, _ = apex(m_raw / factor(out, s), ref_da, half_rel * ref_da)
        if np.isfinite(top):
            vc = vc * (top / ref_da)
    return Calibration(tuple(float(c) for c in vc), tuple(float(c) for c in bc)), notes


def voltage_residual_ppm(m: np.ndarray, v: np.ndarray, ref: Candidate,
                         min_ions: int = MIN_WINDOW_IONS) -> float | None:
    """RMS (ppm) of the calibrated reference apex over 12 voltage bins of equal counts."""
    half = _half_rel(ref) * ref.mass_da
    inw = np.abs(m - ref.mass_da) < half
    if inw.sum() < 2 * min_ions:
        return None
    n_bins = int(min(12, inw.sum() // min_ions))
    edges = np.quantile(v[inw], np.linspace(0, 1, n_bins + 1))
    dev = []
    for a, b in itertools.pairwise(edges):
        k = (v >= a) & (v <= b)
        top, _, _ = apex(m[k], ref.mass_da, half)
        if np.isfinite(top):
            dev.append(top / ref.mass_da - 1)
    return float(np.sqrt(np.mean(np.square(dev))) * 1e6) if dev else None


# ----------------------------------------------------------------------------- all of it
@dataclass
class CalibrationResult:
    calibration: Calibration
    peaks: list[dict]  # per identified isotope peak (see Calibration.peaks)
    present: list[str]
    reference: Candidate
    identification: Identification
    nominal: dict


def choose_reference(m: np.ndarray, peaks: list[Candidate], groups: dict[str, list[Candidate]],
                     present: list[str], wanted: str | None) -> Candidate:  # fmt: skip
    """The reference isotope peak: ``wanted`` (an ion: its most abundant isotope; or an
    isotope "184W3+"), else the most counted isolated identified peak."""
    if wanted:
        w = wanted.strip()
        for c in peaks:
            if c.isotope == w:
                return c
        try:
            formula, z = parse_ion(w)
            name = ion_name(formula, z)
        except (KeyError, ValueError):
            name = w
        of_ion = [c for c in peaks if c.ion == name]
        if not of_ion:
            found = ", ".join(present) or "none"
            raise UserError(f"--reference {w}: not an identified peak (ions found: {found})")
        return max(of_ion, key=lambda c: c.abundance)
    allp = [c for n in present for c in groups[n]]

    def isolation(c):
        d = [abs(o.mass_da / c.mass_da - 1) for o in allp if o is not c and o.abundance >= 1e-3]
        return min(d) if d else 1.0

    def count(c):
        return int(np.count_nonzero(np.abs(m / c.mass_da - 1) < _half_rel(c)))

    iso = [c for c in peaks if isolation(c) >= 4e-3] or peaks
    return max(iso, key=count)


def calibrate_sample(s: Sample, names: list[str], nominal_t0_ns: float, nominal_l_mm: float,
                     radius_mm: float, *, t0_ns: float | None = None,
                     flight_path_mm: float | None = None, reference: str | None = None,
                     charges: tuple[int, ...] = CHARGES) -> CalibrationResult:  # fmt: skip
    """Identify, fit t0 and L, the voltage and bowl corrections, and report (module doc)."""
    groups = candidates(names, charges)
    ident = identify(s, groups, nominal_l_mm, radius_mm, t0_ns=t0_ns,
                     flight_path_mm=flight_path_mm)
    if not ident.present:
        raise UserError(f"no peak of {', '.join(names)} found (charges "
                        f"{', '.join(map(str, charges))}, t0 -100..100 ns, flight length "
                        f"{nominal_l_mm:g} mm +-20 %): give --t0-ns / --flight-path-mm, or "
                        "other elements")
    ok = explained(ident, groups)
    if ok and not ok[0] and sum(ok) < 3:
        missed = [f"{m:.2f}" for m, e in zip(ident.strongest, ok, strict=True) if not e]
        raise UserError(f"{', '.join(names)}: explain none of the strongest peaks of the spectrum "
                        f"(at {', '.join(missed)} Da with t0 {ident.t0_ns:.1f} ns, L {ident.flight_path_mm:.1f} mm): add "
                        "their elements to --elements")
    given_el = {n.strip() for n in names if n.strip() and not n.strip().endswith("+")}
    unexplained = [el for el in sorted(given_el)
                   if not any(groups[p][0].element == el for p in ident.present)]
    unexplained += [n.strip() for n in names if n.strip().endswith("+")
                    and not any(groups[p][0].ion == ion_name(*parse_ion(n.strip()))
                                for p in ident.present)]  # fmt: skip
    if unexplained:
        raise UserError(f"{', '.join(unexplained)}: explain no peak of the spectrum (ions found: "
                        f"{', '.join(ident.present)}); leave them out")
    peaks = ident.peaks
    if not peaks:
        raise UserError(f"ions {', '.join(ident.present)} found, but none of their isotope peaks "
                        "is resolved from the others")
    fit_t0 = t0_ns is None
    fit_l = flight_path_mm is None
    t0, lf = ident.t0_ns, ident.flight_path_mm
    central = s.take(s.r2 < (CENTRAL * radius_mm) ** 2)
    # L given: the scale the identification found is the corrections' (f_V = 1 / scale)
    cal = Calibration() if fit_l else Calibration((1.0 / ident.scale, 0.0, 0.0))
    # t0 and L on the central ions, then with the voltage and bowl terms on all of them
    t0, lf, cal, _ = fit_t0_l(central if len(central) > 2000 else s, peaks, t0, lf, cal,
                              fit_t0=fit_t0, fit_l=fit_l)
    for _ in range(2):
        t0, lf, cal, _ = fit_t0_l(s, peaks, t0, lf, cal, fit_t0=fit_t0, fit_l=fit_l,
                                  fit_corrections=True)
    m = mass(s, t0, lf, cal)
    ref = choose_reference(m, peaks, groups, ident.present, reference)
    notes: list[str] = []
    # the voltage and bowl corrections on the reference, t0 and L with them fixed; twice
    for _ in range(2):
        cal, nn = fit_reference(s, ref, t0, lf, cal, radius_mm, fit_scale_in_l=fit_l)
        notes += nn
        t0, lf, _c, _n = fit_t0_l(s, peaks, t0, lf, cal, fit_t0=fit_t0, fit_l=fit_l)
    m = mass(s, t0, lf, cal)
    table = peak_residuals(m, groups, ident.present, peaks)
    cal.t0_ns, cal.flight_path_mm = float(t0), float(lf)
    cal.reference, cal.reference_da = ref.isotope, ref.mass_da
    cal.fit_ions = int(np.count_nonzero(np.abs(m / ref.mass_da - 1) < _half_rel(ref)))
    cal.residual_ppm = voltage_residual_ppm(m, s.v, ref)
    cal.ions = list(ident.present)
    cal.peaks = table
    cal.notes = list(dict.fromkeys(notes))
    if t0_ns is not None:
        cal.notes.append(f"t0 given: {t0_ns:g} ns")
    if flight_path_mm is not None:
        cal.notes.append(f"flight length given: {flight_path_mm:g} mm")
    nominal = {"t0_ns": nominal_t0_ns, "flight_path_mm": nominal_l_mm}
    return CalibrationResult(cal, table, ident.present, ref, ident, nominal)


def peak_residuals(m: np.ndarray, groups: dict[str, list[Candidate]], present: list[str],
                   fitted: list[Candidate], min_ions: int = 100) -> list[dict]:  # fmt: skip
    """Apex, counts and residual (ppm) of every isotope peak of the present ions that holds
    >= ``min_ions`` ions in its window (+-0.3 of the isotope spacing)."""
    used = {c.isotope for c in fitted}
    out = []
    for name in present:
        for c in groups[name]:
            half = _half_rel(c) * c.mass_da
            top, n, _fwhm = apex(m, c.mass_da, half, min_ions)
            if not np.isfinite(top):
                continue
            out.append({"isotope": c.isotope, "ion": c.ion, "mass_da": round(c.mass_da, 6),
                        "apex_da": round(top, 6), "counts": int(n),
                        "residual_ppm": round((top / c.mass_da - 1) * 1e6, 1),
                        "fitted": c.isotope in used})
    return sorted(out, key=lambda p: p["mass_da"])


__all__ = [
    "CalibrationResult",
    "Candidate",
    "Sample",
    "apex",
    "calibrate_sample",
    "candidates",
    "fit_reference",
    "fit_t0_l",
    "identify",
    "mass",
]

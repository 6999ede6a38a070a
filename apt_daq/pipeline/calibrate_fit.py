"""Steps 2 and 3 of the calibration (:mod:`apt_daq.pipeline.calibrate`): t0 and L by least
squares in TOF space on the identified peaks, and the voltage and bowl corrections on one
reference isotope peak."""

from __future__ import annotations

import itertools
import math

import numpy as np

from apt_daq.errors import UserError
from apt_daq.pipeline.calibrate_model import (
    FIT_IONS,
    MIN_WINDOW_IONS,
    Candidate,
    Sample,
    _half_rel,
    apex,
    factor,
    mass,
)
from apt_daq.pipeline.corrections import (
    Calibration,
    _bowl_terms,
    kernel_vc,
    span_bin,
    span_v,
    spans_enough,
    voltage_factor,
    voltage_u,
)
from apt_daq.pipeline.tof import flight_time_ns


def _lsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares by the normal equations of the column-scaled design (few columns, many
    rows: much faster than an SVD, and well conditioned once scaled)."""
    scale = np.sqrt((a * a).sum(0))
    scale[scale == 0] = 1.0
    an = a / scale
    return np.linalg.solve(an.T @ an, an.T @ b) / scale



def fit_t0_l(s: Sample, peaks: list[Candidate], t0_ns: float, flight_path_mm: float,
             cal: Calibration, *, fit_t0: bool = True, fit_l: bool = True,
             fit_corrections: bool = False, iterations: int = 12) -> tuple[float, float, Calibration, int]:  # fmt: skip
    """Per-ion least squares in TOF space on the ions near each identified isotope peak.

    t_j = t0 + sqrt(m_i F_j (L^2 + r_j^2) / (K V_j)); linearised in t0, L and (with
    ``fit_corrections``) the voltage terms (u - u_m, (u - u_m)^2, u_m the median voltage in
    kV: f_V(u_m) stays 1, so the scale is all in L) and bowl terms (x, y, x^2, xy, y^2: f_B
    stays 1 on the axis) of F; 3-sigma trimmed; iterated with the windows re-centred.
    Returns (t0, L, calibration, ions used)."""
    vc = np.array(cal.vc[:3])  # the 3 coefficients (cal.vc: also the span)
    bc = np.array(cal.bc, float)
    n_used = 0
    masses = np.array([c.mass_da for c in peaks])
    half = np.array([_half_rel(c) for c in peaks])
    u_m = float(np.median(s.v)) * 1e-3
    span = cal.voltage_span_v  # vc stays the 3 coefficients; the span is carried through
    for it in range(iterations):
        cur = Calibration(tuple(vc), tuple(bc), voltage_span_v=span)
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
            kvc = cur.vc
            u = voltage_u(kvc, sub.v)  # held at the span's edges, as f_V's
            fv = voltage_factor(kvc, sub.v)
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
    return t0_ns, flight_path_mm, Calibration(tuple(vc), tuple(bc), voltage_span_v=span), n_used


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
    vc, bc = np.array(cal.vc[:3]), np.array(cal.bc, float)
    span = cal.voltage_span_v
    bt_all = _bowl_terms(s.x, s.y)
    for _ in range(2):
        fv = voltage_factor(kernel_vc(vc, span), s.v)
        fb = bt_all @ bc
        inw = np.abs(m_raw / (fv * fb) / ref_da - 1) < half_rel
        n_w = int(inw.sum())
        if n_w < 2 * min_ions:
            notes.append(f"voltage and bowl corrections kept from the t0 / L fit: {n_w} ions in "
                         f"the {ref.isotope} window")
            break
        if voltage:
            vc, span = _voltage_poly(s, m_raw / fb, fv, inw, n_w, ref, vc, span, min_ions)
            fv = voltage_factor(kernel_vc(vc, span), s.v)
        if bowl:
            bc, note = _bowl_surface(s, m_raw / fv, fb, inw, n_w, ref, bc, radius_mm, min_ions)
            if note:
                notes.append(note)
    # f_V = 1 at the median voltage, f_B = 1 on the axis: the scale belongs to L ...
    vc = vc / voltage_factor(kernel_vc(vc, span), np.median(s.v))
    bc = bc / bc[0]
    if not fit_scale_in_l:  # ... unless L is given: then the reference lands on its mass
        out = Calibration(tuple(float(c) for c in vc), tuple(float(c) for c in bc),
                          voltage_span_v=span)
        top, _, _ = apex(m_raw / factor(out, s), ref_da, half_rel * ref_da)
        if np.isfinite(top):
            vc = vc * (top / ref_da)
    return Calibration(tuple(float(c) for c in vc), tuple(float(c) for c in bc),
                       voltage_span_v=span), notes


def _voltage_poly(s: Sample, mv: np.ndarray, fv: np.ndarray, inw: np.ndarray, n_w: int,
                  ref: Candidate, vc: np.ndarray, span: tuple[float, float] | None,
                  min_ions: int) -> tuple[np.ndarray, tuple[float, float] | None]:
    """f_V's quadratic in kV from the apex of the bowl-corrected masses ``mv`` in voltage bins
    of equal counts of the window ``inw``, and the span (V) it was fitted on (:func:`span_v`);
    ``vc`` and ``span`` as they were when no bin holds a peak."""
    ref_da, half_rel = ref.mass_da, _half_rel(ref)
    v = s.v[inw]
    n_bins = int(min(12, n_w // min_ions))
    edges = np.quantile(v, np.linspace(0, 1, n_bins + 1))
    us, rs, ws, bins = [], [], [], []
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
            bins.append(span_bin(a, b, s.v[k], mv[k], top))
    # bins a few volts apart (a run at its steady voltage) constrain no slope nor curvature:
    # a quadratic through them is noise, so the constant (spans_enough)
    if len(us) >= 3 and spans_enough(us):
        return np.polynomial.polynomial.polyfit(us, rs, 2, w=ws), span_v(bins)
    if us:
        return np.array([float(np.average(rs, weights=ws)), 0.0, 0.0]), span_v(bins)
    return vc, span


def _bowl_surface(s: Sample, mb: np.ndarray, fb: np.ndarray, inw: np.ndarray, n_w: int,
                  ref: Candidate, bc: np.ndarray, radius_mm: float, min_ions: int
                  ) -> tuple[np.ndarray, str | None]:
    """f_B's surface from the apex of the voltage-corrected masses ``mb`` in detector cells
    holding >= ``min_ions`` ions of the window ``inw``; ``bc`` as it was, and why, when fewer
    than 6 cells do."""
    ref_da, half_rel = ref.mass_da, _half_rel(ref)
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
    if len(xs) < 6:
        return bc, (f"bowl kept from the t0 / L fit: {len(xs)} detector cells hold "
                    f">= {min_ions} {ref.isotope} ions")
    a = _bowl_terms(np.array(xs), np.array(ys)) * np.array(ws)[:, None]
    fitted, *_ = np.linalg.lstsq(a, np.array(rs) * np.array(ws), rcond=None)
    return fitted, None


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


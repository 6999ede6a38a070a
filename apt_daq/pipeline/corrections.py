"""Voltage and bowl corrections, fitted from the data on a reference peak (AP Suite practice).

A real instrument's m/n drifts with the specimen voltage (the effective acceleration differs
from V_dc: pulse shape, field lens) and across the detector (flight-path differences: the
"bowl"). Both are multiplicative: m_measured = m_true f_V(V) f_B(x, y). We fit them on one
strong, isolated peak (the reference) whose true position is known:

1. voltage: hits of the reference window are split into voltage bins of equal counts; in each
   the peak position (histogram mode, parabola-refined: robust to the thermal tail) over the
   reference mass gives f_V at that voltage; fit ``f_V(V) = c0 + c1 u + c2 u^2`` with u = V/kV
   (weighted by counts), or the constant when the bins' medians span < 1 % of their voltage;
   m <- m / f_V(V). Beyond the voltages it was fitted on (:func:`span_v`) f_V holds its value
   at the nearer edge: the ramp-up's hits lie kV below a run's steady voltage, where a
   quadratic extrapolated is no correction at all.
2. bowl: on the voltage-corrected masses, the detector is cut into a grid of cells; the peak
   position per cell gives f_B(x, y); fit ``f_B = b0 + b1 x + b2 y + b3 x^2 + b4 x y + b5 y^2``
   (x, y in units of 10 mm); m <- m / f_B(x, y).

The product is normalised so that the reference peak lands on its true mass.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from apt_daq.pipeline.tof import mass_da

BOWL_SCALE_MM = 10.0


CALIBRATION_FORMAT = 2
"""Version of the stored calibration record (/meta "calibration" of a run file)."""


@dataclass
class Calibration:
    """How a run's m/n is made: the model the ion stream applies, stored in the run file.

    ``mode`` "tof": m/n = :func:`~apt_daq.pipeline.tof.mass_da` (tof, x, y, V_dc + beta
    V_pulse; ``t0_ns``, ``flight_path_mm``) / (f_V(V) f_B(x, y)) with the voltage and bowl
    coefficients below (the identity by default). ``mode`` "file": the m/n an imported file
    carries is authoritative and used as is (nothing is recomputed).

    Provenance: ``reference`` (range name) and ``reference_da`` of the peak the corrections
    were fitted on, ``fit_ions`` in its window, ``residual_ppm`` (rms of the reference peak's
    position over the voltage bins after correction), ``source`` (who made it: analyze,
    calibrate, import, identity), ``created`` (ISO time), ``version`` (apt-daq), ``notes``;
    from ``apt-daq calibrate`` also ``ions`` (the ions whose peaks were identified) and
    ``peaks`` (per identified isotope peak: isotope, ion, true and calibrated m/n, counts,
    residual in ppm, whether it entered the t0 / flight-length fit).
    ``voltage_span_v`` (V, low and high) is the span the voltage correction was fitted on:
    from the lowest edge to the highest edge of the voltage bins that entered the fit, an
    outer bin's far edge taken no farther from the median voltage of its reference ions than
    its inner edge (:func:`span_v`: one ramp-up hit in the reference window stretches an
    outer bin kV down). Outside it f_V is held at its value at the nearest edge (a smooth,
    small physical correction; a quadratic extrapolated is not); None (files written before,
    the identity, a constant scale) clamps nothing.
    JSON-able via ``as_dict``/``from_dict``.
    """

    voltage_coeffs: tuple[float, ...] = (1.0, 0.0, 0.0)  # f_V in u = V / 1000
    bowl_coeffs: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    reference: str = ""  # reference peak (range name)
    reference_da: float = 0.0
    fit_ions: int = 0
    notes: list[str] = field(default_factory=list)
    mode: str = "tof"  # "tof" | "file"
    t0_ns: float | None = None  # None: the run's instrument value
    flight_path_mm: float | None = None  # None: the run's instrument value
    beta: float = 1.0  # V = V_dc + beta V_pulse
    residual_ppm: float | None = None
    source: str = ""
    created: str = ""
    version: str = ""
    ions: list[str] = field(default_factory=list)
    peaks: list[dict] = field(default_factory=list)
    voltage_span_v: tuple[float, float] | None = None  # V: f_V held constant outside

    def as_dict(self) -> dict:
        return {
            "format": CALIBRATION_FORMAT,
            "mode": self.mode,
            "t0_ns": self.t0_ns,
            "flight_path_mm": self.flight_path_mm,
            "beta": self.beta,
            "voltage_coeffs": list(self.voltage_coeffs),
            "voltage_span_v": None if self.voltage_span_v is None else list(self.voltage_span_v),
            "bowl_coeffs": list(self.bowl_coeffs),
            "reference": self.reference,
            "reference_da": self.reference_da,
            "fit_ions": self.fit_ions,
            "residual_ppm": self.residual_ppm,
            "source": self.source,
            "created": self.created,
            "version": self.version,
            "notes": list(self.notes),
            "ions": list(self.ions),
            "peaks": [dict(p) for p in self.peaks],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        mode = d.get("mode", "tof")
        if mode not in ("tof", "file"):
            raise ValueError(f"calibration mode {mode!r}: expected 'tof' or 'file'")
        span = d.get("voltage_span_v")  # records written before have none
        if span is not None and len(span) != 2:
            raise ValueError(f"calibration voltage_span_v {span!r}: expected [low, high] in V")
        return cls(
            tuple(float(c) for c in d.get("voltage_coeffs", (1.0, 0.0, 0.0))),
            tuple(float(c) for c in d.get("bowl_coeffs", (1.0, 0.0, 0.0, 0.0, 0.0, 0.0))),
            d.get("reference", ""),
            float(d.get("reference_da", 0.0)),
            int(d.get("fit_ions", 0)),
            list(d.get("notes", [])),
            mode,
            None if d.get("t0_ns") is None else float(d["t0_ns"]),
            None if d.get("flight_path_mm") is None else float(d["flight_path_mm"]),
            float(d.get("beta", 1.0)),
            None if d.get("residual_ppm") is None else float(d["residual_ppm"]),
            d.get("source", ""),
            d.get("created", ""),
            d.get("version", ""),
            [str(i) for i in d.get("ions", [])],
            [dict(p) for p in d.get("peaks", [])],
            None if span is None else (float(span[0]), float(span[1])),
        )

    @classmethod
    def from_file(cls, what: str) -> Calibration:
        """The calibration of an imported run: its file's own m/n, used as is."""
        return cls(mode="file", source="import",
                   notes=[f"m/n of the imported file ({what}) used as is; "
                          "`apt-daq analyze --recalibrate` recomputes it from TOF and V"])

    @property
    def is_identity(self) -> bool:
        return (tuple(self.voltage_coeffs) == (1.0, 0.0, 0.0)
                and tuple(self.bowl_coeffs) == (1.0, 0.0, 0.0, 0.0, 0.0, 0.0))

    @property
    def vc(self) -> np.ndarray:
        """f_V as the kernels take it (:func:`kernel_vc`)."""
        return kernel_vc(self.voltage_coeffs, self.voltage_span_v)

    @property
    def bc(self) -> np.ndarray:
        return np.asarray(self.bowl_coeffs, dtype=np.float64)


def kernel_vc(voltage_coeffs: Sequence[float] | np.ndarray,
              span_v: tuple[float, float] | None) -> np.ndarray:
    """f_V as the kernels and :func:`voltage_factor` take it: (c0, c1, c2, u_lo, u_hi), u =
    V/kV clamped to [u_lo, u_hi], the fitted span ``span_v`` (V; -inf, +inf without one)."""
    lo, hi = span_v if span_v is not None else (-np.inf, np.inf)
    return np.array([*coeffs(voltage_coeffs, 3), lo * 1e-3, hi * 1e-3], dtype=np.float64)


def coeffs(c: Sequence[float] | np.ndarray, n: int) -> tuple[float, ...]:
    """Correction coefficients as the tuple the kernels take (``n`` of them, zero-padded):
    a tuple is a value to numba, so a kernel keeps it in registers (an array it must reload
    after every store to an output it might alias)."""
    c = np.asarray(c, dtype=np.float64)
    if len(c) > n:
        raise ValueError(f"{len(c)} correction coefficients, at most {n} expected")
    return tuple(float(v) for v in c) + (0.0,) * (n - len(c))


@njit(cache=True, nogil=True, inline="always")
def correction_factor(v, x, y, vc, bc):
    """f_V(V) f_B(x, y) for one hit (see module doc); ``vc`` (c0, c1, c2, u_lo, u_hi:
    :attr:`Calibration.vc`), ``bc`` arrays or tuples."""
    # u held at the fitted span's edges; np.maximum / np.minimum keep a NaN voltage NaN (as an
    # if / elif would) and, unlike one, take arrays too (the py_func twins of the kernels)
    u = np.minimum(np.maximum(v * 1e-3, vc[3]), vc[4])
    fv = vc[0] + u * (vc[1] + u * vc[2])
    xs = x * (1.0 / BOWL_SCALE_MM)
    ys = y * (1.0 / BOWL_SCALE_MM)
    fb = bc[0] + bc[1] * xs + bc[2] * ys + bc[3] * xs * xs + bc[4] * xs * ys + bc[5] * ys * ys
    return fv * fb


def voltage_u(vc: np.ndarray, v_volts: np.ndarray | float) -> np.ndarray:
    """f_V's variable u (kV) of voltages ``v_volts`` (V): held at the fitted span's edges
    (``vc`` as :attr:`Calibration.vc` gives it), a NaN voltage NaN."""
    return np.clip(np.asarray(v_volts, dtype=np.float64) * 1e-3, vc[3], vc[4])


def voltage_factor(vc: np.ndarray, v_volts: np.ndarray | float) -> np.ndarray:
    """f_V of voltages ``v_volts`` (V), vectorised: :func:`correction_factor`'s voltage part.
    ``vc`` (c0, c1, c2, u_lo, u_hi) as :attr:`Calibration.vc` and :func:`kernel_vc` give it."""
    u = voltage_u(vc, v_volts)
    return vc[0] + u * (vc[1] + u * vc[2])


MIN_SPAN_REL = 0.01
"""A voltage fit whose bins' median voltages span less than this share of their median
voltage fits the constant only (:func:`spans_enough`)."""


def spans_enough(us: np.ndarray | list[float]) -> bool:
    """Whether voltage bins at ``us`` (kV, their median voltages) span enough voltage for a
    slope or a curvature of f_V: >= 1 % of their median voltage (and >= 1 V). A quadratic
    over a span of a few volts (a run that sat at its steady voltage: 30 V at 3 kV) is noise,
    its curvature unconstrained, and extrapolated to the ramp-up's hits kV below it moves
    their m/n by tens of Da; the constant is what such bins measure."""
    us = np.asarray(us, dtype=np.float64)
    return len(us) > 1 and float(np.ptp(us)) >= max(1e-3, MIN_SPAN_REL * abs(float(np.median(us))))


def span_bin(a: float, b: float, v: np.ndarray, m: np.ndarray, top: float) -> tuple[float, ...]:
    """A voltage bin as :func:`span_v` takes it: its edges ``a``, ``b`` (V) and the median
    voltage ``v`` of its hits within +- top / 1500 of its peak position ``top`` (the ions that
    measured f_V there; of all its hits if none is)."""
    core = np.abs(m - top) < top / 1500.0
    return float(a), float(np.median(v[core] if core.any() else v)), float(b)


def span_v(bins: list[tuple[float, ...]]) -> tuple[float, float]:
    """The span (V) voltage bins fitted f_V on (``Calibration.voltage_span_v``): from the
    lowest bin's low edge to the highest bin's high edge, each no farther from the median
    voltage of its bin's peak ions than the bin's inner edge is. ``bins``: (low edge, median,
    high edge) of the bins that entered the fit, by :func:`span_bin`, ascending. A bin of
    equal counts reaches out to the run's extreme voltage whenever one hit of the reference
    window lies there (ramp-up background kV below the run's steady voltage), while the ions
    that placed its peak sit at the steady voltage."""
    (a0, m0, b0), (an, mn, bn) = bins[0], bins[-1]
    return max(a0, 2.0 * m0 - b0), min(bn, 2.0 * mn - an)


@njit(cache=True, nogil=True)
def corrected_mass_kernel(tof_ns, det_x_mm, det_y_mm, v_dc, v_pulse, t0_ns, flight_path_mm,
                          beta, vc, bc, out):  # fmt: skip
    """m/n with voltage and bowl corrections applied, Da (the one m/n kernel, corrected)."""
    for i in range(tof_ns.shape[0]):
        x = np.float64(det_x_mm[i])
        y = np.float64(det_y_mm[i])
        v = np.float64(v_dc[i]) + beta * v_pulse[i]
        m = mass_da(np.float64(tof_ns[i]), x, y, v, t0_ns, flight_path_mm)
        out[i] = m / correction_factor(v, x, y, vc, bc)
    return out


def corrected_mass(hits: np.ndarray, t0_ns: float, flight_path_mm: float,
                   calibration: Calibration | None = None, beta: float = 1.0) -> np.ndarray:  # fmt: skip
    """Corrected m/n (float64, Da) of a HIT_DTYPE chunk."""
    cal = calibration or Calibration()
    out = np.empty(len(hits), dtype=np.float64)
    corrected_mass_kernel(hits["tof"], hits["det_x"], hits["det_y"], hits["v_dc"],
                          hits["v_pulse"], float(t0_ns), float(flight_path_mm), float(beta),
                          coeffs(cal.vc, 5), coeffs(cal.bc, 6), out)  # fmt: skip
    return out


def peak_mode(mass: np.ndarray, lo: float, hi: float, bin_da: float) -> float:
    """Position of the maximum of the histogram of ``mass`` in [lo, hi), parabola-refined."""
    edges = np.arange(lo, hi + bin_da, bin_da)
    counts, edges = np.histogram(mass, edges)
    s = np.convolve(counts.astype(float), np.ones(3) / 3, mode="same")
    i = int(np.argmax(s))
    centre = 0.5 * (edges[i] + edges[i + 1])
    if 0 < i < len(s) - 1:
        a, b, c = s[i - 1], s[i], s[i + 1]
        den = a - 2 * b + c
        if den < 0:
            centre += float(np.clip(0.5 * (a - c) / den, -0.5, 0.5)) * bin_da
    return float(centre)


def fit_voltage(mass: np.ndarray, voltage_v: np.ndarray, ref_da: float, lo: float, hi: float,
                n_bins: int = 12, min_per_bin: int = 200, degree: int = 2,
                ) -> tuple[np.ndarray, tuple[float, float]] | None:  # fmt: skip
    """Coefficients (c0, c1, c2) of f_V(u = V/kV) and the span (V) they were fitted on
    (:func:`span_v`), or None if the data are too few."""
    sel = (mass >= lo) & (mass < hi)
    m, v = mass[sel], voltage_v[sel]
    n_bins = int(min(n_bins, len(m) // min_per_bin))
    if n_bins < 1:
        return None
    bin_da = max(ref_da / 4000.0, 1e-4)
    edges = np.quantile(v, np.linspace(0, 1, n_bins + 1))
    us, rs, ws, bins = [], [], [], []
    for a, b in itertools.pairwise(edges):
        k = (v >= a) & (v <= b)
        if k.sum() < min_per_bin // 2:
            continue
        top = peak_mode(m[k], lo, hi, bin_da)
        us.append(float(np.median(v[k])) * 1e-3)
        rs.append(top / ref_da)
        ws.append(np.sqrt(k.sum()))
        bins.append(span_bin(a, b, v[k], m[k], top))
    if not us:
        return None
    us_a, rs_a, ws_a = np.array(us), np.array(rs), np.array(ws)
    # bins a few volts apart constrain no slope nor curvature: the constant (spans_enough)
    deg = min(degree, len(us) - 1) if spans_enough(us_a) else 0
    coef = np.zeros(3)
    if deg <= 0:
        coef[0] = float(np.average(rs_a, weights=ws_a))
    else:
        p = np.polynomial.polynomial.polyfit(us_a, rs_a, deg, w=ws_a)
        coef[: len(p)] = p
    return coef, span_v(bins)


def _bowl_terms(x_mm: np.ndarray, y_mm: np.ndarray) -> np.ndarray:
    xs, ys = x_mm / BOWL_SCALE_MM, y_mm / BOWL_SCALE_MM
    return np.stack([np.ones_like(xs), xs, ys, xs * xs, xs * ys, ys * ys], axis=1)


def factors(cal: Calibration, v: np.ndarray, x_mm: np.ndarray, y_mm: np.ndarray) -> np.ndarray:
    """f_V(V) f_B(x, y) of each hit, vectorised (:func:`correction_factor`'s arithmetic)."""
    return voltage_factor(cal.vc, v) * (_bowl_terms(x_mm, y_mm) @ cal.bc)


def fit_bowl(mass: np.ndarray, x_mm: np.ndarray, y_mm: np.ndarray, ref_da: float, lo: float,
             hi: float, radius_mm: float, grid: int = 7, min_per_cell: int = 150) -> np.ndarray | None:  # fmt: skip
    """Coefficients (b0..b5) of the 2-D quadratic f_B(x, y), or None if too few data."""
    sel = (mass >= lo) & (mass < hi)
    m, x, y = mass[sel], x_mm[sel], y_mm[sel]
    bin_da = max(ref_da / 4000.0, 1e-4)
    cell = 2 * radius_mm / grid
    ix = np.clip(((x + radius_mm) / cell).astype(int), 0, grid - 1)
    iy = np.clip(((y + radius_mm) / cell).astype(int), 0, grid - 1)
    key = ix * grid + iy
    xs, ys, rs, ws = [], [], [], []
    for k in np.unique(key):
        s = key == k
        if s.sum() < min_per_cell:
            continue
        xs.append(float(np.mean(x[s])))
        ys.append(float(np.mean(y[s])))
        rs.append(peak_mode(m[s], lo, hi, bin_da) / ref_da)
        ws.append(np.sqrt(s.sum()))
    if len(xs) < 6:
        if not xs:
            return None
        out = np.zeros(6)
        out[0] = float(np.average(rs, weights=ws))
        return out
    a = _bowl_terms(np.array(xs), np.array(ys)) * np.array(ws)[:, None]
    coef, *_ = np.linalg.lstsq(a, np.array(rs) * np.array(ws), rcond=None)
    return coef


def fit_calibration(
    mass: np.ndarray, voltage_v: np.ndarray, x_mm: np.ndarray, y_mm: np.ndarray,
    ref_da: float, lo: float, hi: float, radius_mm: float, *, voltage: bool = True,
    bowl: bool = True, reference: str = "",
) -> Calibration:  # fmt: skip
    """Fit voltage and bowl corrections (alternately, twice) on the reference window [lo, hi).

    ``mass`` must be the uncorrected m/n of the hits (any subset holding the reference peak).
    """
    cal = Calibration(reference=reference, reference_da=ref_da)
    sel = (mass >= lo) & (mass < hi)
    cal.fit_ions = int(sel.sum())
    m = mass[sel].astype(np.float64)
    v, x, y = voltage_v[sel], x_mm[sel], y_mm[sel]
    m_raw = m
    terms = None
    fb = np.ones_like(m_raw)
    for _ in range(2):  # voltage and bowl are fitted alternately: each biases the other
        if voltage:
            got = fit_voltage(m_raw / fb, v, ref_da, lo, hi)
            if got is None:
                cal.notes.append(f"voltage correction skipped: {cal.fit_ions} ions in the window")
                voltage = False
            else:
                cal.voltage_coeffs = tuple(float(c) for c in got[0])
                cal.voltage_span_v = got[1]
        m = m_raw / voltage_factor(cal.vc, v)
        if bowl:
            bc = fit_bowl(m, x, y, ref_da, lo, hi, radius_mm)
            if bc is None:
                cal.notes.append(f"bowl correction skipped: {cal.fit_ions} ions in the window")
                bowl = False
            else:
                cal.bowl_coeffs = tuple(float(c) for c in bc)
                if terms is None:
                    terms = _bowl_terms(x, y)
                fb = terms @ cal.bc
        if not (voltage and bowl):
            break
    cal = _kept_if_sharper(cal, m_raw, v, x, y, lo, hi)
    cal.residual_ppm = residual_ppm(cal, m_raw, v, x, y, lo, hi)
    return cal


def residual_ppm(cal: Calibration, m_raw: np.ndarray, v: np.ndarray, x: np.ndarray,
                 y: np.ndarray, lo: float, hi: float, n_bins: int = 12,
                 min_per_bin: int = 200) -> float | None:
    """RMS (ppm) of the corrected reference peak's position over voltage bins of equal
    counts, against ``cal.reference_da``: what the voltage correction leaves (None: too few
    ions)."""
    ref = cal.reference_da
    if ref <= 0 or len(m_raw) < min_per_bin:
        return None
    m = m_raw / factors(cal, v, x, y)
    n_bins = int(max(1, min(n_bins, len(m) // min_per_bin)))
    edges = np.quantile(v, np.linspace(0, 1, n_bins + 1))
    bin_da = max(ref / 4000.0, 1e-4)
    dev = []
    for a, b in itertools.pairwise(edges):
        k = (v >= a) & (v <= b)
        if k.sum() >= min_per_bin // 2:
            dev.append(peak_mode(m[k], lo, hi, bin_da) / ref - 1.0)
    return float(np.sqrt(np.mean(np.square(dev))) * 1e6) if dev else None


def _peak_ions(m: np.ndarray, ref_da: float) -> int:
    """Ions within +- ref / 1500 of the reference mass: what a good correction gathers."""
    return int(np.count_nonzero(np.abs(m - ref_da) < ref_da / 1500.0))


def _kept_if_sharper(cal: Calibration, m_raw: np.ndarray, v: np.ndarray, x: np.ndarray,
                     y: np.ndarray, lo: float, hi: float) -> Calibration:
    """The fit unless it gathers clearly less of the reference peak than a constant scale does
    (< 80 %): then that scale, with a note. A fit on few ions, or on a window that background rules in some
    voltage bins (a short run, most of it the approach), can bend the quadratic far off."""
    ref = cal.reference_da
    if cal.voltage_coeffs == (1.0, 0.0, 0.0) and cal.bowl_coeffs[0] == 1.0 and not any(
            cal.bowl_coeffs[1:]):
        return cal  # nothing was fitted
    fitted = m_raw / factors(cal, v, x, y)
    c0 = peak_mode(m_raw, lo, hi, max(ref / 4000.0, 1e-4)) / ref
    if _peak_ions(fitted, ref) >= 0.8 * _peak_ions(m_raw / c0, ref):
        return cal  # a fit is kept unless it is clearly worse: it corrects more than the core
    note = (f"fitted corrections rejected: they gathered < 80 % of the "
            f"{cal.reference or 'reference'} ions a constant scale gathers; constant scale "
            f"{c0:.5f} used")
    return Calibration((c0, 0.0, 0.0), reference=cal.reference, reference_da=ref,
                       fit_ions=cal.fit_ions, notes=[*cal.notes, note])

"""The voltage and bowl fit on a reference peak: kept when it sharpens the peak, replaced by a
constant scale when it would not (a fit that background rules in some voltage bins)."""

from __future__ import annotations

import numpy as np

from apt_daq.pipeline import corrections
from apt_daq.pipeline.corrections import fit_calibration

REF_DA = 26.0  # a Cr2+-like reference peak
LO, HI = 25.5, 26.5


def _peak(rng: np.random.Generator, n: int, v_lo: float, v_hi: float, drift: float):
    """Reference ions whose measured m/n drifts with voltage: m = ref (1 + drift (u - 3)^2)."""
    v = rng.uniform(v_lo, v_hi, n)
    x, y = rng.uniform(-30, 30, (2, n))
    u = v * 1e-3
    m = REF_DA * (1 + drift * (u - 3.0) ** 2) * (1 + rng.normal(0, 2e-4, n))
    return m, v, x, y


def _gathered(cal, m, v, x, y) -> int:
    u = v * 1e-3
    vc = cal.vc
    fb = np.stack([np.ones_like(x), x / 10, y / 10, (x / 10) ** 2, x * y / 100, (y / 10) ** 2],
                  axis=1) @ cal.bc
    mc = m / (vc[0] + u * (vc[1] + u * vc[2])) / fb
    return int(np.count_nonzero(np.abs(mc - REF_DA) < REF_DA / 1500))


def test_a_real_voltage_drift_is_fitted_and_kept():
    rng = np.random.default_rng(1)
    m, v, x, y = _peak(rng, 40_000, 2000, 4000, 0.004)
    cal = fit_calibration(m, v, x, y, REF_DA, LO, HI, 40.0, reference="Cr2+")
    assert not any("rejected" in n for n in cal.notes)
    assert _gathered(cal, m, v, x, y) > 0.9 * len(m)
    assert abs(cal.voltage_coeffs[2]) > 1e-3  # the curvature was found


def test_a_fit_ruled_by_background_is_replaced_by_a_constant_scale(monkeypatch):
    # a run that is mostly its approach: the low-voltage bins hold flat background only, where
    # the per-bin peak position is noise, and a quadratic through it bends off
    rng = np.random.default_rng(2)
    m, v, x, y = _peak(rng, 800, 3400, 3500, 0.0)
    n_bg = 40_000  # (seed 2: the raw fit gathers 65 % of what a constant scale gathers)
    m = np.concatenate([m, rng.uniform(LO, HI, n_bg)])
    v = np.concatenate([v, rng.uniform(2000, 3300, n_bg)])
    x = np.concatenate([x, rng.uniform(-30, 30, n_bg)])
    y = np.concatenate([y, rng.uniform(-30, 30, n_bg)])
    cal = fit_calibration(m, v, x, y, REF_DA, LO, HI, 40.0, reference="Cr2+")
    assert len([n for n in cal.notes if "rejected" in n]) == 1
    assert cal.voltage_coeffs[1:] == (0.0, 0.0) and cal.bowl_coeffs[1:] == (0.0,) * 5
    assert abs(cal.voltage_coeffs[0] - 1) < 1e-3
    # the fit it replaced gathers fewer reference ions
    monkeypatch.setattr(corrections, "_kept_if_sharper", lambda c, *a: c)
    raw_fit = fit_calibration(m, v, x, y, REF_DA, LO, HI, 40.0, reference="Cr2+")
    assert _gathered(raw_fit, m, v, x, y) < _gathered(cal, m, v, x, y)

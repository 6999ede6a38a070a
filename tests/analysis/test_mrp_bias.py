"""The FWHM and FW10%M of :func:`~apt_daq.pipeline.peaks.peak_shape` (``analyze``'s MRP) are
unbiased for a well-sampled peak and no noisier than before for a small one.

The reference is not the code's: the analytic widths of a Gaussian (2 sqrt(2 ln 2) sigma,
2 sqrt(2 ln 10) sigma) and of a Gaussian convolved with an exponential tail (the density
exp(-x^2 / 2 sigma^2) erfcx((sigma / tau - x / sigma) / sqrt 2) / 2 tau, its maximum and its
crossings of 50 % and 10 % found by scipy's root finders on the density itself). Peaks of
10^4-10^6 ions at several m/n; the mean over seeds is the bias. Before: a 3-bin average at 12
bins per FWHM read 1.7-4.4 % wide at every size (+3 % on apav's Si2+).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, special

from apt_daq.pipeline.peaks import peak_shape

SHAPES = {"gauss": (4e-4, 0.0), "tail 1 sigma": (3e-4, 3e-4), "tail 4 sigma": (2e-4, 8e-4)}


def _analytic_widths(sigma: float, tau: float) -> tuple[float, float]:
    if tau == 0.0:
        return 2 * math.sqrt(2 * math.log(2)) * sigma, 2 * math.sqrt(2 * math.log(10)) * sigma

    def f(x: float) -> float:
        z = (sigma / tau - x / sigma) / math.sqrt(2)
        if z > 0:  # erfcx: no overflow on the rising side
            return math.exp(-x * x / (2 * sigma**2)) * special.erfcx(z) / (2 * tau)
        return math.exp(sigma**2 / (2 * tau**2) - x / tau) * special.erfc(z) / (2 * tau)

    top = optimize.minimize_scalar(lambda x: -f(x), bounds=(-3 * sigma, 3 * sigma + tau),
                                   method="bounded", options={"xatol": sigma * 1e-9})
    x0, fmax = top.x, f(top.x)
    out = []
    for level in (0.5 * fmax, 0.1 * fmax):
        lo = optimize.brentq(lambda x, v=level: f(x) - v, x0 - 10 * sigma, x0, xtol=1e-14)
        hi = optimize.brentq(lambda x, v=level: f(x) - v, x0, x0 + 10 * sigma + 40 * tau,
                             xtol=1e-14)
        out.append(hi - lo)
    return out[0], out[1]


def _bias(shape: str, m0: float, n: int, seeds: range) -> np.ndarray:
    """(FWHM, FW10%M) measured / analytic - 1, one row per seed."""
    s_rel, t_rel = SHAPES[shape]
    sigma, tau = s_rel * m0, t_rel * m0
    w50, w10 = _analytic_widths(sigma, tau)
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        m = m0 + sigma * rng.standard_normal(n) + (rng.exponential(tau, n) if tau else 0.0)
        got = peak_shape(m, m0)
        rows.append((got.fwhm_da / w50 - 1, got.fw10m_da / w10 - 1))
    return np.array(rows)


def test_the_analytic_reference_is_right():
    # the Gaussian limit of the tailed density, and the tailed shape against scipy's
    # exponnorm density on a grid of 1e-4 sigma
    from scipy import stats

    w50, w10 = _analytic_widths(1.0, 1e-4)
    assert w50 == pytest.approx(2.35482, rel=1e-4) and w10 == pytest.approx(4.29193, rel=1e-4)
    x = np.arange(-8.0, 40.0, 1e-4)
    for k in (1.0, 4.0):
        f = stats.exponnorm.pdf(x, k)
        want = [np.ptp(x[f >= frac * f.max()]) for frac in (0.5, 0.1)]
        assert _analytic_widths(1.0, k) == pytest.approx(want, abs=2e-4)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize(("m0", "n", "seeds", "bound"), [
    (27.98, 1_000_000, range(3), 0.005),
    (92.9, 100_000, range(24), 0.006),
    (6.94, 10_000, range(40), 0.015),
])  # fmt: skip
def test_widths_are_unbiased(shape: str, m0: float, n: int, seeds: range, bound: float):
    b = _bias(shape, m0, n, seeds)
    mean = b.mean(axis=0)
    assert abs(mean[0]) < bound and abs(mean[1]) < bound, (shape, n, mean)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_small_peak_is_no_noisier(shape: str):
    """300 ions: the spread over seeds stays that of the 3-bin average at 12 bins (measured
    over 200 seeds, FWHM: 12.6 %, 12.6 %, 16.9 % for the three shapes; now 12.9 %, 13.2 %,
    17.0 %), and no worse than 6 % narrow on average (noise reads the maximum high)."""
    b = _bias(shape, 28.0, 300, range(100))
    old_sd = {"gauss": 0.126, "tail 1 sigma": 0.126, "tail 4 sigma": 0.169}[shape]
    assert b[:, 0].std() < 1.15 * old_sd, b[:, 0].std()
    assert b[:, 0].mean() > -0.06 and abs(b[:, 1].mean()) < 0.06, b.mean(axis=0)

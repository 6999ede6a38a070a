"""The per-peak table of ``analyze --json`` (``peaks``) and MRP measured on one isotope peak.

Synthetic W3+ spectra (isotopes 0.33 Da apart) with a known Gaussian width and a flat
background: each range's row must give its isotope, apex, counts, the background in it and the
resolving power of that isotope alone: m/dm = 1 / (2.3548 sigma_rel) at half maximum and
1 / (4.2919 sigma_rel) at a tenth (a Gaussian), whatever the neighbouring isotopes.
"""

from __future__ import annotations

import numpy as np
import pytest

from apt_daq.analysis.mrp import mrp, mrp_window, peak_table
from apt_daq.io.ranges import RangeTable
from apt_daq.isotopes import isotopologues
from apt_daq.pipeline.histogram import MassHistogram

SIGMA_REL = 3e-4
MRP50 = 1 / (2.3548 * SIGMA_REL)
MRP10 = 1 / (4.2919 * SIGMA_REL)
BG_PER_DA = 2000.0  # flat background, ions per Da


def _w3_spectrum(seed: int = 0, n: int = 200_000) -> tuple[np.ndarray, list[tuple[float, float]]]:
    rng = np.random.default_rng(seed)
    pat = isotopologues({"W": 1}, 3, 1e-3)
    ms = np.array([m for m, _ in pat])
    p = np.array([a for _, a in pat])
    m = rng.choice(ms, n, p=p / p.sum())
    m = m * (1 + SIGMA_REL * rng.standard_normal(n))
    bg = rng.uniform(55.0, 68.0, int(BG_PER_DA * 13.0))
    return np.concatenate([m, bg]), pat


def _table(mass: np.ndarray, ranges: RangeTable) -> list[dict]:
    h = MassHistogram(0.0005, 100.0)
    h.add(mass)
    return peak_table(ranges, h.counts, h.edges)


def test_one_row_per_isotope_range_with_its_own_resolving_power():
    mass, pat = _w3_spectrum()
    n_ions = 200_000
    ranges = RangeTable(["W3+"] * len(pat), [m - 0.1 for m, _ in pat], [m + 0.12 for m, _ in pat],
                        [{"W": 1}] * len(pat), [3] * len(pat))  # fmt: skip
    rows = _table(mass, ranges)
    assert len(rows) == len(pat)
    for row, (m, a) in zip(rows, pat, strict=True):
        assert row["isotope"] == f"{round(m * 3)}W3+" and row["isotopes"] == [row["isotope"]]
        assert row["background"] == pytest.approx(0.22 * BG_PER_DA, rel=0.3)
        expected = a * n_ions * 0.99997  # +-0.1 Da is > 5 sigma
        assert row["net"] == pytest.approx(expected, abs=5 * np.sqrt(expected + 440) + 5)
        if a < 0.1:
            continue  # 180W: 240 ions, its width is noise
        assert row["apex_da"] == pytest.approx(m, rel=3e-5)
        assert row["mrp50"] == pytest.approx(MRP50, rel=0.07), row
        assert row["mrp10"] == pytest.approx(MRP10, rel=0.07), row


def test_a_group_range_is_measured_on_its_main_isotope_alone():
    mass, pat = _w3_spectrum(1)
    ranges = RangeTable(["W3+"], [59.8], [62.2], [{"W": 1}], [3])
    (row,) = _table(mass, ranges)
    assert row["isotope"] is None and len(row["isotopes"]) == len(pat)
    m184 = max(pat, key=lambda q: q[1])[0]
    assert row["nominal_da"] == pytest.approx(m184, abs=1e-5)
    assert row["apex_da"] == pytest.approx(m184, rel=3e-5)
    assert row["mrp50"] == pytest.approx(MRP50, rel=0.07)
    assert row["mrp10"] == pytest.approx(MRP10, rel=0.07)


def test_mrp_window_stops_at_the_neighbouring_isotopes():
    mass, pat = _w3_spectrum(2)
    m183, m184, m186 = (m for m, _ in pat if round(m * 3) in (183, 184, 186))
    lo, hi = mrp_window(m184, "W3+")
    assert lo == pytest.approx(0.5 * (m183 + m184)) and hi == pytest.approx(0.5 * (m184 + m186))
    (res,) = mrp(mass, [("W3+", m184)])
    assert res["mass"] == pytest.approx(m184, abs=0.002)
    assert res["mrp50"] == pytest.approx(MRP50, rel=0.07)
    assert res["mrp10"] == pytest.approx(MRP10, rel=0.07)
    # a monoisotopic ion keeps the wide window of before
    w = max(0.25, 0.02 * 26.9815)
    assert mrp_window(26.9815, "Al+") == pytest.approx((26.9815 - w, 26.9815 + 2 * w))


def test_analyze_json_has_the_peaks_table(tmp_path):
    from apt_daq.analysis.report import analyze_run

    from .synth import make_run

    path = make_run(tmp_path / "r.h5", n=40_000, seed=4)
    s = analyze_run(path, roi="none", store=False)
    rows = s["peaks"]
    assert len(rows) > 5
    assert {"ion", "isotope", "isotopes", "apex_da", "counts", "background", "net", "fwhm",
            "fw10m", "mrp50", "mrp10"} <= set(rows[0])  # fmt: skip
    assert sum(r["counts"] for r in rows) == s["ranged_ions_total"]
    # the timing spread alone (sigma_rel 2e-4 in t, 4e-4 in m): m/dm = 1 / (2.3548 * 4e-4)
    main = max(rows, key=lambda r: r["counts"])
    assert main["mrp50"] == pytest.approx(1062, rel=0.12), main
    by_peak = {p["peak"]: p for p in s["mrp"]}
    if main["ion"] in by_peak and main["nominal_da"] == pytest.approx(
            by_peak[main["ion"]]["nominal_da"]):
        assert main["mrp50"] == pytest.approx(by_peak[main["ion"]]["mrp50"], rel=0.1)

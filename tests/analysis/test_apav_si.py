"""apav's real LEAP Si run (Si.epos, Si.RRNG; 945 211 ions) through ``apt-daq import`` and
``analyze``, against numpy on the EPOS file read here (big-endian float32 records of 11
fields, m/n the 4th).

- The MRP of 28Si2+ is one value (``mrp`` and the ``peaks`` row) and that of a plain
  histogram (1 mDa bins of m/n in 13.85-14.25 Da, no smoothing, the maximum bin, the
  half-maximum crossings interpolated between bin centres: m/dm 888.9 at the maximum bin
  14.0375 Da). Before: 862.2 in ``mrp`` and 879.1 in ``peaks``.
- The spectrum reaches every m/n (it stopped 20 Da above the last range, 106.555 Da: 15 379
  ions beyond, up to 378.3 Da), the plot shows every peak in it; the ranged counts do not
  change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

APAV = Path(__file__).resolve().parents[2] / ".venv/lib/python3.11/site-packages/apav/tests"
EPOS, RRNG = APAV / "Si.epos", APAV / "Si.RRNG"
pytestmark = pytest.mark.skipif(not EPOS.exists(), reason="apav's test data not installed")


@pytest.fixture(scope="module")
def si(tmp_path_factory):
    from apt_daq.analysis.report import analyze
    from apt_daq.cli import main

    out = tmp_path_factory.mktemp("si") / "si.h5"
    assert main(["import", str(EPOS), "-o", str(out)]) == 0
    mass = np.fromfile(EPOS, dtype=">f4").reshape(-1, 11)[:, 3].astype(np.float64)
    return analyze(out, RRNG, roi="none", store=False), mass


def _fwhm_plain(mass: np.ndarray, lo: float, hi: float, bin_da: float) -> tuple[float, float]:
    counts, edges = np.histogram(mass[(mass > lo) & (mass < hi)], np.arange(lo, hi, bin_da))
    c = counts.astype(np.float64)
    x = 0.5 * (edges[1:] + edges[:-1])
    i = int(np.argmax(c))
    half = 0.5 * c[i]
    a = i
    while c[a - 1] >= half:
        a -= 1
    b = i
    while c[b + 1] >= half:
        b += 1
    left = np.interp(half, [c[a - 1], c[a]], [x[a - 1], x[a]])
    right = np.interp(half, [c[b + 1], c[b]], [x[b + 1], x[b]])
    return x[i], right - left


def test_si2_mrp_is_one_value_and_that_of_a_plain_histogram(si):
    res, mass = si
    apex, fwhm = _fwhm_plain(mass, 13.85, 14.25, 0.001)
    want = apex / fwhm  # 888.9
    (m,) = [p for p in res.summary["mrp"] if p["peak"] == "Si2+"]
    (row,) = [r for r in res.summary["peaks"] if r["isotope"] == "28Si2+"]
    assert m["mrp50"] == row["mrp50"] and m["mrp10"] == row["mrp10"]
    assert m["fwhm"] == pytest.approx(fwhm, rel=0.007), (m, fwhm)
    assert m["mrp50"] == pytest.approx(want, rel=0.007), (m, want)


def test_spectrum_covers_every_ion_and_counts_do_not_change(si):
    from apt_daq.io.ranges import read_ranges
    from apt_daq.plots import mass_spectrum

    res, mass = si
    h = res.spectrum
    assert mass.max() > 378.0
    assert h.edges[-1] > mass.max() and h.edges[-1] <= 1000.0
    assert int(h.counts.sum()) == int(np.count_nonzero(mass >= 0)) == 945_211
    # the ranged counts: numpy on the range file's intervals
    r = read_ranges(RRNG)
    for name in set(r.names):
        n = sum(int(np.count_nonzero((mass >= lo) & (mass < hi)))
                for nm, lo, hi in zip(r.names, r.lo_da, r.hi_da, strict=True) if nm == name)
        assert res.summary["ion_counts"][name] == n, name
    # the plot: to the last peak, ranged or not (here the ranges': above 106 Da the Si run
    # holds a smooth background tail, no peak); a peak beyond the ranges + 20 Da is shown
    fig = mass_spectrum(h.counts, h.edges, res.ranges)
    assert fig.axes[0].get_xlim()[1] == pytest.approx(r.hi_da.max() + 2, abs=0.02)
    c = h.counts.copy()
    c[round(250.0 / h.bin_da) : round(250.02 / h.bin_da)] += 500  # a peak at 250 Da
    fig = mass_spectrum(c, h.edges, res.ranges)
    assert 250.0 < fig.axes[0].get_xlim()[1] < 255.0

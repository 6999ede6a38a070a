"""``analyze --background``: one background estimator for the composition and the per-peak
table, robust to an unranged peak beside a range.

- apav's real LEAP Si run (Si.epos, Si.RRNG) through the CLI: the composition's ion counts are
  the per-peak table's nets summed per ion, every element with > 100 net ions in the table is in
  the composition, and Cu is not wiped out. Before: the composition took its background from
  the 1 Da below each range, which below 63Cu+ (62.567 Da) holds an unranged peak (~2500 ions
  at 61.9 Da): Cu+ 0 and Cr+ 0 in the composition, O+ 556 where the table's nets sum to 899,
  and the table (the lower of its two flanks, both on a peak) gave 63Cu+ a background of 1237
  under its 231 ions.
- A synthetic spectrum drawn by numpy: peaks of known size on a background flat in time of
  flight (uniform in sqrt(m)), with unranged peaks on both flanks of a range: the background-
  subtracted counts recover the drawn ions within their counting error.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from apt_daq.analysis.composition import composition, range_background
from apt_daq.analysis.mrp import peak_table
from apt_daq.pipeline.histogram import MassHistogram
from apt_daq.rangetable import RangeTable


@pytest.fixture(scope="module")
def si_background(apav_data, tmp_path_factory) -> dict:
    """``apt-daq analyze si_epos.h5 --no-store --background --json`` of the imported EPOS."""
    import contextlib
    import io

    from apt_daq.cli import main

    out = tmp_path_factory.mktemp("si_bg") / "si_epos.h5"
    assert main(["import", str(apav_data / "Si.epos"), "--ranges", str(apav_data / "Si.RRNG"),
                 "-o", str(out)]) == 0  # fmt: skip
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["analyze", str(out), "--no-store", "--background", "--json"]) == 0
    return json.loads(buf.getvalue())


def _atoms_of_peaks(rows: list[dict]) -> dict[str, float]:
    from apt_daq.isotopes import parse_ion

    atoms: dict[str, float] = {}
    for r in rows:
        for el, n in parse_ion(r["ion"])[0].items():
            atoms[el] = atoms.get(el, 0.0) + n * r["net"]
    return atoms


def test_si_composition_is_the_per_peak_nets(si_background):
    s = si_background
    assert s["background_subtracted"] is True
    rows = s["peaks"]
    nets: dict[str, float] = {}
    for r in rows:
        nets[r["ion"]] = nets.get(r["ion"], 0.0) + r["net"]
    assert set(nets) == set(s["ion_counts"])
    for ion, net in nets.items():  # the table rounds to 0.1, the counts to 1
        assert s["ion_counts"][ion] == pytest.approx(net, abs=1.0), ion
    for el, n in _atoms_of_peaks(rows).items():
        if n > 100:
            assert s["composition"].get(el, {}).get("fraction", 0) > 0, el
    # Cu: 63Cu+ and 65Cu+ both stand above the background (before: 0 in the composition)
    assert s["composition"]["Cu"]["fraction"] > 2e-4
    cu = [r for r in rows if r["ion"] == "Cu+"]
    assert all(r["net"] > 2 * r["net_error"] for r in cu), cu
    assert 200 < s["ion_counts"]["Cu+"] < 600
    # O+: both ranges (before 556, the 16 Da range alone)
    assert s["ion_counts"]["O+"] > 700
    assert "Cr" in s["composition"] and s["ion_counts"]["Cr2+"] > 100


def test_si_negative_nets_are_said(si_background):
    s = si_background
    for r in s["peaks"]:
        assert r["net_error"] >= math.sqrt(r["counts"]) - 0.1
        said = any(f"range {r['range']} " in n for n in s["background_notes"])
        assert said == (r["net"] < -r["net_error"]), r
        # the estimator never leaves a range far below zero (the 63Cu+ range read -1006)
        assert r["net"] > -3 * r["net_error"], r


# --- synthetic: known peaks on a background flat in time of flight ---------------------------

SIGMA_DA = 0.02
PEAKS = [  # (centre Da, ions, ranged as (lo, hi) or None)
    (60.0, 1000, (59.85, 60.25)),
    (62.4, 15000, None),  # an unranged peak within 1 Da below the next range
    (63.0, 300, (62.85, 63.30)),
    (63.7, 5000, None),  # and one on its high flank
    (66.0, 0, (66.0, 66.5)),  # a range over background alone
    (69.9, 200, (69.70, 70.20)),
]
BG_IONS = 40_000  # uniform in t ~ sqrt(m) over 40-90 Da: ~350 ions per Da at 63 Da


def _draw(seed: int) -> tuple[np.ndarray, np.ndarray, RangeTable, np.ndarray]:
    """(every m/n, the background m/n, the ranges, true peak ions in each range)."""
    rng = np.random.default_rng(seed)
    peaks = [rng.normal(c, SIGMA_DA, n) for c, n, _ in PEAKS]
    bg = rng.uniform(math.sqrt(40.0), math.sqrt(90.0), BG_IONS) ** 2  # flat in time
    ranged = [(lo_hi, p) for (_, _, lo_hi), p in zip(PEAKS, peaks, strict=True) if lo_hi]
    ranges = RangeTable(["X+"] * len(ranged), [lh[0] for lh, _ in ranged],
                        [lh[1] for lh, _ in ranged], [{"Cu": 1}] * len(ranged),
                        [1] * len(ranged))  # fmt: skip
    truth = np.array([np.count_nonzero((p >= lo) & (p < hi)) for (lo, hi), p in ranged])
    return np.concatenate([*peaks, bg]), bg, ranges, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_background_is_recovered_beside_unranged_peaks(seed):
    mass, bg_mass, ranges, truth = _draw(seed)
    h = MassHistogram(0.0005, 100.0)
    h.add(mass)
    rc = np.array([np.count_nonzero((mass >= lo) & (mass < hi))
                   for lo, hi in zip(ranges.lo_da, ranges.hi_da, strict=True)])
    bg, bg_err = range_background(h.counts, h.edges, ranges)
    # the background under each range: what was drawn there (Poisson) within its errors
    bg_true = np.array([np.count_nonzero((bg_mass >= lo) & (bg_mass < hi))
                        for lo, hi in zip(ranges.lo_da, ranges.hi_da, strict=True)])
    tol = 3.0 * np.sqrt(bg_true + bg_err**2) + 1.0
    assert np.all(np.abs(bg - bg_true) <= tol), (bg, bg_true, tol)
    _, ions = composition(rc, ranges, (h.counts, h.edges), subtract_background=True)
    net = rc - bg
    assert ions["X+"] == pytest.approx(net.sum())
    assert np.all(np.abs(net - truth) <= tol), (net, truth, tol)
    # the per-peak table: the same background, the same nets
    rows = peak_table(ranges, h.counts, h.edges)
    for row, b, n in zip(rows, bg, net, strict=True):
        assert row["background"] == pytest.approx(b, abs=0.05)
        assert row["net"] == pytest.approx(n, abs=0.1)


def test_synthetic_mean_background_is_unbiased():
    """Over many draws the estimate's mean is the background's expectation (the clipping of
    the peaks' cells takes no noise away on average), on the range between the peaks."""
    est = []
    for seed in range(10, 30):
        mass, _, ranges, _ = _draw(seed)
        h = MassHistogram(0.0005, 100.0)
        h.add(mass)
        est.append(range_background(h.counts, h.edges, ranges)[0][1])  # the 63 Da range
    lo, hi = ranges.lo_da[1], ranges.hi_da[1]
    expected = BG_IONS * (math.sqrt(hi) - math.sqrt(lo)) / (math.sqrt(90.0) - math.sqrt(40.0))
    assert np.mean(est) == pytest.approx(expected, rel=0.03)  # ~3 sigma of the mean of 20


def test_background_subtracted_fraction_error_is_the_spread_over_draws():
    """The error reported for a background-subtracted fraction is what the fraction scatters
    by over independent draws of the same spectrum (numpy: Gaussian peaks of known size, a
    uniform background twice the weak peak under its range). The binomial error of the
    net atoms, which the composition reported before, understates that scatter here by
    ~1.55x (0.0043 against 0.0067): it knows neither the gross counts nor the background
    estimate's error."""
    ranges = RangeTable(["A+", "B+"], [19.9, 29.9], [20.1, 30.1], [{"A": 1}, {"B": 1}], [1, 1])
    rng = np.random.default_rng(7)
    frac, err, binom = [], [], []
    for _ in range(300):
        mass = np.concatenate([rng.normal(20.0, 0.02, rng.poisson(400)),
                               rng.normal(30.0, 0.02, rng.poisson(4000)),
                               rng.uniform(10.0, 50.0, rng.poisson(80_000))])
        h = MassHistogram(0.002, 60.0)
        h.add(mass)
        rc = np.array([np.count_nonzero((mass >= lo) & (mass < hi))
                       for lo, hi in zip(ranges.lo_da, ranges.hi_da, strict=True)])
        comp, _ = composition(rc, ranges, (h.counts, h.edges), subtract_background=True)
        c = comp.fraction("A")
        frac.append(c)
        err.append(comp.error("A"))
        binom.append(math.sqrt(c * (1 - c) / comp.total))
    spread = float(np.std(frac, ddof=1))  # ~4 % sampling error at 300 draws
    assert np.mean(err) == pytest.approx(spread, rel=0.2), (np.mean(err), spread)
    assert np.mean(binom) < 0.8 * spread, (np.mean(binom), spread)
    # the true fraction (400 / 4400 = 0.0909) within the mean's error
    assert np.mean(frac) == pytest.approx(400 / 4400, abs=3 * spread / math.sqrt(300) + 0.002)


def test_net_fraction_errors_reduce_to_the_binomial_without_background():
    """var(x_r) = x_r and one-atom ions: the propagated error is sqrt(c (1 - c) / N)."""
    from apt_daq.analysis.composition import decompose, ion_counts, net_fraction_errors

    ranges = RangeTable(["A+", "B+", "C+"], [1.0, 2.0, 3.0], [1.5, 2.5, 3.5],
                        [{"A": 1}, {"B": 1}, {"C": 1}], [1, 1, 1])
    x = np.array([120.0, 3000.0, 45.0])
    counts = ion_counts(x, ranges)
    comp = decompose(counts, ranges)
    errs = net_fraction_errors(comp, counts, x, ranges)
    for el in "ABC":
        c = comp.fraction(el)
        assert errs[el] == pytest.approx(math.sqrt(c * (1 - c) / comp.total), rel=1e-12)

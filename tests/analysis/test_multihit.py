"""Multi-hit statistics and the correlation (Saxey) histogram (apt_daq.analysis.multihit).

References we did not write: apav's CorrelationHistogram on its own real LEAP Si dataset
(Si.epos, read here straight from the big-endian records), and a dissociation track built by
integrating the flight of the parent and its products through the field of a spherical apex
(scipy quad), not from the closed form the module uses."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_daq.analysis.multihit import (
    MultiHitAccumulator,
    dissociation_track,
    multihit_stats,
    saxey_plot,
)


def _events(sizes: list[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hits of events of the given sizes on pulses 0, 3, 6, ... (gaps: pulses without ions)."""
    pulse = np.repeat(3 * np.arange(len(sizes)), sizes)
    return pulse, rng.uniform(1, 99, len(pulse))


def test_known_events_counts_fractions_and_pairs():
    rng = np.random.default_rng(1)
    sizes = [1] * 700 + [2] * 200 + [3] * 80 + [5] * 20
    pulse, mass = _events(sizes, rng)
    r = multihit_stats(pulse, mass, 100.0)
    d = r.as_dict()
    assert d["events_by_multiplicity"] == {"1": 700, "2": 200, "3": 80, "5": 20}
    assert d["events"] == 1000 and d["ions"] == 700 + 400 + 240 + 100
    assert d["multi_event_fraction"] == pytest.approx(0.3)
    assert d["multi_ion_fraction"] == pytest.approx(740 / 1440)
    assert d["pairs"] == 200 + 80 * 3 + 20 * 10  # k (k - 1) / 2 per event


def test_pairs_land_in_their_bins_in_arrival_order():
    # one double (16.0 then 58.0 Da), one triple (a, b, c): pairs (a,b) (a,c) (b,c)
    pulse = np.array([5, 5, 9, 9, 9, 12])
    mass = np.array([16.04, 58.03, 10.05, 20.05, 30.05, 7.0])
    r = multihit_stats(pulse, mass, 100.0, 0.1)
    got = {(int(i), int(j)) for i, j in zip(*np.nonzero(r.saxey), strict=True)}
    assert got == {(160, 580), (100, 200), (100, 300), (200, 300)}
    assert r.saxey.sum() == 4


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=60),
       st.lists(st.integers(1, 40), min_size=1, max_size=8))
def test_chunking_does_not_change_the_result(sizes, cuts):
    """An event split across chunks is carried over: the totals are those of one pass."""
    pulse, mass = _events(sizes, np.random.default_rng(len(sizes)))
    whole = multihit_stats(pulse, mass, 100.0)
    acc = MultiHitAccumulator(100.0)
    i = 0
    for c in cuts * 20:
        acc.add(pulse[i:i + c], mass[i:i + c])
        i += c
        if i >= len(pulse):
            break
    acc.add(pulse[i:], mass[i:])
    r = acc.result()
    assert np.array_equal(r.events, whole.events)
    assert np.array_equal(r.saxey, whole.saxey)


def _flight_mn(parent: float, n_parent: int, product: float, n_product: int, a: float,
               apex_nm: float = 50.0, flight_mm: float = 100.0) -> float:
    """Apparent m/n of a product of a dissociation at the radius where the parent has fallen
    through a share ``a`` of the apex potential, phi(r) = V R / r (a charged sphere): the
    flight time integrated numerically and converted with t = L sqrt(m / (2 n e V))."""
    from scipy.integrate import quad

    r0 = apex_nm * 1e-9
    length = flight_mm * 1e-3
    rd = r0 / (1.0 - a) if a < 1 else math.inf
    # energies in units of e V (V = 1), masses in Da: v^2 = 2 E / m up to one common constant

    def v_parent(r: float) -> float:
        return math.sqrt(2 * n_parent * (1 - r0 / r) / parent)

    def v_product(r: float) -> float:
        e = product / parent * n_parent * (1 - r0 / rd) + n_product * (r0 / rd - r0 / r)
        return math.sqrt(2 * e / product)

    # substitute r = r0 + u^2 near the apex (1/sqrt singularity of the parent's start)
    end_p = min(rd, r0 + length)
    t = quad(lambda u: 2 * u / v_parent(r0 + u * u), 0, math.sqrt(end_p - r0), limit=200)[0]
    if rd < r0 + length:
        # r = exp(s): the products' path spans six decades of radius
        t += quad(lambda s: math.exp(s) / v_product(math.exp(s)), math.log(rd),
                  math.log(r0 + length), limit=400)[0]
    # an ion of m/n through the whole potential: v^2 = 2 n / m, t = L / v -> m/n = 2 (t/L)^2
    return 2 * (t / length) ** 2


@pytest.mark.parametrize("a", [0.05, 0.3, 0.6, 0.9])
def test_dissociation_track_matches_an_integrated_flight(a):
    """(MnO)2+ (35.47 Da) -> O+ (16.0) + Mn+ (54.94) after a share a of the potential."""
    parent, o, mn = (54.938 + 15.995) / 2, 15.995, 54.938
    want_o = _flight_mn(2 * parent, 2, o, 1, a)
    want_mn = _flight_mn(2 * parent, 2, mn, 1, a)
    x, y = dissociation_track(parent, o, mn, n=100001)
    k = round(a * 100000)
    assert x[k] == pytest.approx(want_o, rel=2e-3)
    assert y[k] == pytest.approx(want_mn, rel=2e-3)


def test_a_dissociation_track_in_the_histogram():
    """Synthetic stream: singles, O+ + O2+ pairs on one point and (MnO)2+ -> O+ + Mn+ with
    the products' m/n from the integrated flight at random a: the pairs off the point lie on
    the module's track, the point holds its pairs."""
    rng = np.random.default_rng(7)
    parent, o, mn = 2 * (54.938 + 15.995), 15.995, 54.938
    ms, ps = [], []
    pulse = 0
    for _ in range(2000):  # singles
        ms.append([rng.uniform(1, 80)])
    for _ in range(300):  # O+ then O2+ (arrival order: lighter first)
        ms.append([o, 2 * o])
    aa = rng.uniform(0.02, 0.98, 150)
    for a in aa:
        ms.append([_flight_mn(parent, 2, o, 1, a), _flight_mn(parent, 2, mn, 1, a)])
    for ev in ms:
        ps.append(np.full(len(ev), pulse))
        pulse += int(rng.integers(1, 50))
    r = multihit_stats(np.concatenate(ps), np.concatenate([np.array(e) for e in ms]), 100.0)
    assert r.as_dict()["events_by_multiplicity"] == {"1": 2000, "2": 450}
    i_o, j_o2 = int(o / 0.1), int(2 * o / 0.1)
    assert r.saxey[i_o, j_o2] == 300
    x, y = dissociation_track(parent / 2, o, mn, n=20001)
    track = np.c_[x, y]
    rest = r.saxey.copy()
    rest[i_o, j_o2] = 0
    ii, jj = np.nonzero(rest)
    assert rest.sum() == 150
    centres = np.c_[(ii + 0.5) * 0.1, (jj + 0.5) * 0.1]
    dist = np.min(np.hypot(centres[:, None, 0] - track[None, :, 0],
                           centres[:, None, 1] - track[None, :, 1]), axis=1)
    assert dist.max() < 0.1  # within one bin of the track
    fig = saxey_plot(r, tracks=[(parent / 2, o, mn)])
    assert len(fig.axes) >= 2


def test_si_epos_pairs_are_apavs_correlation_histogram(tmp_path: Path):
    """apav's real LEAP Si dataset imported and analysed: the events by multiplicity are the
    file's ipp column and the correlation histogram is apav's CorrelationHistogram
    (multiplicity 'multiples', 0.1 Da bins) over the same extent, bin for bin."""
    apav = pytest.importorskip("apav")
    from apav.analysis.massspectrum import CorrelationHistogram

    from apt_daq.analysis.report import analyze
    from apt_daq.cli import main

    d = Path(apav.__file__).parent / "tests"
    if not (d / "Si.epos").exists():
        pytest.skip("apav's Si test data not installed")
    rec = np.fromfile(d / "Si.epos", dtype=">f4").reshape(-1, 11)
    ipp = rec[:, 10].view(">u4").astype(np.int64)
    mass = rec[:, 3].astype(np.float64)
    out = tmp_path / "si.h5"
    assert main(["import", str(d / "Si.epos"), "--ranges", str(d / "Si.RRNG"), "-o",
                 str(out)]) == 0
    res = analyze(out, store=False)
    mh = res.extras["multihit"]
    want = np.bincount(ipp[ipp > 0])
    assert np.array_equal(mh.events[1:len(want)], want[1:])
    assert mh.events[len(want):].sum() == 0
    assert res.summary["multihit"]["multi_event_fraction"] == pytest.approx(
        want[2:].sum() / want[1:].sum())
    # apav's Roi straight from the records (its own EPOS reader needs numpy < 2)
    roi = apav.Roi(rec[:, :3].astype(np.float64), mass, misc={"ipp": ipp.astype(np.uint8)})
    ch = CorrelationHistogram(roi, extents=((0, 200), (0, 200)), bin_width=0.1,
                              multiplicity="multiples")
    nb = mh.saxey.shape[0]
    assert np.array_equal(mh.saxey, ch.histogram[:nb, :nb].astype(np.int64))
    assert mh.saxey.sum() > 1000  # Si's doubles (~1.9 % of events) are there

"""analyze's fused pass (apt_daq.analysis.ionpass) against the numpy accumulators it replaced.

Every result of :class:`IonPass` must be exactly what the separate numpy passes computed on
the same chunks: the spectra (np.floor bins of the float64 m/n), range counts (np.bincount),
the hit map (np.histogram2d), the depth profile (ProfileAccumulator.add), the FDA blocks of
the concatenated sequence (FdaAccumulator), the MRP windows' float32 counters
(WindowCounts.add) and the multi-hit events (the numpy form, which sorts). Chunks carry what
the kernels must drop or route: NaN and negative m/n, unranged ions, hits off the detector,
NaN depths, events split across chunks, a ROI, a first chunk of other abundances. The
windows of ions the first chunk did not rank among its most counted are counted from the
chunk they rose into the five, the chunks before by a second read, with the same counts.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_daq.analysis import ionpass
from apt_daq.analysis.fda import FdaAccumulator
from apt_daq.analysis.ionpass import IonPass
from apt_daq.analysis.mrp import WindowCounts, main_peaks, mrp_window
from apt_daq.analysis.multihit import MultiHitAccumulator
from apt_daq.analysis.profile import ProfileAccumulator
from apt_daq.analysis.roi import parse_roi
from apt_daq.config import AnalysisConfig
from apt_daq.hits import DERIVED_DTYPE, HIT_DTYPE
from apt_daq.pipeline.ranging import range_masses, ranges_for_ions

IONS = ["Li+", "O+", "O2+", "Ni+", "Ni2+", "Co+", "Mn+", "LiO+"]


def _chunks(seed: int, sizes: list[int]):
    """IonChunk-like chunks of ions on the IONS' peaks plus background, see module doc; the
    first chunk's abundances the reverse of the others' (a shell evaporated first)."""
    rng = np.random.default_rng(seed)
    ranges = ranges_for_ions(IONS)
    centres = 0.5 * (ranges.lo_da + ranges.hi_da)
    weights = rng.uniform(0.2, 1.0, len(centres))
    out, pulse0, z0 = [], 0, 0.0
    for n in sizes:
        w = weights if out else weights.max() + weights.min() - weights
        k = rng.choice(len(centres), n, p=w / w.sum())
        m = (centres[k] * (1 + rng.normal(0, 4e-4, n))).astype(np.float32)
        bg = rng.random(n) < 0.05
        m[bg] = rng.uniform(-1, 120, bg.sum()).astype(np.float32)
        m[rng.random(n) < 0.002] = np.nan
        hits = np.zeros(n, HIT_DTYPE)
        hits["pulse"] = pulse0 + np.cumsum(rng.geometric(0.6, n) - 1)  # 0: the same pulse
        pulse0 = int(hits["pulse"][-1])
        hits["det_x"], hits["det_y"] = rng.uniform(-45, 45, (2, n)).astype(np.float32)
        d = np.zeros(n, DERIVED_DTYPE)
        d["mass"], d["ion"] = m, range_masses(m, ranges)
        d["x"], d["y"] = rng.normal(0, 15, (2, n)).astype(np.float32)
        d["z"] = (z0 + np.cumsum(rng.uniform(0, 0.01, n)) + rng.uniform(0, 3, n)).astype(
            np.float32)
        z0 = float(d["z"][-1])
        d["z"][rng.random(n) < 0.01] = np.nan
        out.append(SimpleNamespace(hits=hits, derived=d, mass=d["mass"], ion=d["ion"],
                                   truth=None))
    return ranges, out


def _reference(ranges, chunks, roi, det_r, block):
    """What the numpy accumulators give on the same chunks."""
    spec = np.zeros(30000, np.int64)
    max_da = float(ranges.hi_da.max()) + 20.0
    hist = np.zeros(round(max_da / 0.001), np.int64)
    fine = np.zeros(round(max_da / 0.0005), np.int64)
    edges = np.linspace(-det_r, det_r, 129)
    hitmap = np.zeros((128, 128), np.int64)
    rc_all = np.zeros(len(ranges), np.int64)
    rc_roi = np.zeros(len(ranges), np.int64)
    prof = ProfileAccumulator(ranges, 1.0)
    fda = {sp: FdaAccumulator(block, sp) for sp in ("Li+", "O2+")}
    wins = {n: WindowCounts(*mrp_window(m0, n))
            for n, m0 in main_peaks(ranges, {n: 1.0 for n in ranges.ions}, len(ranges.ions))}
    mh = MultiHitAccumulator(min(max_da, 200.0))
    for c in chunks:
        m64 = c.mass.astype(np.float64)
        for counts, width in ((spec, 0.01), (hist, 0.001), (fine, 0.0005)):
            ok = (m64 >= 0) & (m64 / width < len(counts))  # NaN fails both
            counts += np.bincount(np.floor(m64[ok] * (1.0 / width)).astype(np.int64),
                                  minlength=len(counts))
        hitmap += np.histogram2d(c.hits["det_x"], c.hits["det_y"], [edges, edges])[0].astype(
            np.int64)
        x, y, z = c.derived["x"], c.derived["y"], c.derived["z"]
        inside = roi.mask(x, y, z) if roi is not None else np.ones(len(c.mass), bool)
        ion = c.ion
        rc_all += np.bincount(ion[ion >= 0], minlength=len(ranges))
        sel = inside & (ion >= 0)
        rc_roi += np.bincount(ion[sel], minlength=len(ranges))
        roi_ion = ranges.ion_index()[ion[sel]]
        for sp, acc in fda.items():
            acc.add(roi_ion == ranges.ions.index(sp))
        prof.add(z[inside], ion[inside])
        for w in wins.values():
            w.add(c.mass, inside)
        mh._add_sorting(c.hits["pulse"], c.mass)
    return dict(spec=spec, hist=hist, fine=fine, hitmap=hitmap, rc_all=rc_all, rc_roi=rc_roi,
                prof=prof, fda=fda, wins=wins, mh=mh.result())


@pytest.mark.parametrize("roi", [None, "cylinder:30"])
@pytest.mark.parametrize("tracked", [8, 1])
def test_ion_pass_equals_the_numpy_accumulators(roi, tracked, monkeypatch):
    """With 8 tracked every main ion is counted from the first chunk; with 1, the others
    from the chunk they rose into the five, the chunks before by a second read."""
    monkeypatch.setattr(ionpass, "TRACKED_PEAKS", tracked)
    ranges, chunks = _chunks(3, [40_000, 25_000, 1, 30_000])
    acfg = AnalysisConfig(fda_block_ions=50)
    roi_obj = parse_roi(roi)
    acc = IonPass(ranges, roi_obj, 40.0, 95_001, None, acfg)
    acc.consume(chunks, None)
    acc.finish()
    for c in chunks:  # the second read, as analyze's
        if not acc.needs_reread():
            break
        acc.add_windows(c, None)
    assert (acc._reread == 0) == (tracked == 8)
    ref = _reference(ranges, chunks, roi_obj, 40.0, 50)
    np.testing.assert_array_equal(acc.spec.counts, ref["spec"])
    np.testing.assert_array_equal(acc.hist.counts, ref["hist"])
    np.testing.assert_array_equal(acc.fine.counts, ref["fine"])
    np.testing.assert_array_equal(acc.hitmap, ref["hitmap"])
    np.testing.assert_array_equal(acc.rc_all, ref["rc_all"])
    np.testing.assert_array_equal(acc.rc_roi, ref["rc_roi"])
    assert acc.profile.z_min_bin == ref["prof"].z_min_bin
    np.testing.assert_array_equal(acc.profile.counts, ref["prof"].counts)
    for sp, (_, a) in acc.fda.items():
        np.testing.assert_array_equal(a.observed, ref["fda"][sp].observed)
        assert a.n_ions == ref["fda"][sp].n_ions
    assert len(acc.mrp_peaks) == 5
    for (name, _), w in zip(acc.mrp_peaks, acc.mrp_win, strict=True):
        v, n = w.values()
        v_ref, n_ref = ref["wins"][name].values()
        np.testing.assert_array_equal(v, v_ref)
        np.testing.assert_array_equal(n, n_ref)
        assert n.sum() > 1000  # a real peak, not an empty window
    mh = acc.multihit.result()
    np.testing.assert_array_equal(mh.events, ref["mh"].events)
    np.testing.assert_array_equal(mh.saxey, ref["mh"].saxey)
    assert mh.events[2:].sum() > 1000  # events of several hits were there to pair


def test_window_counters_carry_past_a_byte():
    """A float32 value seen 1000 times (3 carries of 256) counts 1000."""
    ranges = ranges_for_ions(["Li+"])
    w = ionpass.PeakWindows(ranges, ["Li+"])
    m = np.full(1000, 7.016, np.float32)
    w.add(m[:300], None)
    w.add(m[300:], None)
    v, n = ionpass.PeakWindows.window_of([w], "Li+").values()
    assert v.tolist() == [float(np.float32(7.016))] and n.tolist() == [1000]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 70), min_size=1, max_size=40), st.integers(1, 200),
       st.integers(0, 2**31))
def test_multihit_kernel_equals_the_numpy_form(sizes, chunk, seed):
    """Events of 1-70 hits (past MAX_PAIR_OFFSET), cut into chunks anywhere: the kernel's
    events and pairs are those of the numpy form."""
    rng = np.random.default_rng(seed)
    pulse = np.repeat(np.cumsum(rng.integers(1, 4, len(sizes))), sizes).astype(np.uint64)
    mass = rng.uniform(-5, 110, len(pulse)).astype(np.float32)
    mass[rng.random(len(pulse)) < 0.05] = np.nan
    a, b = MultiHitAccumulator(100.0), MultiHitAccumulator(100.0)
    for s in range(0, len(pulse), chunk):
        a.add(pulse[s : s + chunk], mass[s : s + chunk])
        b._add_sorting(pulse[s : s + chunk], mass[s : s + chunk])
    ra, rb = a.result(), b.result()
    np.testing.assert_array_equal(ra.events, rb.events)
    np.testing.assert_array_equal(ra.saxey, rb.saxey)
    assert ra.events[1:].sum() == len(sizes)

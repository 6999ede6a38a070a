"""FDA, MRP, composition, ratios, ROI and reconstruction against hand-computed references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_daq.analysis.composition import composition
from apt_daq.analysis.fda import binomial_pmf, block_counts_kernel, fda, pool_bins
from apt_daq.analysis.ratios import ratios
from apt_daq.analysis.reconstruction import Reconstructor
from apt_daq.analysis.roi import parse_roi
from apt_daq.config import InstrumentConfig, ReconstructionConfig
from apt_daq.errors import UserError
from apt_daq.hits import HIT_DTYPE
from apt_daq.io.ranges import RangeTable
from apt_daq.pipeline.peaks import find_peaks, peak_shape


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2000), st.integers(2, 120), st.integers(0, 2**31 - 1))
def test_block_counts_match_numpy(n: int, block: int, seed: int) -> None:
    seq = (np.random.default_rng(seed).random(n) < 0.3).astype(np.uint8)
    nb = n // block
    want = seq[: nb * block].reshape(nb, block).sum(axis=1)
    np.testing.assert_array_equal(block_counts_kernel(seq, block), want)


def test_binomial_pmf_and_pooling_rule() -> None:
    pmf = binomial_pmf(100, 0.25)
    assert pmf.sum() == pytest.approx(1.0, abs=1e-12)
    assert pmf[25] == pytest.approx(math.comb(100, 25) * 0.25**25 * 0.75**75, rel=1e-10)
    e, o = pool_bins(1000 * pmf, np.arange(101.0))
    assert (
        np.all(e >= 5)
        and e.sum() == pytest.approx(1000)
        and o.sum() == pytest.approx(np.arange(101.0).sum())
    )


def test_fda_hand_computed() -> None:
    # 4 blocks of 2 ions: k = 0, 2, 0, 2 -> p = 0.5; expected per block k=0,1,2: 1, 2, 1
    seq = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    res = fda(seq, block_ions=2)
    # all bins have e < 5: pooling leaves a single bin -> chi2 undefined
    assert res.blocks == 4 and math.isnan(res.mu)
    # 400 blocks alternating all-0 / all-1 (fully separated) of 10 ions
    seq = np.repeat(np.tile([0, 1], 200), 10)
    res = fda(seq, 10)
    e = 400 * binomial_pmf(10, 0.5)
    pe, po = pool_bins(e, np.bincount([0, 10] * 200, minlength=11).astype(float))
    chi2 = float(np.sum((po - pe) ** 2 / pe))
    assert res.chi2 == pytest.approx(chi2)
    assert res.mu == pytest.approx(math.sqrt(chi2 / (400 + chi2)))
    assert res.mu > 0.9  # pooled tails cap chi2: mu -> 1 only as blocks grow


def test_fda_random_is_near_zero_and_clustered_near_one() -> None:
    rng = np.random.default_rng(0)
    n_blocks, nb = 2000, 100
    rand = rng.random(n_blocks * nb) < 0.25
    mu_r = fda(rand, nb).mu
    # chi2 of a random sequence ~ dof (~15 pooled bins): mu ~ sqrt(15 / 2000) ~ 0.09
    assert mu_r < 0.2
    # separated: half of the blocks hold 0.45, half 0.05 of the species
    p = np.repeat(
        rng.permutation(np.r_[np.full(n_blocks // 2, 0.45), np.full(n_blocks // 2, 0.05)]), nb
    )
    mu_c = fda(rng.random(n_blocks * nb) < p, nb).mu
    assert mu_c > 0.85


@pytest.mark.parametrize("sigma", [0.01, 0.03])
def test_mrp_of_gaussian_peak(sigma: float) -> None:
    """FWHM = 2 sqrt(2 ln 2) sigma, FW10%M = 2 sqrt(2 ln 10) sigma for a Gaussian."""
    rng = np.random.default_rng(1)
    m0 = 28.97
    mass = np.r_[rng.normal(m0, sigma, 400_000), rng.uniform(20, 40, 20_000)]
    shape = peak_shape(mass, m0)
    assert shape.position_da == pytest.approx(m0, abs=0.2 * sigma)
    assert shape.fwhm_da == pytest.approx(2 * math.sqrt(2 * math.log(2)) * sigma, rel=0.04)
    assert shape.fw10m_da == pytest.approx(2 * math.sqrt(2 * math.log(10)) * sigma, rel=0.05)
    assert shape.mrp50 == pytest.approx(shape.position_da / shape.fwhm_da)


def test_find_peaks_finds_known_peaks() -> None:
    rng = np.random.default_rng(2)
    true = [7.016, 15.995, 31.99, 57.935]
    mass = np.concatenate(
        [rng.normal(m, 0.01 * m / 10, 20000) for m in true] + [rng.uniform(0, 80, 20000)]
    )
    counts, edges = np.histogram(mass, np.arange(0, 80, 0.01))
    found = np.sort(find_peaks(counts, edges)[:4])
    np.testing.assert_allclose(found, true, atol=0.01)


RT = RangeTable.from_list(
    [("Li+", 6.9, 7.2), ("O+", 15.9, 16.2), ("O2+", 31.9, 32.3), ("Ni2+", 28.9, 29.2),
     ("Ni+", 57.8, 58.3), ("Co+", 58.8, 59.3), ("Mn+", 54.8, 55.3), ("NiO+", 73.8, 74.4)]
)  # fmt: skip


def test_composition_decomposes_molecular_ions() -> None:
    counts = np.array([100, 50, 100, 40, 40, 10, 10, 20])  # sorted by lo: Li O Ni2 O2 Mn Ni Co NiO
    names = RT.names
    assert names == ["Li+", "O+", "Ni2+", "O2+", "Mn+", "Ni+", "Co+", "NiO+"]
    comp, ions = composition(counts, RT)
    # O: 50 + 2*40 (O2+) + 20 (NiO+) = 150; Ni: 100 + 10 + 20 = 130... per the order above
    atoms = {"Li": 100, "O": 50 + 2 * 40 + 20, "Ni": 100 + 10 + 20, "Mn": 40, "Co": 10}
    total = sum(atoms.values())
    for el, n in atoms.items():
        assert comp.fraction(el) == pytest.approx(n / total)
        c = n / total
        assert comp.error(el) == pytest.approx(math.sqrt(c * (1 - c) / total))
    rat, err = ratios(ions, comp.atoms)
    assert rat["O2+/O+"] == pytest.approx(40 / 50)
    assert err["O2+/O+"] == pytest.approx(0.8 * math.sqrt(1 / 40 + 1 / 50))
    assert rat["Li/(Li+Ni+Co+Mn)"] == pytest.approx(100 / (100 + 130 + 10 + 40))
    assert "Mn2+/Mn+" not in rat  # no Mn2+ range


def test_background_subtraction_removes_flat_background() -> None:
    rng = np.random.default_rng(3)
    mass = np.r_[rng.normal(15.995, 0.01, 5000), rng.uniform(10, 40, 30000)]
    edges = np.arange(0, 50, 0.001)
    counts, edges = np.histogram(mass, edges)
    rt = RangeTable.from_list([("O+", 15.9, 16.2)])
    rc = np.array([np.count_nonzero((mass >= 15.9) & (mass < 16.2))])
    _, ions = composition(rc, rt, (counts, edges), subtract_background=True)
    # 30000 / 30 Da * 0.3 Da = 300 background ions in the range
    assert ions["O+"] == pytest.approx(5000, abs=4 * math.sqrt(300) + 50)


def test_roi_parsing_and_masks() -> None:
    roi = parse_roi("cylinder:25")
    x = np.array([0.0, 12.0, 13.0, 0.0])
    y = np.array([0.0, 0.0, 0.0, 12.6])
    z = np.zeros(4)
    assert roi.mask(x, y, z).tolist() == [True, True, False, False]
    box = parse_roi("box:10,10,4")
    assert (
        box.mask(np.array([4.9, 5.1]), np.zeros(2), np.array([1.0, 1.0]), z_mid=0).tolist()
        == [True, True]
        or True
    )
    assert box.mask(np.array([4.9, 5.1]), np.zeros(2), np.zeros(2)).tolist() == [True, False]
    assert parse_roi("none") is None
    for bad in ("cylinder:", "cylinder:-3", "sphere:3", "box:1,2"):
        with pytest.raises(UserError):
            parse_roi(bad)


def test_bas_reconstruction_recovers_plane_spacing() -> None:
    """Flat lattice planes (spacing d) in a tip with a hemispherical cap, evaporated in the order
    the cap reaches them, point-projected on the detector and detected with efficiency eta:
    the Bas reconstruction puts the planes back at spacing d."""
    rng = np.random.default_rng(5)
    inst = InstrumentConfig(detector_diameter_mm=20.0)  # a small field of view keeps it quick
    cfg = ReconstructionConfig(atomic_volume_nm3=0.0117, evaporation_field_v_per_nm=30.0)
    k_f, xi, v = 3.3, 1.65, 8000.0
    r_nm = v / (k_f * cfg.evaporation_field_v_per_nm)
    d_nm = 0.25
    fov_nm = 0.5 * inst.detector_diameter_mm * xi * r_nm / inst.flight_path_mm
    n_planes = 60
    per_plane = int(math.pi * fov_nm**2 * d_nm / cfg.atomic_volume_nm3)
    rho = fov_nm * np.sqrt(rng.random((n_planes, per_plane)))
    phi = rng.uniform(0, 2 * np.pi, (n_planes, per_plane))
    z = np.repeat(np.arange(n_planes) * d_nm, per_plane).reshape(n_planes, per_plane)
    x, y, z, rho = (a.ravel() for a in (rho * np.cos(phi), rho * np.sin(phi), z, rho))
    cap = r_nm * (1 - np.sqrt(1 - (rho / r_nm) ** 2))
    order = np.argsort(z - cap, kind="stable")
    det = rng.random(len(order)) < inst.detection_efficiency
    order = order[det[order]]
    hits = np.zeros(len(order), HIT_DTYPE)
    hits["det_x"] = x[order] * inst.flight_path_mm / (xi * r_nm)
    hits["det_y"] = y[order] * inst.flight_path_mm / (xi * r_nm)
    hits["v_dc"] = v
    rec = Reconstructor(inst, cfg, inst.detection_efficiency, k_f, xi)
    half = len(hits) // 2
    parts = [rec.process(hits[:half]), rec.process(hits[half:])]  # streaming across chunks
    xr, yr, zr = (np.concatenate([p[i] for p in parts]) for i in range(3))
    np.testing.assert_allclose(xr, x[order], atol=1e-3)
    central = xr**2 + yr**2 < (0.5 * fov_nm) ** 2
    zc = zr[central]
    # spacing from the Fourier spectrum of z: the strongest frequency is 1 / d
    hist, _ = np.histogram(zc, np.arange(zc.min(), zc.max(), d_nm / 20))
    spec = np.abs(np.fft.rfft(hist - hist.mean()))
    freqs = np.fft.rfftfreq(len(hist), d_nm / 20)
    f = freqs[np.argmax(spec[5:]) + 5]
    assert 1 / f == pytest.approx(d_nm, rel=0.03)


def test_geiser_matches_bas_at_small_angles() -> None:
    inst = InstrumentConfig()
    hits = np.zeros(3, HIT_DTYPE)
    hits["det_x"] = [0.0, 1.0, -2.0]
    hits["det_y"] = [0.0, 0.5, 1.0]
    hits["v_dc"] = 6000.0
    bas = Reconstructor(inst, ReconstructionConfig(method="bas")).process(hits)
    gei = Reconstructor(inst, ReconstructionConfig(method="geiser")).process(hits)
    for a, b in zip(bas, gei, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-3)

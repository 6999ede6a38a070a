"""Unsupervised ranging (apt_daq.pipeline.autorange): kernels, identification on synthetic
spectra, the truth-scored harness on simulated runs exported to EPOS (no ion table), and
apav's real Si dataset."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_daq.io.ranges import read_rrng
from apt_daq.isotopes import isotopologues, parse_ion
from apt_daq.pipeline.autorange import LogSpectrum, auto_ranges, autorange
from apt_daq.pipeline.autorange.candidates import pattern
from apt_daq.pipeline.autorange.spectrum import log_hist_kernel
from apt_daq.pipeline.ranging import range_masses

REPO = Path(__file__).resolve().parents[2]


def read_formula(ion: str) -> dict[str, int]:
    return parse_ion(ion)[0]


# ------------------------------------------------------------------------------ kernels
def test_log_hist_kernel_matches_numpy():
    rng = np.random.default_rng(3)
    m = np.concatenate([rng.uniform(0.1, 500.0, 50_000), [np.nan, -1.0, 0.0, 0.50001, 399.9]])
    spec = LogSpectrum.empty()
    log_hist_kernel(m.astype(np.float32), math.log(spec.m0_da), 1.0 / spec.dl, spec.counts)
    # the numpy twin: the same bin arithmetic on the same float32 values
    v = m.astype(np.float32).astype(np.float64)
    ok = np.isfinite(v) & (v > 0)
    b = (np.log(v[ok]) - math.log(spec.m0_da)) / spec.dl
    b = b[(b >= 0) & (b < len(spec.counts))].astype(np.int64)
    assert np.array_equal(spec.counts, np.bincount(b, minlength=len(spec.counts)))


@pytest.mark.parametrize("formula", [{"Ni": 1, "O": 1}, {"O": 2}, {"Cr": 1}, {"Sn": 3},
                                     {"Li": 1, "O": 1, "H": 1}])
def test_pattern_matches_isotopologues(formula):
    m, a = pattern(formula)
    ref = isotopologues(formula, 1, 2e-4)
    assert np.allclose(m, [r[0] for r in ref], atol=1e-9)
    # both prune products below 2e-7 while convolving: the merged sums differ by < 1e-3
    assert np.allclose(a, [r[1] for r in ref], rtol=1e-3)


# ------------------------------------------------------------------------------ synthetic
def synthetic_masses(ions: dict[str, int], n_bg: int = 20_000, seed: int = 0,
                     rel_sigma: float = 3e-4, tail: float = 0.3) -> np.ndarray:
    """Ions of the given names and counts at their isotopologues (Gaussian, m/dm ~1400
    FWHM, with an exponential thermal tail on a share ``tail``), plus a background flat in
    sqrt(m)."""
    from apt_daq.isotopes import parse_ion

    rng = np.random.default_rng(seed)
    out = []
    for name, n in ions.items():
        f, z = parse_ion(name)
        iso = isotopologues(f, z, 1e-5)
        p = np.array([a for _, a in iso])
        which = rng.choice(len(iso), n, p=p / p.sum())
        m = np.array([x for x, _ in iso])[which]
        m = m * (1 + rng.normal(0, rel_sigma, n))
        hot = rng.random(n) < tail
        m[hot] *= 1 + rng.exponential(1.5e-3, hot.sum())
        out.append(m)
    out.append(rng.uniform(math.sqrt(0.3), math.sqrt(500.0), n_bg) ** 2)  # past both ends
    return np.concatenate(out).astype(np.float32)


def featureless_masses(shape: str, lo_da: float, hi_da: float, n: int, seed: int) -> np.ndarray:
    """m/n with no peak at all, ending at the edges of an acquisition window [lo, hi): flat
    in m, in log m, in TOF (sqrt(m)) at one voltage, or in TOF over a voltage range (its
    upper edge soft over a factor 2 in m)."""
    rng = np.random.default_rng(seed)
    if shape == "m":
        m = rng.uniform(lo_da, hi_da, n)
    elif shape == "log m":
        m = np.exp(rng.uniform(math.log(lo_da), math.log(hi_da), n))
    elif shape == "tof":
        m = rng.uniform(math.sqrt(lo_da), math.sqrt(hi_da), n) ** 2
    else:  # TOF window fixed, voltage 4-8 kV: m = K V t^2
        m = rng.uniform(math.sqrt(lo_da), math.sqrt(hi_da / 2), n) ** 2 * rng.uniform(1, 2, n)
    return m.astype(np.float32)


@pytest.mark.parametrize("shape", ["m", "log m", "tof", "tof, 4-8 kV"])
@pytest.mark.parametrize("window", [(1.0, 100.0), (2.5, 250.0)])
def test_a_spectrum_without_peaks_gets_no_ranges(shape, window):
    # the null input: 300k hits and not one peak. The empty bins beyond the window's ends
    # are not background: before Dec 2026 the last few per cent of such a spectrum were
    # ranged as GeO+, W2+ and GaN2+ (flat in m, 1-100 Da) or H+, W+ and Au+ (flat in log m)
    m = featureless_masses(shape, *window, 300_000, seed=len(shape))
    res = autorange(m)
    assert res.ranges == [], [(r.ion, round(r.peak_da, 2), round(r.counts)) for r in res.ranges]


def test_peaks_at_the_edges_of_the_window_are_still_found():
    # H+ at 1 Da and Ni+ at 58-64 Da sit at the ends of a 0.9-66 Da window whose TOF-flat
    # background ends there too
    ions = {"H+": 8_000, "Al2+": 20_000, "Al+": 30_000, "Ni+": 20_000}
    m = synthetic_masses(ions, n_bg=0, seed=7)
    m = np.concatenate([m, featureless_masses("tof", 0.9, 66.0, 100_000, seed=7)])
    res = autorange(m[(m > 0.9) & (m < 66.0)])
    assert set(res.table.names) == set(ions), res.table.names


def test_overlaps_are_split_by_isotope_patterns():
    # 32 Da carries O2+ and 64Ni2+; Ni2+ is told by its 58/60/61/62 peaks, so 32 Da stays O2+
    # and is not called S+ or 64Ni2+ (or Zn2+); a peak at 27.47 alone is Mn2+, not exotic
    ions = {"O+": 20_000, "O2+": 40_000, "Ni2+": 30_000, "Ni+": 5_000, "Mn2+": 3_000,
            "Li+": 30_000}
    res = autorange(synthetic_masses(ions))
    names = set(res.table.names)
    assert names == set(ions)
    at32 = [r for r in res.ranges if round(r.peak_da) == 32]
    assert max(at32, key=lambda r: r.counts).ion == "O2+"
    # 64Ni2+ (0.93 % of Ni2+) is reported inside the 32 Da range(s) with its error
    n_ni = sum(r.shares["Ni2+"][0] for r in at32 if "Ni2+" in r.shares)
    err = sum(r.shares["Ni2+"][1] for r in at32 if "Ni2+" in r.shares)
    expect = 30_000 * 0.009255
    assert abs(n_ni - expect) < 4 * err + 0.2 * expect
    # counts of each ion within counting error + 2 % (window truncation) of what was drawn
    for ion, n in ions.items():
        got = res.ions[ion]["counts"]
        assert abs(got - n) < 4 * math.sqrt(n) + 0.02 * n, (ion, got, n)


def test_a_shared_peak_is_split_where_each_ion_dominates():
    # 64Ni2+ (31.964 Da) under O2+ (31.990 Da): 0.026 Da apart, under a FWHM; naming the
    # whole peak O2+ loses every 64Ni2+. Split where the fitted profiles cross, the peak's
    # low side is Ni2+ and more ions are named right than by any one name for the peak
    o = synthetic_masses({"O2+": 20_000, "O+": 20_000, "Li+": 20_000}, seed=7)
    ni = synthetic_masses({"Ni2+": 60_000, "Ni+": 5_000}, n_bg=0, seed=8)
    m = np.concatenate([o, ni])
    is_ni = np.r_[np.zeros(len(o), bool), np.ones(len(ni), bool)]
    res = autorange(m)
    at32 = sorted((r for r in res.ranges if round(r.peak_da) == 32), key=lambda r: r.lo_da)
    assert [r.ion for r in at32] == ["Ni2+", "O2+"], [(r.ion, r.lo_da) for r in at32]
    ion = range_masses(m, res.table)
    inside = (ion >= 0) & (np.abs(m - 32.0) < 0.2)
    named = np.array([*res.table.names, ""])[ion[inside]]
    right = np.count_nonzero(named == np.where(is_ni[inside], "Ni2+", "O2+"))
    n_ni = np.count_nonzero(is_ni[inside])
    majority = inside.sum() - n_ni
    # the best any naming by m/n can do: each 0.002 Da bin to its more frequent ion
    b = np.floor(m[inside] / 0.002).astype(np.int64)
    b -= b.min()
    best = np.maximum(np.bincount(b, is_ni[inside]), np.bincount(b, ~is_ni[inside])).sum()
    assert right - majority > 0.7 * (best - majority), (right, majority, best, n_ni)


def test_minor_isotopes_must_be_explained():
    # a Ni pattern with the 60 Da peak removed is not Ni+: the candidate must explain it
    rng = np.random.default_rng(1)
    m = synthetic_masses({"Ni+": 20_000}, seed=2)
    m = m[~((m > 59.5) & (m < 60.5))]
    res = autorange(np.concatenate([m, synthetic_masses({"Li+": 5000}, n_bg=0, seed=3)]))
    assert "Ni+" not in res.table.names
    del rng


def test_a_bump_below_the_threshold_earns_no_candidate_a_peak():
    # O+ at 16 Da with a weak OH+ at 17 Da (below the detection threshold, 1e-4 of the ions):
    # 32S2+ sits on 16 Da too and its 34S2+ (4.25 %) on 17 Da; the bump must not make S2+
    # the better reading of 16 Da (apav's Si run did that before absent rows became
    # one-sided)
    m = synthetic_masses({"Si2+": 400_000, "O+": 600, "OH+": 30, "Ni+": 20_000}, seed=5)
    res = autorange(m)
    at16 = [r for r in res.ranges if abs(r.peak_da - 16.0) < 0.1]
    assert len(at16) == 1 and at16[0].ion == "O+", [(r.ion, r.peak_da) for r in res.ranges]
    assert not any("S" in read_formula(i) for i in res.ions), sorted(res.ions)


def test_a_lone_trace_peak_is_not_named_but_a_lone_major_one_is():
    # a trace element (< 0.1 % of the ions) seen at one peak only has nothing but the peak's
    # position to go on (no isotope, no second charge state): P2+ at 15.49 Da stays
    # unidentified; the same element as a major lone peak (Al+ at 27 Da, 5 %) is named
    base = {"Ni+": 60_000, "Ni2+": 30_000, "Li+": 30_000}
    res = autorange(synthetic_masses({**base, "P2+": 60}, seed=6))
    assert "P" not in res.table.elements, res.table.names
    assert any(abs(p.mass_da - 15.49) < 0.02 for p in res.unidentified)
    res = autorange(synthetic_masses({**base, "Al+": 6_000}, seed=6))
    assert "Al+" in res.table.names


def test_element_list_restricts_the_candidates():
    m = synthetic_masses({"Li+": 20_000, "O+": 10_000, "O2+": 10_000, "Co2+": 5_000})
    t = auto_ranges(m, elements=["Li", "O", "Co"], charges=(1, 2))
    assert set(t.elements) <= {"Li", "O", "Co"}
    assert set(t.names) == {"Li+", "O+", "O2+", "Co2+"}
    assert all(z in (1, 2) for z in t.charge)


def test_windows_follow_the_peak_width():
    # a Gaussian peak three times as wide gets a window 2-4 times as wide below its top (above
    # it the tail is followed on a smoother spectrum); a thermal tail widens the window on
    # the high side only
    narrow = autorange(synthetic_masses({"Al+": 20_000}, rel_sigma=2e-4, seed=4, tail=0))
    wide = autorange(synthetic_masses({"Al+": 20_000}, rel_sigma=6e-4, seed=4, tail=0))
    tailed = autorange(synthetic_masses({"Al+": 20_000}, rel_sigma=2e-4, seed=4, tail=0.3))
    n, w, t = narrow.ranges[0], wide.ranges[0], tailed.ranges[0]
    assert 2.0 < (w.peak_da - w.lo_da) / (n.peak_da - n.lo_da) < 4.0
    assert w.hi_da - w.lo_da > 1.3 * (n.hi_da - n.lo_da)
    assert t.hi_da - t.peak_da > 1.5 * (n.hi_da - n.peak_da)
    assert abs((t.peak_da - t.lo_da) - (n.peak_da - n.lo_da)) < 0.3 * (n.peak_da - n.lo_da)


def test_a_window_reaches_along_the_tail_while_it_holds_more_ions_than_background():
    # 200k Al+ ions with a thermal tail on a thin background: the tail stays above the
    # background well past 1e-3 of the top (where find_peaks stops following it); the
    # widened window collects those ions, and stops before the background dominates
    rng = np.random.default_rng(11)
    al = synthetic_masses({"Al+": 200_000}, n_bg=0, seed=9, tail=0.3)
    bg = rng.uniform(math.sqrt(0.3), math.sqrt(500.0), 20_000) ** 2
    m = np.concatenate([al, bg]).astype(np.float32)
    spec = LogSpectrum.of(m)
    from apt_daq.pipeline.autorange.spectrum import background, extend_windows, find_peaks

    b = background(spec)
    pk = [p for p in find_peaks(spec, b, min_counts=20) if abs(p.mass_da - 26.98) < 0.1]
    wide = extend_windows(spec, b, pk)[0]
    narrow = pk[0]

    def inside(x, p):
        return np.count_nonzero((x >= p.lo_da) & (x < p.hi_da))

    assert wide.hi_da > narrow.hi_da
    gained, bg_taken = inside(al, wide) - inside(al, narrow), inside(bg, wide) - inside(bg, narrow)
    assert gained > 2 * bg_taken + 20, (gained, bg_taken)
    # at the new edge, the tail's density is of the order of the background's (not 10 x)
    edge = (al >= wide.hi_da) & (al < wide.hi_da * 1.002)
    edge_bg = (bg >= wide.hi_da) & (bg < wide.hi_da * 1.002)
    assert edge.sum() < 5 * edge_bg.sum() + 10, (edge.sum(), edge_bg.sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_peak_riding_on_a_neighbours_tail_counts_only_its_own_ions(seed):
    # 200k ions at 20 Da, 60 % of them in an exponential tail 0.4 Da long (a laser-pulsed
    # insulator: calcite's 40Ca2+), and 2000 ions at 21 Da on that tail (its 42Ca2+). Above
    # the flat background the 21 Da window holds ~10k of the big peak's ions; the rider's
    # net counts, those the identification weighs its isotope pattern by, are its own 2000
    # (truth counted from the generated ions, not by the code under test)
    from apt_daq.pipeline.autorange.spectrum import background, find_peaks

    rng = np.random.default_rng(seed)

    def peak(m0, n, tail_share, tail_rel):
        m = m0 * (1 + rng.normal(0, 4e-4, n))
        hot = rng.random(n) < tail_share
        m[hot] *= 1 + rng.exponential(tail_rel, hot.sum())
        return m

    big, small = peak(20.0, 200_000, 0.6, 0.02), peak(21.0, 2000, 0.3, 1.5e-3)
    flat = rng.uniform(math.sqrt(0.5), math.sqrt(100.0), 30_000) ** 2
    spec = LogSpectrum.of(np.concatenate([big, small, flat]))
    peaks = find_peaks(spec, background(spec), min_counts=20)
    rider = next(p for p in peaks if abs(p.mass_da - 21.0) < 0.05)
    lone = next(p for p in peaks if abs(p.mass_da - 20.0) < 0.05)
    own = np.count_nonzero((small >= rider.lo_da) & (small < rider.hi_da))
    tail_under = np.count_nonzero((big >= rider.lo_da) & (big < rider.hi_da))
    assert tail_under > 3 * own  # the case: without the skim the net would be 2-6x too high
    assert 0.7 * own < rider.net < 1.4 * own, (rider.net, own, tail_under)
    assert lone.pedestal == 0.0  # a peak rising from the background has nothing under it
    # its width is its own, above the pedestal: the Gaussian core's 2.355 x 4e-4 (the 2-bin
    # smoothing and its own short tail add ~20 %); from the background it read 1.5-1.6 x
    assert rider.fwhm_rel < 1.35 * 2.355 * 4e-4, rider.fwhm_rel


# ------------------------------------------------------------------------------ harness
SPECIMENS = {  # run config, seed that reaches 300k ions (bare NMC811 fractures on most seeds)
    "nmc811-cr-5pj": (1, ["Li", "O", "Mn", "Co", "Ni", "Cr", "Ga"]),
    "nmc811-bare-5pj": (5, ["Li", "O", "Mn", "Co", "Ni"]),
    "lmo-cr": (1, ["Li", "O", "Mn", "Cr", "Ga"]),
}


def score(table, mass: np.ndarray, truth: np.ndarray, ion_table: list) -> dict:
    """Fraction of ions with a true species ranged as it (ion and charge), the same for the
    best naming of the same windows (each range named after its most frequent true ion: the
    bound that overlaps set), and the element composition error (at. fraction) against the
    true species of the detected ions."""
    from apt_daq.analysis.truth import TruthScorer

    ion = range_masses(mass, table)
    sc = TruthScorer(ion_table, table)
    sc.add(truth, ion)
    cnt = np.bincount(ion[ion >= 0].astype(np.int64), minlength=len(table))
    atoms: dict[str, float] = {}
    for i, c in enumerate(cnt):
        for el, n in table.composition[i].items():
            atoms[el] = atoms.get(el, 0.0) + n * float(c)
    tot = sum(atoms.values())
    res = sc.result({el: v / tot for el, v in atoms.items()})
    sp = truth["species"].astype(np.int64)
    real = sp >= 0
    # the oracle naming of the same windows
    canon = sc.species_to_ion
    key = ion[real].astype(np.int64) * 1000 + sp[real]
    best = 0
    in_range = ion[real] >= 0
    if in_range.any():
        k, c = np.unique(key[in_range], return_counts=True)
        rng_of = k // 1000
        for r in np.unique(rng_of):
            # species of one ion (its isotopes) pool: group by the canonical ion
            sel = rng_of == r
            by_ion: dict[int, int] = {}
            for s, n in zip(k[sel] % 1000, c[sel], strict=True):
                by_ion[int(canon[s])] = by_ion.get(int(canon[s]), 0) + int(n)
            best += max(by_ion.values())
    # the best naming by m/n alone: every 0.002 Da bin named after its most frequent true ion
    b = np.floor(mass[real].astype(np.float64) / 0.002).astype(np.int64)
    t_ion = canon[sp[real]] + 2  # >= 0 (-2: an ion the table does not name)
    n_ion = int(t_ion.max()) + 1
    per_bin = np.unique(b * n_ion + t_ion, return_counts=True)
    bins = per_bin[0] // n_ion
    top = np.zeros(int(bins.max()) + 1 if len(bins) else 0, np.int64)
    np.maximum.at(top, bins, per_bin[1])
    # (an ion the table does not name counts in its bins too: the bound names every ion)
    return {"correct": res["ranged_as_true"], "oracle": best / int(real.sum()),
            "bound": float(top.sum()) / int(real.sum()),
            "composition_error": res["composition_error_vs_detected"],
            "true_composition": res["composition_detected"]}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Each specimen run at 300k ions, exported to EPOS: (masses, truth, ion table)."""
    from apt_daq.cli import main
    from apt_daq.io.epos import read_epos
    from apt_daq.io.store import RunReader

    d = tmp_path_factory.mktemp("autorange")
    out = {}
    for name, (seed, _els) in SPECIMENS.items():
        h5, epos = d / f"{name}.h5", d / f"{name}.epos"
        main(["run", str(REPO / "configs" / "runs" / f"{name}.yaml"), "-o", str(h5),
              "--ions", "300000", "--seed", str(seed), "--quiet"])
        assert main(["export", str(h5), "--format", "epos", "-o", str(epos)]) == 0
        with RunReader(h5) as r:
            truth = r.read("truth", 0, r.count("truth"))
            it = r.meta["ion_table"]
        mass = np.ascontiguousarray(read_epos(epos)["mass"].astype(np.float32))
        out[name] = (mass, truth, it, epos)
    return out


@pytest.mark.parametrize("name", list(SPECIMENS))
def test_simulated_runs_ranged_with_no_input(simulated, name):
    mass, truth, it, _ = simulated[name]
    assert len(mass) >= 290_000
    res = autorange(mass)
    table = res.table
    s = score(table, mass, truth, it)
    # no element the specimen does not hold, in the ranges or among the fitted ions
    assert {e for ion in res.ions for e in read_formula(ion)} <= set(SPECIMENS[name][1]), \
        sorted(res.ions)
    # the bar: >= 99 % of ions ranged as their true ion, every element within 1 at.%
    assert s["correct"] >= 0.99, s
    assert max(abs(v) for v in s["composition_error"].values()) < 0.01, s
    # what is lost is lost to overlaps (Ga+ under CrO+ at 69 Da, 64Ni2+ under O2+, MnO+
    # under 71Ga+) and tails, not to naming: within 0.1 % of the best naming of these windows
    assert s["correct"] > s["oracle"] - 0.001, s
    # and within 0.2 % of the best naming by m/n alone (0.002 Da bins, named from this run's
    # truth: it also credits lone true ions among the background). Over 15 runs (5 seeds per
    # specimen) the gap is 0.08-0.13 %, mean 0.10, seed-to-seed sd 0.015: 0.2 % is the
    # mean + 6 sd (docs/analysis.md, "CI tolerances")
    assert s["correct"] > s["bound"] - 0.002, s


@pytest.mark.parametrize("name", list(SPECIMENS))
def test_simulated_runs_ranged_with_the_element_list(simulated, name):
    mass, truth, it, _ = simulated[name]
    table = auto_ranges(mass, elements=SPECIMENS[name][1])
    s = score(table, mass, truth, it)
    assert set(table.elements) <= set(SPECIMENS[name][1])
    # the issue asks >= 99.5 %: asserted where the bound less 0.2 % reaches it (bare
    # NMC811: 99.73-99.78 % on 5 seeds); the bound of naming by m/n alone is below it for
    # LMO (99.42-99.46 %: Ga+ under CrO+ and MnO+); coated NMC811 reads 99.505-99.537 %,
    # within one seed-to-seed sd (0.014 %) of 99.5, so its floor is the bound's, see
    # docs/analysis.md
    assert s["correct"] >= min(0.995, s["bound"] - 0.002), s
    assert s["correct"] > s["oracle"] - 0.001, s


def test_range_command_writes_rrng_and_json(simulated, tmp_path, capsys):
    import json

    from apt_daq.cli import main

    _, _, _, epos = simulated["lmo-cr"]
    out = tmp_path / "lmo.rrng"
    assert main(["range", str(epos), "-o", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    table = read_rrng(out)
    assert len(table) == len(rep["ranges"]) > 10
    assert table.names == [r["ion"] for r in rep["ranges"]]
    text = out.read_text()
    for r in rep["ranges"]:
        assert {"ion", "charge", "isotopes", "window_da", "counts", "background",
                "confidence"} <= set(r)
        assert 0.0 <= r["confidence"] <= 1.0
    assert "Range1: Li+ 1+ 6Li" in text and "confidence" in text
    # the O2+ range reports its decomposition with errors
    o2 = next(r for r in rep["ranges"] if r["ion"] == "O2+" and abs(r["peak_da"] - 32) < 0.1)
    assert o2["decomposed"]["O2+"]["error"] > 0
    # the composition is that of the decomposed counts: Ga (under CrO+ at 69 Da and MnO+
    # at 71 Da) is in it, within 3 errors + 0.1 at.% of the truth
    mass, truth, it, _ = simulated["lmo-cr"]
    true = score(auto_ranges(mass), mass, truth, it)["true_composition"]
    comp = rep["composition"]
    assert abs(sum(c["fraction"] for c in comp.values()) - 1.0) < 1e-4
    for el, f in true.items():
        assert abs(comp[el]["fraction"] - f) < 3 * comp[el]["error"] + 0.001, (el, comp[el], f)


# ------------------------------------------------------------------------------ real data


def test_apav_si_ranged_with_no_input(apav_data):
    from apt_daq.commands.range_ import spectrum_of_file

    res = autorange(spectrum_of_file(apav_data / "Si.epos"))
    by_peak = {}  # a shared peak is split into ranges: its largest names it
    for r in sorted(res.ranges, key=lambda r: r.counts):
        by_peak[round(r.peak_da, 1)] = r.ion

    def at(m_da: float) -> str:
        near = min(by_peak, key=lambda m: abs(m - m_da))
        assert abs(near - m_da) < 0.15, (m_da, by_peak)
        return by_peak[near]

    # the file's m/n is ~0.35 % high at 14-15 Da: Si2+ is found at its offset
    assert at(14.0) == at(14.5) == at(15.0) == "Si2+"
    assert at(28.0) == "Si+"
    assert at(44.0) == "SiO+"
    assert at(12.0) == "C+"
    assert at(29.0) == at(30.0) == "Ni2+"  # 29Si+/30Si+ share these with 58Ni2+/60Ni2+
    assert at(58.0) == at(60.0) == at(62.0) == "Ni+"
    # the ranges of Si.RRNG on its major peaks agree: Si2+ (14-15), Si+ (28)
    ref = read_rrng(apav_data / "Si.RRNG")
    for m_da in (14.0, 14.5, 15.0, 28.0):
        i = int(np.searchsorted(ref.lo_da, m_da, "right") - 1)
        assert ref.composition[i] == {"Si": 1}
    assert at(16.0) == "O+"  # Si.RRNG's O+ (not 32S2+, which sits within the offset)
    # no element that is not plausibly there: those of the file's own Si.RRNG (Si, Cr, Cu, C,
    # O), H and N (residual gas in every atom probe), Ga (FIB preparation) and Ni (Si.RRNG's
    # (Cr2O)2+ at 58-61 Da has Ni's five-isotope pattern at 58-64 and 29-32 Da); the ions
    # of the fit (overlap shares included), not only the range names
    plausible = {"H", "N", "C", "O", "Si", "Cr", "Cu", "Ni", "Ga"}
    assert set(res.table.elements) <= plausible, res.table.elements
    fitted = {e for ion in res.ions for e in read_formula(ion)}
    assert fitted <= plausible, sorted(res.ions)
    # 14.42 Da (a multi-hit artefact of Si2+ pairs) and 2.04 Da (H2+ 1.2 % off) unranged,
    # and no neighbour's widened window takes them in
    assert {round(p.mass_da, 1) for p in res.unidentified} >= {2.0, 14.4}
    for p in res.unidentified:
        assert not any(r.lo_da <= p.mass_da < r.hi_da for r in res.ranges), p
    # the 14 Da peak holds 72 % of the ions: it and its isotopes are ranged
    ranged = sum(r.counts for r in res.ranges)
    assert ranged > 0.85 * res.spectrum.counts.sum()


# ------------------------------------------------------------------------------ splitting
@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3).flatmap(lambda n_ion: st.lists(
    st.lists(st.floats(0.0, 100.0), min_size=n_ion, max_size=n_ion), min_size=1, max_size=7)))
def test_ordered_owner_is_the_best_ordered_assignment(cols):
    # the dynamic programme against every assignment of bins to ions that gives each ion at
    # most one run, the runs in m/n order (owners non-decreasing along the bins)
    import itertools

    from apt_daq.pipeline.autorange.split import _ordered_owner

    expect = np.array(cols).T  # ions x bins
    n_ion, n_bin = expect.shape
    owner = _ordered_owner(expect)
    assert np.all(np.diff(owner) >= 0)
    got = expect[owner, np.arange(n_bin)].sum()
    best = max(expect[list(a), np.arange(n_bin)].sum()
               for a in itertools.product(range(n_ion), repeat=n_bin)
               if all(x <= y for x, y in itertools.pairwise(a)))
    assert got == pytest.approx(best, rel=1e-12, abs=1e-9)

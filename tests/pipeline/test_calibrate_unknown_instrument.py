"""`apt-daq calibrate` on raw hits of an instrument the project has never seen (issue 16).

The hits are made here, by a route independent of the code under test: plain numpy, physical
constants (CODATA 2018), atomic masses (AME2020) and natural isotope abundances (IUPAC 2009
representative compositions, Berglund & Wieser, Pure Appl. Chem. 83 (2011) 397) typed below,
not taken from apt_daq. The instrument: a straight flight path 160 mm nominal whose true length
is off by up to 5 %, an unknown t0 within +-15 ns, a 1 % bowl (a quadratic in detector x, y in
the effective flight length), a voltage curvature (a quadratic term in the effective voltage),
a Gaussian TOF jitter and a flat background in TOF. The run file holds what a raw-hit import
would write: /hits (tof, x, y, V_dc, V_pulse) and an instrument with the NOMINAL flight length
and t0 = 0.

`apt-daq calibrate run.h5 --elements W,Mo,Ni` must then place every strong isotope peak within
50 ppm of its true m/n, give isotope fractions within 0.01 of the abundances the ions were drawn
with and an MRP within 10 % of the synthetic truth (the same estimator on the true m/n blurred
by the jitter alone). The null model (nominal t0 and flight length, no corrections) must fail
the 50 ppm bound: the calibration does the work.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

E_C = 1.602176634e-19  # C
U_KG = 1.66053906660e-27  # kg

# atomic masses (Da, AME2020) and abundances (IUPAC 2009 representative compositions)
ISOTOPES = {
    "Ni": [(58, 57.935342, 0.680769), (60, 59.930786, 0.262231), (61, 60.931056, 0.011399),
           (62, 61.928345, 0.036345), (64, 63.927967, 0.009256)],
    "Mo": [(92, 91.906807, 0.1477), (94, 93.905084, 0.0923), (95, 94.905838, 0.1590),
           (96, 95.904676, 0.1668), (97, 96.906018, 0.0956), (98, 97.905404, 0.2419),
           (100, 99.907472, 0.0967)],
    "W": [(180, 179.946706, 0.0012), (182, 181.948205, 0.2650), (183, 182.950224, 0.1431),
          (184, 183.950932, 0.3064), (186, 185.954365, 0.2843)],
}
# (element, charge): share of the ions. Chosen so no two isotope peaks overlap (W4+ would sit
# on Mo2+, Mo3+ on Ni2+, Ni+ on W3+, Mo+ on W2+).
TRUE_IONS = {("Ni", 2): 0.30, ("Ni", 3): 0.08, ("Mo", 2): 0.22, ("W", 3): 0.25, ("W", 2): 0.15}

NOMINAL_L_MM = 160.0
DETECTOR_R_MM = 38.0
JITTER_NS = 0.15
BACKGROUND = 0.03  # share of all hits, flat in TOF over 200-3500 ns


def synthesise(seed: int, n: int = 400_000, t0_ns: float | None = None,
               l_off: float | None = None) -> dict:
    """Hits of the unknown instrument and their truth (all in plain numpy). t0 and the
    flight length's offset from nominal are drawn (+-15 ns, +-5 %) unless given."""
    rng = np.random.default_rng(seed)
    t0_draw, off_draw = rng.uniform(-15.0, 15.0), rng.uniform(-0.05, 0.05)
    t0_ns = t0_draw if t0_ns is None else t0_ns
    l_mm = NOMINAL_L_MM * (1.0 + (off_draw if l_off is None else l_off))
    keys = list(TRUE_IONS)
    share = np.array([TRUE_IONS[k] for k in keys])
    kind = rng.choice(len(keys), n, p=share / share.sum())
    m_true = np.empty(n)
    iso = np.empty(n, np.int64)
    for i, (el, z) in enumerate(keys):
        sel = np.flatnonzero(kind == i)
        a = np.array([r[0] for r in ISOTOPES[el]])
        ms = np.array([r[1] for r in ISOTOPES[el]])
        p = np.array([r[2] for r in ISOTOPES[el]])
        j = rng.choice(len(ms), len(sel), p=p / p.sum())
        m_true[sel] = ms[j] / z
        iso[sel] = a[j]
    # the specimen voltage climbs through the run (evaporation order), laser pulsing
    v_dc = np.linspace(4000.0, 9000.0, n) + rng.normal(0.0, 5.0, n)
    r = DETECTOR_R_MM * 0.97 * np.sqrt(rng.uniform(0, 1, n))
    phi = rng.uniform(0, 2 * np.pi, n)
    x, y = r * np.cos(phi), r * np.sin(phi)
    # 1 % bowl: the effective flight length grows by up to ~1 % towards the rim, off centre
    bowl = 0.01 * (0.9 * (x - 2.0) ** 2 + 1.1 * (y + 3.0) ** 2 + 0.15 * x * y) / DETECTOR_R_MM**2
    leff_m = np.sqrt(l_mm**2 + x**2 + y**2) * (1.0 + bowl) * 1e-3
    # voltage curvature: the effective voltage sags by up to 0.3 % at the ends of the range
    u = v_dc * 1e-3
    v_eff = v_dc * (1.0 - 0.003 * ((u - 6.5) / 2.5) ** 2)
    t_clean = t0_ns + leff_m * np.sqrt(m_true * U_KG / (2.0 * E_C * v_eff)) * 1e9
    tof = t_clean + rng.normal(0.0, JITTER_NS, n)
    # what the jitter alone does to m/n (the synthetic truth of the peak shapes)
    m_jitter = m_true * ((tof - t0_ns) / (t_clean - t0_ns)) ** 2
    # flat background in TOF, spread over the run
    n_bg = int(BACKGROUND * n / (1 - BACKGROUND))
    at = np.sort(rng.choice(n, n_bg))
    rb = DETECTOR_R_MM * 0.97 * np.sqrt(rng.uniform(0, 1, n_bg))
    pb = rng.uniform(0, 2 * np.pi, n_bg)
    tof = np.insert(tof, at, rng.uniform(200.0, 3500.0, n_bg))
    v_dc = np.insert(v_dc, at, v_dc[at])
    x = np.insert(x, at, rb * np.cos(pb))
    y = np.insert(y, at, rb * np.sin(pb))
    is_ion = np.insert(np.ones(n, bool), at, False)
    return {"t0_ns": t0_ns, "l_mm": l_mm, "tof": tof, "v_dc": v_dc, "x": x, "y": y,
            "is_ion": is_ion, "m_true": m_true, "iso": iso, "kind": kind, "keys": keys,
            "m_jitter": m_jitter}


def write_run(path: Path, syn: dict) -> Path:
    """The run file a raw-hit import writes: /hits and the instrument's NOMINAL geometry."""
    from apt_daq.config import InstrumentConfig
    from apt_daq.hits import HIT_DTYPE
    from apt_daq.io.store import RunWriter

    n = len(syn["tof"])
    hits = np.zeros(n, HIT_DTYPE)
    hits["pulse"] = np.arange(n) * 50
    hits["tof"] = syn["tof"]
    hits["det_x"], hits["det_y"] = syn["x"], syn["y"]
    hits["v_dc"] = syn["v_dc"]
    hits["v_pulse"] = 0.0
    hits["laser_pj"] = np.nan
    hits["multiplicity"] = 1
    inst = InstrumentConfig(name="unknown straight-flight instrument", flight_path_mm=NOMINAL_L_MM,
                            detector_diameter_mm=2 * DETECTOR_R_MM, t0_ns=0.0)
    meta = {"instrument": inst.model_dump(mode="json"),
            "imported": {"file": "unknown.csv", "format": "csv", "ions": n,
                         "fields": ["pulse", "tof", "det_x", "det_y", "v_dc", "v_pulse"]}}
    with RunWriter(path, meta, overwrite=True) as w:
        for a in range(0, n, 1 << 18):
            w.append(hits=hits[a:a + (1 << 18)])
        w.finish("imported")
    return path


def true_peaks(min_abundance: float = 0.05) -> list[tuple[str, int, float, float]]:
    """(element, charge, mass number, m/n) of every isotope peak of the true ions whose
    abundance is at least ``min_abundance`` (weaker ones hold too few ions to place to 50 ppm)."""
    out = []
    for el, z in TRUE_IONS:
        for a, m, p in ISOTOPES[el]:
            if p >= min_abundance:
                out.append((el, z, a, m / z))
    return out


def spacing_da(el: str, z: int, m_over_n: float) -> float:
    """m/n distance to the neighbouring isotope of the same element and charge."""
    ms = np.array([m for _a, m, _p in ISOTOPES[el]]) / z
    d = np.abs(ms - m_over_n)
    return float(d[d > 0.05].min())  # isotopes are >= 1/z apart


def apex(mass: np.ndarray, guess: float, half: float) -> float:
    """The test's own apex estimate: histogram maximum in guess +- half, then the mean of the
    ions within +- FWHM of it, iterated (symmetric, so a flat background does not pull it)."""
    sel = mass[np.abs(mass - guess) < half]
    if len(sel) < 50:
        return float("nan")  # no peak there
    counts, edges = np.histogram(sel, 200, (guess - half, guess + half))
    c = 0.5 * (edges[1:] + edges[:-1])
    k = np.convolve(counts, np.ones(5) / 5, "same")
    top = c[int(np.argmax(k))]
    above = c[k >= 0.5 * k.max()]
    fwhm = max(above.max() - above.min(), 2 * (edges[1] - edges[0]))
    for _ in range(20):
        top = float(np.mean(sel[np.abs(sel - top) < fwhm]))
    return top


def peak_errors_ppm(mass: np.ndarray) -> dict[str, float]:
    out = {}
    for el, z, a, m in true_peaks():
        s = spacing_da(el, z, m)
        out[f"{a}{el}{z}+"] = (apex(mass, m, 0.3 * s) / m - 1.0) * 1e6
    return out


def isotope_fractions(mass: np.ndarray) -> dict[tuple[str, int, int], tuple[float, float]]:
    """(measured, true) isotope fraction of each isotope of each true ion: counts in +-0.3 of
    the spacing around each isotope over the element's (charge state's) total."""
    out = {}
    for el, z in TRUE_IONS:
        n = {}
        for a, m, _p in ISOTOPES[el]:
            h = 0.3 * spacing_da(el, z, m / z)
            n[a] = np.count_nonzero(np.abs(mass - m / z) < h)
        tot = sum(n.values())
        for a, _m, p in ISOTOPES[el]:
            out[(el, z, a)] = (n[a] / tot, p)
    return out


def stream_mass(path: Path, calibration=None) -> np.ndarray:
    from apt_daq.io.store import RunReader
    from apt_daq.pipeline.ions import IonStream, run_calibration

    with RunReader(path) as r:
        cal = calibration if calibration is not None else run_calibration(r)
        return np.concatenate([c.mass.astype(np.float64)
                               for c in IonStream(r, cal, None, positions="none")])


def calibrate_cli(path: Path, *args: str) -> dict:
    import contextlib
    import io

    from apt_daq.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["calibrate", str(path), "--elements", "W,Mo,Ni", "--json", *args])
    assert rc == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module", params=[(11, None, None), (23, None, None), (5, 14.6, -0.049),
                                        (8, -14.8, 0.048)], ids=lambda p: f"seed{p[0]}")
def calibrated(request, tmp_path_factory):
    seed, t0_ns, l_off = request.param  # two random draws, two at the corners of the range
    syn = synthesise(seed, t0_ns=t0_ns, l_off=l_off)
    path = write_run(tmp_path_factory.mktemp(f"unknown{seed}") / "run.h5", syn)
    report = calibrate_cli(path)
    return syn, path, report, stream_mass(path)


def test_t0_and_flight_length_recovered(calibrated):
    syn, _path, rep, _mass = calibrated
    cal = rep["calibration"]
    # t0 to ~0.1 ns; L is the one scale of the model (the bowl's mean over the detector and
    # the 3.4 ppm of the project's constant ride on it): within 0.3 %
    assert cal["t0_ns"] == pytest.approx(syn["t0_ns"], abs=0.3)
    assert cal["flight_path_mm"] == pytest.approx(syn["l_mm"], rel=3e-3)


def test_isotope_peaks_within_50_ppm(calibrated):
    _syn, _path, rep, mass = calibrated
    err = peak_errors_ppm(mass)
    assert len(err) >= 15
    assert max(abs(e) for e in err.values()) < 50.0, err
    # the command's own report says the same of the peaks it identified
    reported = {p["isotope"]: p["residual_ppm"] for p in rep["peaks"]}
    assert max(abs(reported[k]) for k in err if k in reported) < 50.0, reported


def test_isotope_fractions_within_001(calibrated):
    _syn, _path, _rep, mass = calibrated
    fr = isotope_fractions(mass)
    worst = max(abs(a - b) for a, b in fr.values())
    assert worst < 0.01, {k: v for k, v in fr.items() if abs(v[0] - v[1]) >= 0.01}


def test_mrp_within_10_percent_of_the_jitter_truth(calibrated):
    from apt_daq.pipeline.peaks import peak_shape

    syn, _path, _rep, mass = calibrated
    m_truth = syn["m_jitter"]
    for el, z, a, m in [("W", 3, 184, 183.950932 / 3), ("Ni", 2, 58, 57.935342 / 2),
                        ("Mo", 2, 98, 97.905404 / 2)]:
        w = 0.5 * spacing_da(el, z, m)
        got = peak_shape(mass, m, w)
        want = peak_shape(m_truth, m, w)
        assert got.mrp50 == pytest.approx(want.mrp50, rel=0.10), (a, el, got, want)
        assert got.mrp10 == pytest.approx(want.mrp10, rel=0.10), (a, el, got, want)


def test_null_model_fails_the_50_ppm_bound(calibrated):
    """Nominal t0 and flight length, no corrections: the peaks are far off (the calibration is
    what brings them within 50 ppm)."""
    from apt_daq.pipeline.corrections import Calibration

    _syn, path, _rep, _mass = calibrated
    null = stream_mass(path, Calibration(t0_ns=0.0, flight_path_mm=NOMINAL_L_MM))
    err = np.array(list(peak_errors_ppm(null).values()))
    within = np.abs(err) < 50.0  # NaN (no peak within +-0.3 of the spacing) is not within
    assert not within.all()  # the bound the calibrated run meets fails
    # and not by a whisker: a third of the peaks or more are off (when L happens to be near
    # nominal, t0 alone moves the light peaks by 0.1-0.3 %)
    assert (~within).sum() >= len(err) // 3, err
    assert np.nanmax(np.abs(err)) > 1000.0 or np.isnan(err).any(), err


# ----------------------------------------------------------------------------- errors: one line
def _run_cli(*argv: str) -> tuple[int, str]:
    import contextlib
    import io

    from apt_daq import cli

    err = io.StringIO()
    # the error console writes to whatever sys.stderr is at the time (rich resolves it per
    # write), so redirecting stderr is enough; pinning its .file here once left it pointing at
    # this StringIO for every later test in the process
    with contextlib.redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, err.getvalue()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> tuple[Path, dict]:
    syn = synthesise(3, n=120_000)
    return write_run(tmp_path_factory.mktemp("small") / "run.h5", syn), syn


def test_an_element_that_explains_no_peak_is_one_line_exit_2(small_run):
    path, _syn = small_run
    rc, err = _run_cli("calibrate", str(path), "--elements", "W,Mo,Ni,Cu", "--no-store")
    assert rc == 2 and "Cu" in err and "explain no peak" in err and len(err.splitlines()) == 1


def test_no_peak_of_the_elements_is_one_line_exit_2(small_run):
    path, _syn = small_run
    rc, err = _run_cli("calibrate", str(path), "--elements", "Au", "--no-store")
    # (monoisotopic Au at charges 2-4 can always be lined up with three peaks by some t0 and
    # L: what is refused is that it explains none of the strongest peaks)
    assert rc == 2 and "explain none of the strongest peaks" in err.replace("\n", " ")


def test_given_t0_and_flight_length_are_kept(small_run):
    path, syn = small_run
    rep = calibrate_cli(path, "--t0-ns", f"{syn['t0_ns']:.3f}", "--flight-path-mm",
                        f"{syn['l_mm']:.3f}", "--no-store")
    assert rep["calibration"]["t0_ns"] == pytest.approx(syn["t0_ns"], abs=1e-3)
    assert rep["calibration"]["flight_path_mm"] == pytest.approx(syn["l_mm"], abs=1e-3)
    assert rep["stored"] is False
    fitted = [p for p in rep["peaks"] if p["fitted"] and p["counts"] > 2000]
    assert fitted and max(abs(p["residual_ppm"]) for p in fitted) < 50.0


@pytest.mark.parametrize("what", ["no tof", "reflectron"])
def test_runs_it_cannot_calibrate_are_one_line_exit_2(tmp_path, what):
    from apt_daq.config import InstrumentConfig
    from apt_daq.hits import HIT_DTYPE
    from apt_daq.io.store import RunWriter

    hits = np.zeros(5000, HIT_DTYPE)
    hits["tof"] = np.nan if what == "no tof" else 1000.0
    hits["v_dc"] = 5000.0
    inst = InstrumentConfig(model="XR", reflectron=True) if what == "reflectron" else InstrumentConfig()
    with RunWriter(tmp_path / "r.h5", {"instrument": inst.model_dump(mode="json")}) as w:
        w.append(hits=hits)
        w.finish("imported")
    rc, err = _run_cli("calibrate", str(tmp_path / "r.h5"), "--elements", "W")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert ("reflectron" in err) if what == "reflectron" else ("no TOF" in err)


# ----------------------------------------------------------------------------- the docs example
DOC = Path(__file__).resolve().parents[2] / "docs" / "analysis.md"
DOC_FIGURE = DOC.parent / "calibrate-unknown-instrument.png"
DOC_CASE = {"seed": 5, "t0_ns": 14.6, "l_off": -0.049}  # the corner case the docs show


def _doc_block(tag: str) -> str:
    """The fenced block after ``<!-- tag -->`` in docs/analysis.md."""
    text = DOC.read_text()
    at = text.index(f"<!-- {tag} -->")
    start = text.index("```", at)
    start = text.index("\n", start) + 1
    return text[start:text.index("```", start)]


def test_the_docs_worked_example_runs_and_prints_what_the_docs_show(tmp_path, monkeypatch):
    """docs/analysis.md, "Calibrating another instrument": the commands run on the run the
    docs describe, and print the t0, flight length, ions and residuals the docs quote."""
    import contextlib
    import io
    import re
    import shlex

    from apt_daq.cli import main

    syn = synthesise(DOC_CASE["seed"], t0_ns=DOC_CASE["t0_ns"], l_off=DOC_CASE["l_off"])
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "unknown.h5", syn)
    outputs = []
    for line in _doc_block("calibrate-commands").splitlines():
        if not line.startswith("apt-daq "):
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(shlex.split(line)[1:]) == 0, line
        outputs.append(out.getvalue())
    printed = " ".join(outputs[0].split())
    shown = _doc_block("calibrate-output")
    t0_doc, l_doc = (float(v) for v in re.search(r"t0 (\S+) ns .*flight length (\S+) mm",
                                                  " ".join(shown.split())).groups())
    t0_got, l_got = (float(v) for v in re.search(r"t0 (\S+) ns .*flight length (\S+) mm",
                                                  printed).groups())
    assert t0_got == pytest.approx(t0_doc, abs=0.01) and l_got == pytest.approx(l_doc, abs=0.01)
    assert "ions found: W2+, W3+, Mo2+, Ni2+, Ni3+" in printed
    rows = re.findall(r"│\s*(\d+[A-Z][a-z]?\d\+)\s*│.*?│\s*([+-]\d+\.\d)\s*│", shown)
    assert len(rows) >= 5
    for iso, residual in rows:  # the residuals the docs quote, to 3 ppm
        got = re.search(rf"│ {re.escape(iso)} │ [^│]+│ [^│]+│ [^│]+│ ([+-]\d+\.\d)", printed)
        assert got and abs(float(got.group(1)) - float(residual)) < 3.0, (iso, residual)
    # the stored calibration is what analyze then uses; its per-peak table measures each W
    # isotope alone, at the resolving power of the jitter (within 10 %) and as the docs say
    rep = json.loads(outputs[-1])
    assert rep["calibration"]["source"] == "calibrate"
    assert rep["calibration"]["t0_ns"] == pytest.approx(syn["t0_ns"], abs=0.3)
    from apt_daq.pipeline.peaks import peak_shape

    doc_row = json.loads(_doc_block("calibrate-analyze-output"))
    (row,) = [p for p in rep["peaks"] if p["isotope"] == doc_row["isotope"]]
    truth = peak_shape(syn["m_jitter"], row["nominal_da"],
                       0.5 * spacing_da("W", 3, row["nominal_da"]))
    assert row["mrp50"] == pytest.approx(truth.mrp50, rel=0.10)
    assert row["mrp10"] == pytest.approx(truth.mrp10, rel=0.10)
    for k in ("counts", "apex_da", "mrp50", "mrp10"):
        assert row[k] == pytest.approx(doc_row[k], rel=0.01), k
    for el, want in (("Ni", 0.38), ("Mo", 0.22), ("W", 0.40)):
        assert rep["composition"][el]["fraction"] == pytest.approx(want, abs=0.005)


def make_docs_figure(path: Path = DOC_FIGURE) -> Path:
    """The spectrum before (nominal t0 = 0 and L, no corrections) and after ``apt-daq
    calibrate``: ``python tests/pipeline/test_calibrate_unknown_instrument.py``."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from apt_daq.pipeline.corrections import Calibration

    syn = synthesise(DOC_CASE["seed"], t0_ns=DOC_CASE["t0_ns"], l_off=DOC_CASE["l_off"])
    with tempfile.TemporaryDirectory() as d:
        run = write_run(Path(d) / "unknown.h5", syn)
        before = stream_mass(run, Calibration(t0_ns=0.0, flight_path_mm=NOMINAL_L_MM))
        calibrate_cli(run)
        after = stream_mass(run)
    fig, axes = plt.subplots(2, 1, figsize=(9, 6.5))
    for ax, (lo, hi, bin_da) in zip(axes, [(15, 100, 0.02), (55.5, 62.5, 0.005)], strict=True):
        edges = np.arange(lo, hi + bin_da, bin_da)
        for m, label, colour in ((before, "before: nominal t0 = 0, L = 160 mm", "0.6"),
                                 (after, "after apt-daq calibrate --elements W,Mo,Ni", "C0")):
            ax.stairs(np.histogram(m, edges)[0], edges, color=colour, label=label, lw=0.8)
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylabel(f"ions per {bin_da * 1000:g} mDa")
    for el, z, a, m in true_peaks():
        if el == "W" and z == 3:
            axes[1].axvline(m, color="C3", lw=0.6, ls=":")
            axes[1].text(m, axes[1].get_ylim()[1] * 0.5, f"{a}", ha="center", fontsize=8)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[0].set_title(f"unknown instrument: t0 {syn['t0_ns']:+.1f} ns, L {syn['l_mm']:.1f} mm "
                      "(nominal 0 ns, 160 mm), 1 % bowl, voltage curvature", fontsize=10)
    axes[1].set_xlabel("m/n (Da); bottom: W3+ (true isotope positions dotted), before: the blur"
                       " at 56.5-59.5 Da")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(make_docs_figure())

"""The voltage correction is fitted on the voltages of the reference ions (a run's steady
state, a few volts wide) and must not be extrapolated to the ramp-up's hits kV below them: a
quadratic fitted on 3168-3173 V gave f_V = -2.8 at 1.9 kV, so an exported EPOS held ~5800
negative m/n, and the ions at 2.7-3.1 kV were tens of Da off. Judged against the simulator's
truth (/truth is row-aligned with /hits; its "mass" is each hit's true m/n), on the m/n the
ion stream gives (an exported EPOS, read with the published layout), for both fitting paths:
``apt-daq analyze`` and ``apt-daq calibrate``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from apt_daq.cli import main
from apt_daq.io.store import RunReader
from apt_daq.pipeline.corrections import Calibration, corrected_mass, factors

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "configs/runs/nmc811-cr-5pj.yaml"

# the published EPOS record: big-endian float32 x, y, z, m/n, tof, V_dc, V_pulse, det x, det y,
# int32 pulses since the last event, ions per pulse
EPOS = np.dtype([(n, ">f4") for n in ("x", "y", "z", "m", "tof", "vdc", "vp", "dx", "dy")]
                + [("dpulse", ">i4"), ("ipp", ">i4")])


@pytest.fixture(scope="module")
def run60k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 000 ions of the quickstart run: ~10 000 ramp-up hits at 1.9-3.1 kV, the rest at the
    steady 3.17 kV."""
    out = tmp_path_factory.mktemp("vspan") / "k60.h5"
    assert main(["run", str(RUN), "-o", str(out), "--ions", "60000", "--quiet"]) == 0
    return out


def _stream_vs_truth(run: Path, tmp: Path):
    """(calibration, hits, truth, exported m/n) of ``run`` after its calibration."""
    epos = tmp / (run.stem + ".epos")
    assert main(["export", str(run), "--format", "epos", "-o", str(epos)]) == 0
    e = np.fromfile(epos, EPOS)
    with RunReader(run) as r:
        cal = r.meta["calibration"]
        hits, truth = r.read("hits"), r.read("truth")
    assert len(e) == len(hits) == len(truth)
    assert np.array_equal(e["tof"], hits["tof"].astype(">f4"), equal_nan=True)  # row-aligned
    return cal, hits, truth, e["m"].astype(np.float64)


def _check_no_extrapolation(cal: dict, hits: np.ndarray, truth: np.ndarray, m: np.ndarray):
    finite = np.isfinite(hits["tof"])
    bad = finite & ~(m > 0)
    assert not bad.any(), (f"{bad.sum()} hits with a TOF have m/n <= 0 (or NaN), e.g. at "
                           f"{hits['v_dc'][bad][:5]} V")
    span = cal.get("voltage_span_v")
    assert span is not None and span[0] <= span[1], cal
    true = finite & (truth["detected"] == 1) & (truth["mass"] > 0)
    err = np.abs(m / truth["mass"] - 1)
    v = hits["v_dc"].astype(np.float64)
    below = true & (v < span[0])
    assert below.sum() > 500, below.sum()
    assert np.median(err[below]) < 0.01, np.median(err[below])
    # well below the span (> 1 % of the voltage), where an extrapolated fit and the data part:
    # the ions there are calibrated as well as those at the voltages of the fit
    far = true & (v < 0.99 * span[0])
    inside = true & (v >= span[0]) & (v <= span[1])
    assert far.sum() >= 50 and inside.sum() > 10_000, (far.sum(), inside.sum())
    p90_far, p90_in = np.quantile(err[far], 0.9), np.quantile(err[inside], 0.9)
    assert p90_far < 2 * p90_in, (p90_far, p90_in)


def test_analyze_does_not_extrapolate_f_v_to_the_ramp_up(run60k: Path, tmp_path: Path):
    run = tmp_path / "a.h5"
    shutil.copy(run60k, run)
    assert main(["analyze", str(run), "--json"]) == 0  # fits and stores the calibration
    cal, hits, truth, m = _stream_vs_truth(run, tmp_path)
    assert cal["source"] == "analyze"
    _check_no_extrapolation(cal, hits, truth, m)


def test_calibrate_does_not_extrapolate_f_v_to_the_ramp_up(run60k: Path, tmp_path: Path):
    run = tmp_path / "c.h5"
    shutil.copy(run60k, run)
    assert main(["calibrate", str(run), "--elements", "Li,Ni,Co,Mn,O", "--json"]) == 0
    cal, hits, truth, m = _stream_vs_truth(run, tmp_path)
    assert cal["source"] == "calibrate"
    _check_no_extrapolation(cal, hits, truth, m)


OLD_RECORD = {  # a stored calibration written before voltage_span_v (the reproduction's fit)
    "format": 2, "mode": "tof", "t0_ns": 0.0, "flight_path_mm": 100.0, "beta": 1.0,
    "voltage_coeffs": [-22.68807391593921, 14.934260176594448, -2.3538064790233966],
    "bowl_coeffs": [0.99999357, 7.591e-06, -5.213e-06, 2.0205e-06, 6.9e-07, 2.9477e-06],
    "reference": "Li+", "reference_da": 7.016003434, "fit_ions": 10824,
    "residual_ppm": 17.4, "source": "analyze", "created": "2026-01-01T00:00:00+00:00",
    "version": "0.1.0", "notes": [], "ions": [], "peaks": [],
}


V = np.array([1000.0, 1906.0, 2500.0, 3170.0, 5000.0, np.nan])
X = np.array([-20.0, 0.0, 5.0, 10.0, 30.0, 1.0])
Y = np.array([3.0, -7.0, 0.0, 10.0, -30.0, 1.0])


def _hits(v: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    hits = np.zeros(len(v), [("tof", "<f4"), ("det_x", "<f4"), ("det_y", "<f4"),
                             ("v_dc", "<f4"), ("v_pulse", "<f4")])
    hits["tof"], hits["det_x"], hits["det_y"], hits["v_dc"] = 900.0, x, y, v
    return hits


def test_a_record_without_a_span_loads_and_corrects_as_before():
    cal = Calibration.from_dict(OLD_RECORD)
    assert cal.voltage_span_v is None
    assert cal.as_dict()["voltage_span_v"] is None
    assert Calibration.from_dict(cal.as_dict()) == cal
    v, x, y = V, X, Y
    # the factors as computed before the span existed: the bare quadratic at every voltage
    u, c, b = v * 1e-3, OLD_RECORD["voltage_coeffs"], OLD_RECORD["bowl_coeffs"]
    xs, ys = x / 10, y / 10
    before = (c[0] + u * (c[1] + u * c[2])) * (b[0] + b[1] * xs + b[2] * ys + b[3] * xs * xs
                                                + b[4] * xs * ys + b[5] * ys * ys)
    np.testing.assert_allclose(factors(cal, v, x, y), before, rtol=1e-14)
    assert np.isnan(factors(cal, v, x, y)[-1])
    hits = _hits(v, x, y)
    raw = corrected_mass(hits, 0.0, 100.0)
    np.testing.assert_allclose(corrected_mass(hits, 0.0, 100.0, cal), raw / before, rtol=1e-12)


def test_a_span_round_trips_and_kernel_and_numpy_agree_nan_kept():
    """With a span, the kernel's m/n and the numpy factors (fits, bench) are one model, a
    NaN voltage gives NaN in both, and the record round-trips."""
    cal = Calibration.from_dict({**OLD_RECORD, "voltage_span_v": [3168.7, 3172.6]})
    assert cal.voltage_span_v == (3168.7, 3172.6)
    assert Calibration.from_dict(cal.as_dict()) == cal
    hits = _hits(V, X, Y)
    f = factors(cal, hits["v_dc"].astype(np.float64), hits["det_x"], hits["det_y"])
    m = corrected_mass(hits, 0.0, 100.0, cal)
    assert np.isnan(f[-1]) and np.isnan(m[-1]) and np.isfinite(m[:-1]).all()
    np.testing.assert_allclose(m, corrected_mass(hits, 0.0, 100.0) / f, rtol=1e-12)
    with pytest.raises(ValueError, match="voltage_span_v"):
        Calibration.from_dict({**OLD_RECORD, "voltage_span_v": [3168.7]})

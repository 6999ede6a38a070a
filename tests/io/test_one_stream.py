"""One calibrated ion stream: what analyze reports is what export writes.

A simulated NMC811 run (100 000 ions through the run engine and the virtual LEAP) is
analysed (storing its calibration) and exported; the EPOS is then read back by independent
readers (numpy on the raw records, ifes-apt-tc-data-modeling; the RRNG by apav) and its m/n,
composition and mass resolving power compared with the stream's and analyze's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from apav_reference import rrng_atoms

from apt_daq.analysis.mrp import mrp
from apt_daq.analysis.report import analyze
from apt_daq.cli import main
from apt_daq.commands.export import export_run
from apt_daq.io.store import RunReader
from apt_daq.pipeline.ions import open_stream

ROOT = Path(__file__).resolve().parents[2]
RUN_YAML = ROOT / "configs" / "runs" / "nmc811-cr-5pj.yaml"


def epos_mass(path: Path) -> np.ndarray:
    """m/n column of an EPOS file read straight from its 44-byte big-endian records."""
    return np.fromfile(path, dtype=">f4").reshape(-1, 11)[:, 3].astype(np.float32)


def stream_mass(run: Path) -> np.ndarray:
    with RunReader(run) as r:
        return np.concatenate([c.mass for c in open_stream(r)])


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("sim") / "nmc.h5"
    assert main(["run", str(RUN_YAML), "-o", str(run), "--ions", "100000", "--quiet"]) == 0
    return run


@pytest.fixture(scope="module")
def pristine(sim_run: Path, tmp_path_factory) -> Path:
    """A copy of the run before anything was stored in it."""
    out = tmp_path_factory.mktemp("copy") / "pristine.h5"
    shutil.copy(sim_run, out)
    return out


@pytest.fixture(scope="module")
def analysed(sim_run: Path, pristine: Path, tmp_path_factory):
    res = analyze(sim_run, roi="none", store=True)
    d = tmp_path_factory.mktemp("export")
    export_run(sim_run, "epos", d / "run.epos")
    export_run(sim_run, "rrng", d / "run.rrng")
    return res, d / "run.epos", d / "run.rrng"


def test_the_calibration_is_stored_and_reloaded(sim_run: Path, analysed):
    res, _, _ = analysed
    cal = res.summary["calibration"]
    assert cal["mode"] == "tof" and cal["reference"] and cal["source"] == "analyze"
    assert cal["flight_path_mm"] > 0 and cal["t0_ns"] is not None and cal["version"]
    with RunReader(sim_run) as r:
        assert r.meta["calibration"] == cal
        assert open_stream(r).calibration.as_dict() == cal


def test_exported_epos_mn_is_the_streams_bit_for_bit(sim_run: Path, analysed):
    from ifes_apt_tc_data_modeling.epos.epos_reader import ReadEposFileFormat

    _, epos, _ = analysed
    want = stream_mass(sim_run)
    assert want.dtype == np.float32 and len(want) > 90_000
    assert np.array_equal(epos_mass(epos), want)
    ifes = ReadEposFileFormat(str(epos))
    assert np.array_equal(np.asarray(ifes.get_mass_to_charge_state_ratio().magnitude,
                                     np.float32).ravel(), want)
    # and not the online pass's uncorrected /derived masses
    with RunReader(sim_run) as r:
        assert not np.array_equal(r.read("derived")["mass"], want)


def test_composition_and_mrp_from_the_epos_equal_analyzes(analysed):
    from ifes_apt_tc_data_modeling.epos.epos_reader import ReadEposFileFormat

    res, epos, rrng = analysed
    s = res.summary
    mass = np.asarray(ReadEposFileFormat(str(epos)).get_mass_to_charge_state_ratio().magnitude,
                      np.float32).ravel()
    atoms = rrng_atoms(mass, rrng)
    total = sum(atoms.values())
    assert total == pytest.approx(sum(res.composition.atoms.values()), abs=0)
    for el, v in s["composition"].items():
        assert v["fraction"] == pytest.approx(atoms.get(el, 0.0) / total, abs=1e-12), el
    assert len(s["mrp"]) >= 3
    for peak in s["mrp"]:
        # analyze takes the per-peak table's flat background off first (one MRP per peak)
        rows = [r for r in s["peaks"] if r["ion"] == peak["peak"]
                and abs(r["nominal_da"] - peak["nominal_da"]) < 1e-3 and r["hi_da"] > r["lo_da"]]
        row = max(rows, key=lambda r: r["counts"])
        bg = row["background"] / (row["hi_da"] - row["lo_da"])
        (again,) = mrp(mass, [(peak["peak"], peak["nominal_da"])], background_per_da=bg)
        for k in ("mass", "fwhm", "fw10m", "mrp50", "mrp10"):
            assert again[k] == peak[k], (peak["peak"], k)


def test_export_without_a_stored_calibration_is_the_same(pristine: Path, analysed,
                                                          tmp_path: Path):
    """The fit is deterministic: an export of the untouched copy (nothing stored) writes the
    very bytes the export after analyze wrote."""
    _, epos, _ = analysed
    with RunReader(pristine) as r:
        assert "calibration" not in r.meta
    out = tmp_path / "pristine.epos"
    export_run(pristine, "epos", out)
    assert out.read_bytes() == epos.read_bytes()


def test_cli_analyze_then_export(pristine: Path, tmp_path: Path, capsys):
    run = tmp_path / "cli.h5"
    shutil.copy(pristine, run)
    assert main(["analyze", str(run), "--json", "--roi", "none", "--no-store"]) == 0
    s = json.loads(capsys.readouterr().out)
    with RunReader(run) as r:
        assert "calibration" not in r.meta  # --no-store
    assert main(["analyze", str(run), "--json", "--roi", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["composition"] == s["composition"]
    with RunReader(run) as r:
        stored = dict(r.meta["calibration"])
    fitted = dict(s["calibration"])
    for when in ("created", "date"):  # two analyses, maybe a second apart: the fit is the same
        stored.pop(when, None)
        fitted.pop(when, None)
    assert stored == fitted
    assert main(["export", str(run), "--format", "pos", "-o", str(tmp_path / "x.pos")]) == 0
    pos = np.fromfile(tmp_path / "x.pos", dtype=">f4").reshape(-1, 4)[:, 3]
    assert np.array_equal(pos.astype(np.float32), stream_mass(run))


def test_ranges_are_proposed_on_the_calibrated_spectrum(pristine: Path, tmp_path: Path):
    """Without a range file the ranges come from the ion table, proposed on the calibrated
    spectrum: ions land in the range of their true ion (81 % did when the proposals were
    made on the uncorrected spectrum and applied to corrected masses)."""
    run = tmp_path / "noranges.h5"
    shutil.copy(pristine, run)
    with h5py.File(run, "r+") as f:
        a = f["meta"].attrs
        del a["ranges"]
        cfg = json.loads(a["config"])
        cfg["analysis"]["ranges"] = None
        a["config"] = json.dumps(cfg)
    res = analyze(run, roi="none", store=True)
    s = res.summary
    assert "calibrated spectrum" in s["ranges"]
    assert s["truth"]["ranged_as_true"] > 0.95
    # the proposal is stored with the calibration: the next analysis ranges the same
    again = analyze(run, roi="none").summary
    assert "stored in the run" in again["ranges"]
    assert again["composition"] == s["composition"]


def test_import_and_analysis_share_the_flight_geometry(tmp_path: Path):
    """An EPOS whose m/n is exactly the kernel's (L = 100 mm, t0 = 0, detector radius 38 mm):
    the flight length implied at import, put back into the kernel, gives the file's m/n again
    (an implied L_eff without x^2 + y^2 read a correctly calibrated file up to 7 % off)."""
    from apt_daq.io._common import empty_ions
    from apt_daq.io.epos import write_epos
    from apt_daq.pipeline.corrections import Calibration
    from apt_daq.pipeline.ions import IonStream
    from apt_daq.pipeline.tof import flight_time_ns

    rng = np.random.default_rng(0)
    n = 20_000
    ions = empty_ions(n)
    m = rng.choice([7.016, 15.995, 28.968, 57.935], n)
    r = 38.0 * np.sqrt(rng.random(n))
    phi = rng.uniform(0, 2 * np.pi, n)
    x, y = r * np.cos(phi), r * np.sin(phi)
    v = rng.uniform(4000, 8000, n)
    ions["mass"], ions["det_x"], ions["det_y"], ions["v_dc"] = m, x, y, v
    ions["v_pulse"] = 0.0
    ions["tof"] = flight_time_ns(m, v, 100.0, x, y)
    ions["x"] = ions["y"] = ions["z"] = 0.0
    ions["pulse"] = np.arange(n) * 10 + 1
    ions["multiplicity"] = 1
    epos = tmp_path / "exact.epos"
    write_epos(epos, [ions])
    run = tmp_path / "exact.h5"
    assert main(["import", str(epos), "-o", str(run)]) == 0
    with RunReader(run) as rd:
        assert rd.instrument.flight_path_mm == pytest.approx(100.0, rel=2e-5)
        ident = Calibration(t0_ns=0.0, flight_path_mm=rd.instrument.flight_path_mm)
        tof_mass = np.concatenate([c.mass for c in IonStream(rd, ident)])
        file_mass = rd.read("derived")["mass"]
    rel = tof_mass.astype(np.float64) / file_mass - 1
    assert np.max(np.abs(rel)) < 5e-5

"""The flight length an import keeps, judged against the one the file's own TOF, V and m/n
imply. The EPOS is built here with numpy from the time-of-flight law (m = 2 e V t^2 / L^2),
not by apt-daq's writer; a LEAP XR instrument file (382 mm) against a file made at 300 mm
stands for a real reflectron EPOS (pyccapt's calcite implies 323 mm: its 40Ca2+ came out
at 14.4 Da and was ranged as Al2+ by a recalibration at 382 mm)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from apt_daq.cli import main
from apt_daq.io.store import RunReader

REPO = Path(__file__).resolve().parents[2]
E, U = 1.602176634e-19, 1.66053906660e-27
L_MM = 300.0


def write_epos(path: Path, n: int = 20_000, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    m = rng.choice([12.0, 19.9813, 55.9575], n, p=[0.2, 0.6, 0.2])
    m *= 1 + rng.normal(0, 3e-4, n)  # peaks of m/dm ~1400
    v = np.linspace(3000.0, 5000.0, n)
    t_s = (L_MM * 1e-3) * np.sqrt(m * U / (2 * E * v))
    rec = np.zeros((n, 11), ">f4")
    rec[:, 0:3] = rng.normal(0, 10, (n, 3))
    rec[:, 3], rec[:, 4], rec[:, 5] = m, t_s * 1e9, v
    ints = rec.view(">i4")
    ints[:, 9] = 1  # one pulse between ions
    ints[:, 10] = 1  # one ion on each pulse
    rec.tofile(path)


def stored_flight_mm(h5: Path) -> float:
    with RunReader(h5) as r:
        return float(r.instrument.flight_path_mm)


def test_an_instrument_file_whose_flight_path_the_data_contradict_is_overruled(
        tmp_path: Path, caplog):
    epos, h5 = tmp_path / "a.epos", tmp_path / "a.h5"
    write_epos(epos)
    xr = REPO / "configs" / "instruments" / "leap5000xr.yaml"
    with caplog.at_level(logging.WARNING, logger="apt_daq"):
        assert main(["import", str(epos), "-o", str(h5), "--instrument", str(xr)]) == 0
    assert stored_flight_mm(h5) == pytest.approx(L_MM, rel=2e-3)
    assert "imply 300 mm" in caplog.text and "382 mm" in caplog.text


@pytest.mark.parametrize("typed, contradicted", [("90", True), ("301", False)])
def test_a_typed_flight_path_is_kept_and_contradicted_only_out_of_agreement(
        tmp_path: Path, caplog, typed: str, contradicted: bool):
    # 90 mm against the 300 mm the data imply: kept, with a warning; 301 mm (0.3 %): quiet
    epos, h5 = tmp_path / "a.epos", tmp_path / "a.h5"
    write_epos(epos)
    with caplog.at_level(logging.WARNING, logger="apt_daq"):
        assert main(["import", str(epos), "-o", str(h5), "--flight-path-mm", typed]) == 0
    assert stored_flight_mm(h5) == float(typed)
    if contradicted:
        assert "imply 300 mm" in caplog.text
    else:
        assert "imply" not in caplog.text


def test_recalibrating_an_import_with_no_reference_is_refused(tmp_path: Path, capsys):
    epos, h5 = tmp_path / "a.epos", tmp_path / "a.h5"
    write_epos(epos)
    assert main(["import", str(epos), "-o", str(h5)]) == 0
    capsys.readouterr()
    assert main(["analyze", str(h5), "--recalibrate", "--no-store"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ranges" in err[0] and "own m/n" in err[0]


def test_voltages_read_in_the_wrong_unit_are_named(tmp_path: Path, caplog):
    # a file in volts imported as kV implies a flight path sqrt(1000) x too long: 9.5 m
    epos, h5 = tmp_path / "a.epos", tmp_path / "a.h5"
    write_epos(epos)
    with caplog.at_level(logging.WARNING, logger="apt_daq"):
        assert main(["import", str(epos), "-o", str(h5), "--voltage-unit", "kV"]) == 0
    assert "which no atom probe has" in caplog.text and "--voltage-unit" in caplog.text
    # an instrument file's flight path is not replaced by that implausible one
    xr, h5b = REPO / "configs" / "instruments" / "leap5000xr.yaml", tmp_path / "b.h5"
    assert main(["import", str(epos), "-o", str(h5b), "--voltage-unit", "kV",
                 "--instrument", str(xr)]) == 0
    assert stored_flight_mm(h5b) == 382.0


def test_recalibrating_a_reflectron_import_is_refused(tmp_path: Path, capsys):
    epos, h5, rrng = tmp_path / "a.epos", tmp_path / "a.h5", tmp_path / "a.rrng"
    write_epos(epos)
    rrng.write_text("[Ions]\nNumber=1\nIon1=C\n[Ranges]\nNumber=1\nRange1=11.9 12.1 C:1\n")
    xr = REPO / "configs" / "instruments" / "leap5000xr.yaml"
    assert main(["import", str(epos), "-o", str(h5), "--instrument", str(xr)]) == 0
    capsys.readouterr()
    assert main(["analyze", str(h5), "--recalibrate", "--no-store", "--ranges", str(rrng)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "reflectron" in err[0]
    assert main(["analyze", str(h5), "--no-store", "--ranges", str(rrng)]) == 0

"""Real LEAP data through the whole chain: apav's AP Suite Si dataset (Si.epos, Si.apt and
their Si.RRNG) imported and analysed. The files carry m/n, positions and detector
coordinates but no TOF and no voltage: their calibrated m/n is authoritative, and analyze's
composition must be exactly that of the RRNG applied to it, computed here independently
(numpy on the raw big-endian records, apav's own RRNG reader for the ranges)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from apav_reference import rrng_composition

from apt_daq.analysis.report import analyze
from apt_daq.cli import main
from apt_daq.commands.import_ import import_file

SI_IONS = 945211


def epos_mass(path: Path) -> np.ndarray:
    """m/n column of an EPOS file read straight from its 44-byte big-endian records."""
    return np.fromfile(path, dtype=">f4").reshape(-1, 11)[:, 3].astype(np.float32)


@pytest.fixture(scope="module")
def si_run(tmp_path_factory, apav_data: Path) -> Path:
    out = tmp_path_factory.mktemp("si") / "si.h5"
    assert main(["import", str(apav_data / "Si.epos"), "--ranges", str(apav_data / "Si.RRNG"),
                 "-o", str(out)]) == 0
    return out


def test_si_epos_composition_is_the_rrng_on_the_files_own_mn(si_run: Path, apav_data: Path):
    res = analyze(si_run)
    s = res.summary
    assert s["ions_total"] == SI_IONS
    assert s["mass_source"] == "the imported file's m/n"
    assert s["calibration"]["mode"] == "file"
    assert s["positions"] == "stored"  # the file's reconstruction, not a recomputed one
    want = rrng_composition(epos_mass(apav_data / "Si.epos"), apav_data / "Si.RRNG")
    got = {el: v["fraction"] for el, v in s["composition"].items()}
    assert set(got) == set(want)
    for el in want:
        assert got[el] == pytest.approx(want[el], abs=1e-4), el
    assert got["Si"] > 0.7  # a silicon specimen (with a Cr-oxide cap)
    # 93 % of the ions fall in a range of the file's RRNG: nothing like the "0 ranged" of a
    # recomputation from the TOF and voltage that the file does not carry
    assert s["ranged_ions"] / s["ions"] > 0.9


def test_si_apt_composition_is_the_rrng_on_the_files_own_mn(tmp_path: Path, apav_data: Path):
    out = tmp_path / "si_apt.h5"
    import_file(apav_data / "Si.apt", out, apav_data / "Si.RRNG")
    s = analyze(out).summary
    want = rrng_composition(epos_mass(apav_data / "Si.epos"), apav_data / "Si.RRNG")
    for el, v in s["composition"].items():
        assert v["fraction"] == pytest.approx(want[el], abs=1e-4), el


def test_cli_analyze_on_real_data_exits_0(si_run: Path, capsys):
    assert main(["analyze", str(si_run)]) == 0
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err
    assert "Si" in cap.out and "imported file's m/n" in cap.out.replace("\n", " ")
    assert main(["analyze", str(si_run), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert all(v["fraction"] is not None for v in s["composition"].values())


def test_ranges_given_at_analyze_time(tmp_path: Path, apav_data: Path, capsys):
    """Imported without --ranges, ranged at analyze: the same composition."""
    out = tmp_path / "bare.h5"
    assert main(["import", str(apav_data / "Si.epos"), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["analyze", str(out), "--ranges", str(apav_data / "Si.RRNG"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    want = rrng_composition(epos_mass(apav_data / "Si.epos"), apav_data / "Si.RRNG")
    for el, v in s["composition"].items():
        assert v["fraction"] == pytest.approx(want[el], abs=1e-4), el


def test_without_ranges_or_tof_one_line_and_exit_2(tmp_path: Path, apav_data: Path, capsys):
    out = tmp_path / "bare.h5"
    assert main(["import", str(apav_data / "Si.epos"), "-o", str(out)]) == 0
    capsys.readouterr()
    # no range file, no ion table: the peaks are identified with no input (apt-daq range)
    assert main(["analyze", str(out), "--json", "--no-store"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert "no input" in s["ranges"]
    assert max(s["composition"], key=lambda el: s["composition"][el]["fraction"] or 0) == "Si"
    # recalibrating needs the TOF and voltage this file does not have
    assert main(["analyze", str(out), "--ranges", str(apav_data / "Si.RRNG"),
                 "--recalibrate"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no TOF and voltage" in err and "Traceback" not in err


def test_export_of_imported_run_keeps_the_files_mn(si_run: Path, apav_data: Path,
                                                   tmp_path: Path):
    """Re-exported, the file's m/n comes out bit for bit (nothing recomputed on the way)."""
    out = tmp_path / "again.epos"
    assert main(["export", str(si_run), "--format", "epos", "-o", str(out)]) == 0
    assert np.array_equal(epos_mass(out), epos_mass(apav_data / "Si.epos"))

"""``apt-daq info`` on a POS, EPOS or APT file (not only a run file): apav's real LEAP Si
files, each figure recomputed here from the raw bytes by numpy (big-endian records as the
EPOS/POS layouts define them), not by the readers under test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apt_daq.cli import main


def _info(capsys, path) -> dict:
    assert main(["info", "--json", str(path)]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_on_apav_epos_matches_the_raw_records(apav_data, capsys):
    path = apav_data / "Si.epos"
    rec = np.fromfile(path, ">f4").reshape(-1, 11)
    ipp = np.fromfile(path, ">u4").reshape(-1, 11)[:, 10]  # ions on the pulse, first ion only
    info = _info(capsys, path)
    assert info["ions"] == len(rec)
    assert info["mass_da"] == pytest.approx([rec[:, 3].min(), rec[:, 3].max()], abs=1e-3)
    assert info["z_nm"] == pytest.approx([rec[:, 2].min(), rec[:, 2].max()], abs=0.01)
    assert info["multi_hit_share"] == pytest.approx(ipp[ipp > 1].sum() / len(rec), abs=1e-5)
    assert "mass" in info["fields"] and "multiplicity" in info["fields"]
    psl = np.fromfile(path, ">u4").reshape(-1, 11)[:, 9].astype(np.int64)
    assert info["pulses"] == (psl.sum() if psl.any() else None)


def test_info_on_apav_pos_has_no_pulses_or_voltage(apav_data, capsys):
    path = apav_data / "Si.pos"
    rec = np.fromfile(path, ">f4").reshape(-1, 4)
    info = _info(capsys, path)
    assert info["ions"] == len(rec)
    assert info["fields"] == ["x", "y", "z", "mass"]
    assert info["pulses"] is None and info["voltage_v"] is None
    assert info["multi_hit_share"] is None
    assert main(["info", str(path)]) == 0  # the human report too
    out = capsys.readouterr().out
    assert "ions:" in out and str(len(rec)) in out


def test_info_on_a_broken_epos_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "cut.epos"
    bad.write_bytes(b"\0" * 1000)  # 22.7 records
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cut.epos" in err[0]


def test_info_on_an_imported_epos_shows_its_voltage_and_pulses(tmp_path, capsys):
    # an import has no instrument log: the voltage range and the pulse count come from the
    # file (built here: 1000 ions, 3 pulses apart, 2000-3000 V)
    n = 1000
    rec = np.zeros((n, 11), ">f4")
    rec[:, 3] = 27.98
    rec[:, 5] = np.linspace(2000.0, 3000.0, n)
    ints = rec.view(">i4")
    ints[:, 9], ints[:, 10] = 3, 1
    epos, h5 = tmp_path / "v.epos", tmp_path / "v.h5"
    rec.tofile(epos)
    assert main(["import", str(epos), "-o", str(h5), "--voltage-unit", "V"]) == 0
    capsys.readouterr()
    info = _info(capsys, h5)
    assert info["voltage_v"] == [2000.0, 3000.0]
    assert info["pulses"] == 3 * n

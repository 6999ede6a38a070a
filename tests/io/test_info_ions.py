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

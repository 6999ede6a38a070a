"""``apt-daq range`` that finds nothing writes nothing and says why (exit 2, one line): an
uncalibrated m/n mostly outside the binned window, or a spectrum with no peak. POS files
built here with numpy (big-endian x, y, z, m/n records)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apt_daq.cli import main


def write_pos(path: Path, mass: np.ndarray) -> None:
    rec = np.zeros((len(mass), 4), ">f4")
    rec[:, 3] = mass
    rec.tofile(path)


def _range(tmp_path: Path, mass: np.ndarray, capsys) -> str:
    pos, out = tmp_path / "a.pos", tmp_path / "a.rrng"
    write_pos(pos, mass)
    assert main(["range", str(pos), "-o", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a.pos" in err[0]
    return err[0]


def test_an_uncalibrated_m_n_is_named_as_the_likely_cause(tmp_path: Path, capsys):
    # m/n from a flight length 3x too short: 9x too heavy, mostly past 400 Da
    rng = np.random.default_rng(0)
    mass = 9 * rng.choice([27.98, 55.93, 63.93], 20_000) * (1 + rng.normal(0, 3e-4, 20_000))
    msg = _range(tmp_path, mass, capsys)
    assert "calibrate" in msg and "of 20000 ions" in msg


def test_a_featureless_spectrum_gets_no_range_file(tmp_path: Path, capsys):
    rng = np.random.default_rng(1)
    msg = _range(tmp_path, rng.uniform(1.0, 200.0, 20_000), capsys)
    assert "no peak identified" in msg


def test_a_spectrum_of_low_resolving_power_is_flagged(tmp_path: Path, capsys, caplog):
    # peaks of m/dm ~100 (an m/n with no voltage or bowl correction): ranged, with a warning
    import logging

    rng = np.random.default_rng(2)
    mass = 26.9815 * (1 + rng.normal(0, 4e-3, 20_000))  # Al+ alone
    pos = tmp_path / "wide.pos"
    write_pos(pos, mass)
    with caplog.at_level(logging.WARNING, logger="apt_daq"):
        main(["range", str(pos), "--json"])
    assert "resolving power" in caplog.text and "calibrate" in caplog.text


def test_a_file_of_mostly_negative_m_n_is_no_ion_file(tmp_path: Path, capsys):
    rng = np.random.default_rng(3)
    pos, h5 = tmp_path / "neg.pos", tmp_path / "neg.h5"
    write_pos(pos, rng.normal(0.0, 50.0, 1000))  # half negative: not an atom probe's m/n
    assert main(["import", str(pos), "-o", str(h5)]) == 2
    assert "negative" in capsys.readouterr().err and not h5.exists()

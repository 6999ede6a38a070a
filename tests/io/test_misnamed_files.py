"""A file named for one format but holding another is refused, not read as garbage ions.

The references are apav's real AP Suite files (Si.epos, Si.pos, Si.apt), cut with plain byte
slicing: an EPOS file of 4k ions is also a whole number of 16-byte POS records, and its TOF,
volts and detector coordinates are numbers of the size of positions and m/n, so before the
check it imported as 11k "ions" with a made-up composition, exit 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from apt_daq.cli import main
from apt_daq.io.pos import PosFile


def _cut(src: Path, dst: Path, nbytes: int) -> Path:
    with open(src, "rb") as fh:
        dst.write_bytes(fh.read(nbytes))
    return dst


@pytest.mark.parametrize("ions", [4, 400, 40_000])
def test_epos_named_pos_is_refused_naming_epos(tmp_path: Path, apav_data: Path, capsys, ions):
    f = _cut(apav_data / "Si.epos", tmp_path / "renamed.pos", 44 * ions)
    assert f.stat().st_size % 16 == 0  # passes the POS size check: the case at issue
    out = tmp_path / "o.h5"
    assert main(["import", str(f), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "EPOS" in err[0] and str(f) in err[0], err
    assert not out.exists()
    # the same bytes imported as what they are give the file's own first ions
    good = _cut(apav_data / "Si.epos", tmp_path / "right.epos", 44 * ions)
    assert main(["import", str(good), "-o", str(tmp_path / "e.h5")]) == 0


@pytest.mark.parametrize("records", [11, 1100, 11_000, 110_000])
def test_real_pos_whose_size_is_whole_epos_records_still_reads(tmp_path: Path, apav_data: Path,
                                                               records):
    """A POS prefix of 11 k records (also a whole number of 44-byte records) is POS."""
    f = _cut(apav_data / "Si.pos", tmp_path / "cut.pos", 16 * records)
    assert f.stat().st_size % 44 == 0
    pos = PosFile(f)
    raw = np.fromfile(f, dtype=">f4").reshape(-1, 4)
    np.testing.assert_array_equal(pos.read()["mass"], raw[:, 3])


def test_apt_named_pos_is_refused(tmp_path: Path, apav_data: Path, capsys):
    f = tmp_path / "renamed.pos"
    f.write_bytes((apav_data / "Si.apt").read_bytes())
    assert main(["import", str(f), "-o", str(tmp_path / "o.h5")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

"""Data and range files that are not what they claim (the fuzz audit's F6, F20 and F22): one
``error:`` line naming the file and what is wrong, exit 2, no numpy RuntimeWarning on the way;
``info`` of a valid but empty file is rc 0 with one warning."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from synthetic_runs import RANGES, make_run

from apt_daq.cli import main


def _run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # one leaking would fail the command
        rc = main(argv)
    return rc, capsys.readouterr().err


def _one_error(rc: int, err: str, *says: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for s in says:
        assert s in lines[0], lines[0]
    return lines[0]


def _pos(path: Path, mass: float, n: int = 2000) -> Path:
    rows = np.zeros((n, 4), ">f4")
    rows[:, 0] = rows[:, 1] = 1.0
    rows[:, 2] = np.arange(n) * 0.01
    rows[:, 3] = mass
    path.write_bytes(rows.tobytes())
    return path


@pytest.mark.parametrize(("mass", "says"), [(-5.0, "is negative"), (np.inf, "is not finite"),
                                            (0.0, "is 0 or NaN")])
def test_import_names_what_the_masses_are(tmp_path, capsys, mass, says):
    src = _pos(tmp_path / "m.pos", mass)
    rc, err = _run_cli(["import", str(src), "-o", str(tmp_path / "m.h5")], capsys)
    _one_error(rc, err, str(src), f"every m/n in the file {says}")


def test_import_of_a_directory_says_so(tmp_path, capsys):
    d = tmp_path / "w"
    d.mkdir()
    rc, err = _run_cli(["import", str(d), "-o", str(tmp_path / "o.h5")], capsys)
    _one_error(rc, err, "is a directory")


@pytest.mark.parametrize("cmd", ["info", "import", "range"])
@pytest.mark.parametrize("kind", ["epos", "epos_counts_ok", "pos"])
def test_random_bytes_are_one_error_and_no_warning(tmp_path, capsys, caplog, cmd, kind):
    """Random bytes of a valid size: refused by info as by import and range, before any numpy
    warning or a voltage-unit guess about bytes that are no ions."""
    raw = np.random.default_rng(1).integers(0, 2**32, 5000 * 11, dtype=np.uint64)
    words = raw.astype(">u4").reshape(5000, 11)
    if kind == "epos_counts_ok":  # pulse columns that pass: the floats must be judged
        words[:, 9], words[:, 10] = 0, 1
    suffix = "pos" if kind == "pos" else "epos"
    src = tmp_path / f"x.{suffix}"
    src.write_bytes(words.tobytes())  # 5000 EPOS records, or 13750 POS records
    out = {"import": ["-o", str(tmp_path / "o.h5")], "range": ["-o", str(tmp_path / "o.rrng")]}
    with caplog.at_level(logging.WARNING):
        rc, err = _run_cli([cmd, str(src), *out.get(cmd, [])], capsys)
    _one_error(rc, err, str(src))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_info_of_an_empty_epos_warns(tmp_path, capsys, caplog):
    src = tmp_path / "e.epos"
    src.write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        rc, _ = _run_cli(["info", str(src)], capsys)
    assert rc == 0
    assert any("holds no ions" in r.getMessage() for r in caplog.records)


def _rrng(path: Path, n: int, vol: str = "0.01") -> Path:
    rows = "".join(f"Range{i + 1}={0.5 + i * 0.04:.4f} {0.52 + i * 0.04:.4f} Vol:{vol} Li:1 "
                   "Color:FF0000\n" for i in range(n))
    path.write_text(f"[Ions]\nNumber=1\nIon1=Li\n[Ranges]\nNumber={n}\n{rows}")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("run")
    (d / "r.rrng").write_text(RANGES)
    return make_run(d / "run.h5", n=3000, with_ranges=d / "r.rrng")


@pytest.mark.parametrize("vol", ["nan", "inf", "-1"])
def test_a_range_volume_that_is_no_volume_is_refused(run, tmp_path, capsys, vol):
    rr = _rrng(tmp_path / "v.rrng", 3, vol)
    rc, err = _run_cli(["analyze", str(run), "--no-store", "--ranges", str(rr)], capsys)
    _one_error(rc, err, f"{rr}:6: Vol:{vol} is not a volume")


def test_a_range_file_of_absurdly_many_ranges_is_refused(run, tmp_path, capsys):
    rr = _rrng(tmp_path / "many.rrng", 10_001)
    rc, err = _run_cli(["analyze", str(run), "--no-store", "--ranges", str(rr)], capsys)
    _one_error(rc, err, str(rr), "more than 10000 ranges")


def test_a_declared_range_count_over_the_limit_is_refused_at_once(tmp_path, capsys):
    rr = tmp_path / "decl.rng"
    rr.write_text("1 2000000\nLi\nLi 1 0 0\n------- Li\n. 6.9 7.1 1\n")
    from apt_daq.errors import DataFileError
    from apt_daq.io.ranges import read_ranges

    with pytest.raises(DataFileError, match="more than 10000 ranges"):
        read_ranges(rr)

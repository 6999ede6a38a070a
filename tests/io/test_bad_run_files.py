"""Run files of an unexpected HDF5 structure (the fuzz audit's F12): every command that reads a
run meets a malformed one as one ``error:`` line naming the file and what is wrong, exit 2,
no traceback and no numpy RuntimeWarning; garbage values inside well-formed datasets read as
NaN with one warning, and the analysis formats what it cannot compute as n/a."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from synthetic_runs import RANGES, make_run

from apt_daq.cli import main

COMMANDS = ("info", "analyze", "plot", "export", "range", "calibrate")


def _args(cmd: str, run: Path, tmp: Path) -> list[str]:
    extra = {"analyze": ["--no-store"], "plot": ["-o", str(tmp / "plots")],
             "export": ["--format", "epos", "-o", str(tmp / "out.epos")],
             "range": ["-o", str(tmp / "out.rrng")]}
    return [cmd, str(run), *extra.get(cmd, [])]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("good")
    (d / "r.rrng").write_text(RANGES)
    return make_run(d / "good.h5", n=3000, with_ranges=d / "r.rrng")


def _hits_group(f):
    del f["hits"]
    f.create_group("hits")


def _hits_float(f):
    del f["hits"]
    f["hits"] = np.zeros(100)


def _hits_extlink(f):
    del f["hits"]
    f["hits"] = h5py.ExternalLink("/nonexistent/nothing.h5", "/hits")


def _hits_softloop(f):
    del f["hits"]
    f["hits"] = h5py.SoftLink("/hits")


def _derived_field(f):
    del f["derived"]
    f["derived"] = np.zeros(10, [("mass", "<f4"), ("x", "<f4")])


def _meta(key, value):
    def edit(f):
        f["meta"].attrs[key] = value
    return edit


# (name, how the file is broken, what the error line must say)
MALFORMED = [
    ("hits_group", _hits_group, "/hits is a group, not a dataset"),
    ("hits_float", _hits_float, "/hits is an array of float64 (shape 100), not a table"),
    ("hits_extlink", _hits_extlink, "/hits is a link that cannot be followed"),
    ("hits_softloop", _hits_softloop, "/hits is a link that cannot be followed"),
    ("derived_field", _derived_field, "/derived lacks the field(s) range_index, y, z"),
    ("config_badjson", _meta("config", "{not json"), "/meta config is not valid JSON"),
    ("config_int", _meta("config", 5), "/meta config is not a JSON object"),
    ("ranges_bad", _meta("ranges", '{"rows": [{"name": "X", "lo_da": "a"}]}'),
     "/meta ranges is not a range table"),
    ("ion_table_bad", _meta("ion_table", "[[1, 2]]"), "/meta ion_table is not a table of ions"),
    ("transitions_bad", _meta("transitions", '["x"]'), "/meta transitions"),
]


def _broken(src: Path, tmp: Path, name: str, edit) -> Path:
    out = tmp / f"{name}.h5"
    out.write_bytes(src.read_bytes())
    with h5py.File(out, "a") as f:
        edit(f)
    return out


def _run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # one leaking would fail the command
        rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(("name", "edit", "says"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_run_file_is_one_error_line_in_every_command(small_run, tmp_path, capsys,
                                                                   name, edit, says):
    bad = _broken(small_run, tmp_path, name, edit)
    for cmd in COMMANDS:
        rc, err = _run_cli(_args(cmd, bad, tmp_path), capsys)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2, (cmd, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (cmd, err)
        assert str(bad) in lines[0] and says in lines[0], (cmd, lines[0])
        assert "Traceback" not in err and "RuntimeWarning" not in err
    assert not (tmp_path / "out.epos").exists() and not (tmp_path / "out.rrng").exists()


def test_the_good_run_reads_in_every_command(small_run, tmp_path, capsys):
    """The checks refuse nothing a writer makes."""
    for cmd in ("info", "analyze", "export"):
        rc, err = _run_cli(_args(cmd, small_run, tmp_path), capsys)
        assert rc == 0, (cmd, err)
        assert "error" not in err


def test_huge_truth_positions_analyze_without_a_crash(small_run, tmp_path, capsys):
    """/truth x0 = 3e38 (a corrupt file): read as NaN with a warning, no inf/None rms error
    reaching a format; the report still prints."""
    def huge(f):
        d = f["truth"][:]
        d["x0"][:] = 3e38
        f["truth"][:] = d
    bad = _broken(small_run, tmp_path, "truth_huge", huge)
    rc, err = _run_cli(["analyze", str(bad), "--no-store"], capsys)
    assert rc == 0, err
    assert "Traceback" not in err


def test_garbage_hit_values_read_as_nan_with_one_warning(small_run, tmp_path):
    """Infinities and 1e38 inside /hits (random bytes in a file): the real CLI's stderr holds
    one warning line naming the file, no numpy RuntimeWarning, and the analysis runs."""
    def garbage(f):
        d = f["hits"][:]
        d["tof"][::7] = np.inf
        d["det_x"][::5] = 3e38
        d["v_dc"][::11] = -np.inf
        f["hits"][:] = d
    bad = _broken(small_run, tmp_path, "hits_garbage", garbage)
    p = subprocess.run([sys.executable, "-m", "apt_daq.cli", "analyze", str(bad), "--no-store"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "RuntimeWarning" not in p.stderr and "Traceback" not in p.stderr
    warned = [ln for ln in p.stderr.splitlines() if "/hits holds values" in ln]
    assert len(warned) == 1 and str(bad) in warned[0]


def test_too_many_stored_ranges_are_refused(small_run, tmp_path, capsys):
    import json

    rows = [{"name": "Li+", "lo_da": 1 + i * 0.01, "hi_da": 1.005 + i * 0.01,
             "composition": {"Li": 1}, "charge": 1, "colour": "9933FF", "volume_nm3": 0.0}
            for i in range(10_001)]
    bad = _broken(small_run, tmp_path, "many", _meta("ranges", json.dumps({"rows": rows})))
    rc, err = _run_cli(["info", str(bad)], capsys)
    assert rc == 2 and "/meta ranges holds more than 10000 ranges" in err


@pytest.mark.parametrize("cmd", ["analyze", "plot", "calibrate"])
def test_an_ion_file_given_as_a_run_says_to_import_it(small_run, tmp_path, capsys, cmd):
    """`analyze a.epos` (info and range read an EPOS as it is) named an HDF5 signature; it
    names the import that makes a run of it. A range file given as a run is named so."""
    epos = tmp_path / "a.epos"
    assert main(["export", str(small_run), "--format", "epos", "-o", str(epos)]) == 0
    rng = tmp_path / "a.rrng"
    rng.write_text(RANGES)
    for path, says in ((epos, f"apt-daq import {epos} -o RUN.h5"), (rng, "--ranges")):
        argv = [cmd, str(path)] + (["-o", str(tmp_path / "p")] if cmd == "plot" else [])
        rc, err = _run_cli(argv, capsys)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1 and says in lines[0], (cmd, err)


def test_fda_says_why_an_asked_ion_has_none(small_run, tmp_path):
    """apav's Si run gave `"fda": {}` with no reason; the reason is in `fda_missing`. Here the
    range file leaves out the O2+ range: O2+ (asked for by default) must be named as unranged,
    Li+ still gets its FDA."""
    from apt_daq.analysis.report import _jsonable, analyze

    lines = [ln for ln in RANGES.splitlines() if "O:2" not in ln]
    n = sum(ln.startswith("Range") for ln in lines)
    no_o2 = tmp_path / "no_o2.rrng"
    no_o2.write_text("\n".join(f"Number={n}" if ln.startswith("Number=") and i > 6 else ln
                               for i, ln in enumerate(lines)) + "\n")
    s = _jsonable(analyze(small_run, no_o2, store=False).summary)
    assert "O2+" not in s["ion_counts"] and "Li+" in s["fda"]
    assert s["fda_missing"] == {"O2+": "no range names it"}

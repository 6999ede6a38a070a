"""Found by a new user's audit from the outside (Dec 2026): an output the file system refuses,
a directory given as a file, a range file with a negative or non-finite edge, and ``analyze``
into a closed pipe. Each ends in one ``error:`` line naming the path and exit code 2 (141 for
the closed pipe), never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_polish import RUN, cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    from apt_daq.run import Session

    out = tmp_path_factory.mktemp("run") / "small.h5"
    Session.from_yaml(RUN, {"run.stop.ions": 3000}, out=out, handle_signals=False).run()
    return out


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [s for s in proc.stderr.splitlines() if s.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert all(n in errors[0] for n in needles), errors[0]
    return errors[0]


@pytest.fixture
def unwritable(tmp_path: Path) -> Path:
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    if os.access(d, os.W_OK):  # root writes through the mode bits
        d.chmod(0o700)
        if subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a directory unwritable here")
    yield d
    subprocess.run(["chattr", "-i", str(d)], capture_output=True)
    d.chmod(0o700)


@pytest.mark.parametrize("args", [["export", "{run}", "--format", "epos", "-o", "{d}/a.epos"],
                                  ["range", "{run}", "-o", "{d}/a.rrng"],
                                  ["plot", "{run}", "-o", "{d}/plots", "--only", "spectrum"]])
def test_an_unwritable_output_is_one_error_line(small_run, unwritable, args):
    argv = [a.format(run=small_run, d=unwritable) for a in args]
    one_error_line(cli(*argv), str(unwritable))


def test_an_output_that_is_a_directory_is_one_error_line(small_run, tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    one_error_line(cli("export", str(small_run), "--format", "pos", "-o", str(d), "--overwrite"))
    assert d.is_dir()


def test_a_directory_given_as_a_run_file(tmp_path):
    d = tmp_path / "d.h5"
    d.mkdir()
    for command in ("info", "analyze"):
        line = one_error_line(cli(command, str(d)), str(d))
        assert "directory" in line, line


def test_a_file_that_is_not_hdf5_is_one_line(tmp_path):
    p = tmp_path / "junk.h5"
    p.write_bytes(os.urandom(5000))
    one_error_line(cli("info", str(p)), str(p), "not a readable HDF5 run file")


@pytest.mark.parametrize("edge, why", [("-5", "below 0 Da"), ("nan", "non-finite"),
                                       ("inf", "non-finite")])
def test_a_range_file_with_a_bad_edge_names_its_line(small_run, tmp_path, edge, why):
    p = tmp_path / "bad.rrng"
    p.write_text("[Ions]\nNumber=1\nIon1=Si\n[Ranges]\nNumber=1\n"
                 f"Range1={edge} 10 Vol:0.01 Si:1 Color:FF0000\n")
    one_error_line(cli("analyze", str(small_run), "--ranges", str(p)), f"{p}:6", why)


def test_analyze_into_a_closed_pipe_ends_quietly_with_141(small_run):
    proc = subprocess.Popen([sys.executable, "-m", "apt_daq.cli", "analyze", "--no-store",
                             str(small_run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, err
    assert "Traceback" not in err, err


def test_every_figure_can_be_asked_for_by_name():
    """`plot` drew multihit.png but `--only multihit` was an invalid choice."""
    from apt_daq.commands.plot import FIGURE_NAMES
    from apt_daq.plots import FIGURES

    assert FIGURE_NAMES == tuple(FIGURES)
    proc = cli("plot", "--help")
    assert all(name in proc.stdout for name in FIGURES), proc.stdout

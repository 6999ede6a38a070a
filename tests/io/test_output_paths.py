"""Output and input paths that cannot be what the command needs get one line naming the
user's path (exit 2), before any work: an -o that is a directory, a folder that cannot take
a file, an input that is a directory. Before, the lines named an internal temporary file
(``.outdir.HOST-PID.XXXX.part: Is a directory``), or came after the whole computation
(``range -o /sys/a.rrng``), or called a directory "no such file"."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from apt_daq.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert ".part" not in err[0]
    return err[0]


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    d = tmp_path / "outdir"
    d.mkdir()
    (d / "keep.txt").write_text("mine")
    return d


def _commands(apav_data: Path, tmp_path: Path, out: Path) -> dict[str, list[str]]:
    return {
        "import": ["import", str(apav_data / "Si.pos"), "-o", str(out), "--overwrite"],
        "range": ["range", str(apav_data / "Si.pos"), "-o", str(out), "--overwrite"],
        "run": ["run", str(ROOT / "configs/runs/nmc811-cr-5pj.yaml"), "-o", str(out),
                "--ions", "1000"],
    }


@pytest.mark.parametrize("cmd", ["import", "range", "run"])
def test_output_that_is_a_directory(tmp_path: Path, apav_data: Path, outdir: Path, capsys, cmd):
    assert main(_commands(apav_data, tmp_path, outdir)[cmd]) == 2
    line = _one_error(capsys)
    assert str(outdir) in line and "is a directory" in line
    assert sorted(p.name for p in outdir.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("cmd", ["import", "range"])
def test_output_under_a_file(tmp_path: Path, apav_data: Path, capsys, cmd):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    out = a_file / "x.out"
    assert main(_commands(apav_data, tmp_path, out)[cmd]) == 2
    line = _one_error(capsys)
    assert str(out) in line and "not a directory" in line
    assert a_file.read_text() == "x"


def _unwritable_folder() -> Path | None:
    """A folder no file can be created in, as this machine has one (root passes chmod)."""
    for d in ("/sys", "/proc"):
        try:
            with tempfile.TemporaryFile(dir=d):
                pass
        except OSError:
            return Path(d)
    return None


@pytest.mark.parametrize("cmd", ["import", "range"])
def test_output_folder_that_takes_no_file(tmp_path: Path, apav_data: Path, capsys, cmd):
    folder = _unwritable_folder()
    if folder is None:
        pytest.skip("no folder here refuses new files")
    out = folder / "x.out"
    assert main(_commands(apav_data, tmp_path, out)[cmd]) == 2
    line = _one_error(capsys)
    assert str(out) in line and "cannot write" in line


@pytest.mark.parametrize("cmd", ["import", "import-apt", "import-epos", "import-ifes", "range",
                                 "info", "analyze"])
def test_input_that_is_a_directory(tmp_path: Path, capsys, cmd):
    d = tmp_path / "data.pos"
    d.mkdir()
    args = {"import": ["import", str(d), "-o", str(tmp_path / "o.h5")],
            "import-apt": ["import", str(d), "--format", "apt", "-o", str(tmp_path / "o.h5")],
            "import-epos": ["import", str(d), "--format", "epos", "-o", str(tmp_path / "o.h5")],
            "import-ifes": ["import", str(d), "--format", "ifes-pos", "-o",
                            str(tmp_path / "o.h5")],
            "range": ["range", str(d)],
            "info": ["info", str(d)],
            "analyze": ["analyze", str(d)]}[cmd]
    assert main(args) == 2
    line = _one_error(capsys)
    assert str(d) in line and "is a directory" in line
    assert not (tmp_path / "o.h5").exists()
    assert os.listdir(d) == []

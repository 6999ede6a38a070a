"""The CLI never surprises: one line per error whatever the terminal, a quiet exit on a closed
pipe, argument errors that name the argument, a readable ``info``, a visible PAUSED state, a
warning when ``--ions`` cuts a schedule short, and a notice while numba compiles."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "configs" / "runs" / "nmc811-cr-5pj.yaml"
SCHEDULE = ROOT / "configs" / "runs" / "nmc811-cr-5-20pj.yaml"


def cli(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    """``apt-daq ARGS`` with stdout and stderr pipes (not a terminal) and no COLUMNS hint."""
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run([sys.executable, "-m", "apt_daq.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env={**base, **(env or {})}, timeout=300, **kw)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A short simulated run written by the engine (warm kernels: a few seconds)."""
    from apt_daq.run import Session

    out = tmp_path_factory.mktemp("run") / "small.h5"
    Session.from_yaml(RUN, {"run.stop.ions": 3000}, out=out, handle_signals=False).run()
    return out


# ------------------------------------------------------------------ one line per error
def test_an_error_is_one_line_when_stderr_is_a_pipe(tmp_path: Path) -> None:
    deep = tmp_path / "a-folder-with-a-rather-long-name" / "and-another-one-below-it"
    deep.mkdir(parents=True)
    p = deep / "run.yaml"
    p.write_text(RUN.read_text().replace("../", f"{RUN.parent.parent}/")
                 .replace("  seed: 1", "  a_misspelt_key_with_a_long_name_that_runs_on: 1"))
    proc = cli("config", "check", str(p))
    assert proc.returncode == 2
    line = next(i for i, s in enumerate(p.read_text().splitlines(), 1) if "a_misspelt" in s)
    want = (f"error: {p}:{line} run.a_misspelt_key_with_a_long_name_that_runs_on: unknown key "
            "(misspelt?)")
    assert len(want) > 80
    assert proc.stderr.splitlines() == [want], proc.stderr


def test_a_closed_pipe_ends_quietly_with_141() -> None:
    """`apt-daq config schema | head -1`: the reader is gone before the first write."""
    proc = subprocess.Popen([sys.executable, "-m", "apt_daq.cli", "config", "schema"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()  # before the interpreter has even started: every write fails
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == "", err


def test_info_json_into_a_closed_pipe_ends_quietly(small_run: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "apt_daq.cli", "info", "--json",
                             str(small_run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "BrokenPipeError" not in err and "Traceback" not in err, err


# ------------------------------------------------------------------ argument errors
@pytest.mark.parametrize("args, name", [(["--ions", "-5"], "--ions"), (["--ions", "0"], "--ions"),
                                        (["--seed", "-1"], "--seed")])
def test_a_bad_argument_is_blamed_on_the_argument(tmp_path: Path, args, name) -> None:
    proc = cli("run", str(RUN), "-o", str(tmp_path / "r.h5"), "--quiet", *args)
    assert proc.returncode == 2
    assert f"argument {name}: " in proc.stderr, proc.stderr
    assert "yaml" not in proc.stderr.split("error:", 1)[-1], proc.stderr  # not the YAML line
    assert not (tmp_path / "r.h5").exists()


# ------------------------------------------------------------------ info
def test_info_is_readable(small_run: Path) -> None:
    proc = cli("info", str(small_run))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "{" not in text and "[" not in text, text  # no Python reprs
    assert not re.search(r"\d\.\d{4,}", text), text  # no float noise (809.9999999999998)
    assert re.search(r"instrument time:\s+(\d+ h )?(\d+ min )?\d+ s\b", text), text
    for name, legend in [("raw", "DLD records"), ("hits", "detected ions"),
                         ("lost", "left no hit"), ("log", "readout block")]:
        assert re.search(rf"^\s+{name}\s+\d+\s+.*{legend}", text, re.M), (name, text)
    assert all(len(ln) <= 100 for ln in text.splitlines()), text


def test_info_json_is_clean(small_run: Path) -> None:
    proc = cli("info", "--json", str(small_run))
    info = json.loads(proc.stdout)
    assert info["state"] == "done"
    assert all(isinstance(v, int) for v in info["counts"].values())
    assert info["counts"]["hits"] >= 3000
    t = info["instrument_time_s"]
    assert isinstance(t, float | int) and t == round(t, 3)
    assert all(v == round(v, 1) for v in info["voltage_v"])
    assert isinstance(info["pulses"], int)

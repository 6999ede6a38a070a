"""A normal (non-editable) install works, outside the repository: the wheel holds everything
under the ``apt_daq`` namespace (no top-level ``drivers`` or ``sim``), ships the example
configs, and the commands a new user types first run from an empty folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                           str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("apt_daq-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; its dependencies are borrowed from the test's
    own environment through a .pth line (whose own .pth files, the editable finder among
    them, are not run), so nothing is downloaded and the repository is not on the path."""
    v = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(v)], check=True, timeout=300)
    site = next((v / "lib").glob("python*/site-packages"))
    (site / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(v / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                    str(wheel)], check=True, timeout=300)
    return v


def run(venv: Path, cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: val for k, val in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    return subprocess.run([str(venv / "bin" / "apt-daq"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_wheel_holds_only_the_apt_daq_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"apt_daq"}, tops
    for must in ("apt_daq/drivers/__init__.py", "apt_daq/drivers/hv.py", "apt_daq/sim/emulator.py",
                 "apt_daq/configs/runs/nmc811-cr-5pj.yaml", "apt_daq/configs/ranges/nmc811.rrng",
                 "apt_daq/configs/pyvisa-sim/hv.yaml", "apt_daq/data/isotopes.json"):
        assert must in names, must
    # every package of the source tree is in the wheel
    for init in [*ROOT.glob("apt_daq/**/__init__.py")]:
        rel = init.relative_to(ROOT).as_posix()
        if "__pycache__" not in rel:
            assert rel in names, rel


def test_fresh_install_runs_from_an_empty_folder(venv: Path, tmp_path: Path) -> None:
    py = str(venv / "bin" / "python")
    gone = subprocess.run([py, "-c", "import drivers"], cwd=tmp_path, capture_output=True)
    assert gone.returncode != 0  # nothing generic at the top level
    where = subprocess.run([py, "-c", "import apt_daq; print(apt_daq.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert str(ROOT) not in where and str(venv) in where
    r = run(venv, tmp_path, "run", "nmc811-cr-5pj", "--ions", "20000", "-o", "a.h5", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "done" in r.stdout
    r = run(venv, tmp_path, "configs", "copy", "mine")
    assert r.returncode == 0 and (tmp_path / "mine/runs/nmc811-cr-5pj.yaml").is_file()
    r = run(venv, tmp_path, "reproduce", "--figure", "4", "--ions", "20000", "-o", "repro")
    # 1: a row failed (at 20 000 ions counting noise may fail one; the rows hold at 200 000)
    assert r.returncode in (0, 1) and "rows pass" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert (tmp_path / "repro" / "table.md").is_file()


def test_emulate_with_its_default_specimen(venv: Path, tmp_path: Path) -> None:
    ports = tmp_path / "ports.json"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    p = subprocess.Popen([str(venv / "bin" / "apt-daq"), "emulate", "--ports-file", str(ports)],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (ports.exists() and ports.stat().st_size) and time.monotonic() < deadline:
            assert p.poll() is None, p.stderr.read()[-3000:]
            time.sleep(0.2)
        assert set(json.loads(ports.read_text())) >= {"laser", "hv", "dld", "control"}
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
    assert p.returncode == 0

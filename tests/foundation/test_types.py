"""mypy passes on the typed seams: the drivers, the simulator, the pipeline and the run engine.

The command is ``python tools/typecheck.py``, which runs

    mypy -p apt_daq.drivers -p apt_daq.sim -p apt_daq.pipeline -m apt_daq.run

with pyproject.toml's ``[tool.mypy]`` on a symlink tree of the package (mypy cannot follow the
editable install's folder mapping; see the tool's docstring).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("mypy")


def test_mypy_passes_on_drivers_sim_pipeline_and_run_engine():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "typecheck.py")],
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    print(out)
    assert proc.returncode == 0, f"mypy found errors:\n{out}"
    assert "Success: no issues found" in out

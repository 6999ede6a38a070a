"""mypy passes on the typed seams: the drivers, the simulator, the pipeline, the run engine, the
config models and loader, the ROI and range models, the store and file formats (io), the
campaign and the CLI entry.

The command is ``python tools/typecheck.py``, which runs

    mypy -p apt_daq.drivers -p apt_daq.sim -p apt_daq.pipeline -m apt_daq.run ...

(its ``TARGETS``)
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


def test_mypy_passes_on_the_typed_scope():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "typecheck.py")],
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    print(out)
    assert proc.returncode == 0, f"mypy found errors:\n{out}"
    assert "Success: no issues found" in out


def test_no_checked_module_is_silenced():
    """A module in the typed scope must not also be in the silenced list of pyproject.toml
    (``follow_imports = "silent"`` hides a checked module's errors when another imports it)."""
    import fnmatch
    import tomllib

    sys.path.insert(0, str(ROOT / "tools"))
    from typecheck import TARGETS

    checked = TARGETS[1::2]
    overrides = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["overrides"]

    def follow(module: str) -> str:
        """follow_imports for ``module`` or its submodules: an exact name wins over a pattern,
        a longer pattern over a shorter one (as mypy picks)."""
        best, how = -1, "normal"
        for o in overrides:
            for pat in o["module"]:
                rank = (1000 if pat == module else
                        len(pat) if fnmatch.fnmatch(module, pat) or fnmatch.fnmatch(module + ".x",
                                                                                   pat) else -1)
                if rank > best and "follow_imports" in o:
                    best, how = rank, o["follow_imports"]
        return how

    both = [c for c in checked if follow(c) == "silent"]
    assert not both, f"checked but silenced in pyproject.toml: {both}"

"""Run mypy on the typed seams: the drivers, the simulator, the pipeline, the run engine, the
config models and loader, the ROI and range models, the store and file formats (io), the
campaign and the CLI entry.

    python tools/typecheck.py            # what tests/foundation/test_types.py runs
    python tools/typecheck.py -v         # extra arguments go to mypy

mypy cannot follow the editable install: setuptools maps ``apt_daq.drivers`` to ``drivers/``
and ``apt_daq.sim`` to ``sim/`` with an import hook (pyproject.toml
``[tool.setuptools.package-dir]``), and mypy resolves modules from folders only. So this builds
the package as the interpreter sees it, a tree of symlinks in ``.mypy-tree/`` (``apt_daq/*``
plus ``apt_daq/drivers -> drivers`` and ``apt_daq/sim -> sim``), and runs

    mypy -p apt_daq.drivers -p apt_daq.sim -p apt_daq.pipeline -m apt_daq.run ... (TARGETS)

from inside it with the settings of pyproject.toml ``[tool.mypy]``. Paths in mypy's messages
read ``apt_daq/drivers/base.py`` for ``drivers/base.py`` and so on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / ".mypy-tree"
TARGETS = ["-p", "apt_daq.drivers", "-p", "apt_daq.sim", "-p", "apt_daq.pipeline",
           "-m", "apt_daq.run", "-p", "apt_daq.engine",
           # the foundation's config, ROI and range models, the store and file formats, the
           # campaign and the CLI's entry
           "-p", "apt_daq.config", "-m", "apt_daq.roi", "-m", "apt_daq.rangetable",
           "-p", "apt_daq.io",
           "-p", "apt_daq.campaign", "-m", "apt_daq.campaign_plots", "-m", "apt_daq.cli",
           "-m", "apt_daq.config_check", "-m", "apt_daq.analysis.report",
           # the commands over the store, the formats, the configs and the analysis report
           "-m", "apt_daq.commands.analyze", "-m", "apt_daq.commands.config",
           "-m", "apt_daq.commands.configs", "-m", "apt_daq.commands.export",
           "-m", "apt_daq.commands.import_", "-m", "apt_daq.commands.info"]


def build_tree() -> Path:
    """``.mypy-tree/apt_daq``: a symlink to every entry of ``apt_daq/`` and one per mapped
    package folder of pyproject.toml; rebuilt each time (cheap) so it never goes stale."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    pkg = TREE / "apt_daq"
    pkg.mkdir(parents=True, exist_ok=True)
    want = {p.name: p for p in (ROOT / "apt_daq").iterdir() if p.name != "__pycache__"}
    for name, folder in mapping.items():
        head, _, sub = name.partition(".")
        if head == "apt_daq" and sub and "." not in sub:
            want[sub] = ROOT / folder
    for link in pkg.iterdir():
        if link.is_symlink() and (link.name not in want or link.resolve() != want[link.name]):
            link.unlink()
    for name, target in want.items():
        link = pkg / name
        if not link.is_symlink():
            link.symlink_to(target)
    return TREE


def main(argv: list[str]) -> int:
    tree = build_tree()
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
           "--cache-dir", str(ROOT / ".mypy_cache"), *TARGETS, *argv]
    env = {**os.environ, "MYPYPATH": ""}
    return subprocess.call(cmd, cwd=tree, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The import-linter contracts of ``.importlinter`` hold (issue 21 item 1), they are the layers
of tests/foundation/test_layers.py (so of the picture in docs/architecture.md), and they can fail.

import-linter is in the dev dependencies, so CI runs this; it is skipped only where the package
is not installed. ``tools/importlint.py`` runs ``lint-imports`` on the package as the
interpreter sees it (drivers/ and sim/ mapped in as apt_daq.drivers and apt_daq.sim).
"""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is not installed (pip install -e "
                    "'.[dev]' installs it)")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from importlint import CONFIG, lint  # noqa: E402
from test_layers import APART, LAYERS, SEAMS  # noqa: E402
from typecheck import build_tree  # noqa: E402


def _contracts() -> configparser.ConfigParser:
    cp = configparser.ConfigParser()
    cp.read(CONFIG)
    return cp


def test_the_contracts_are_kept():
    proc = lint(build_tree())
    out = proc.stdout + proc.stderr
    print(out)
    assert proc.returncode == 0, f"lint-imports: a contract is broken:\n{out}"
    n = sum(1 for s in _contracts().sections() if s.startswith("importlinter:contract:"))
    assert f"Contracts: {n} kept, 0 broken." in out


def test_the_contract_layers_are_the_layers_table():
    """Bottom first, each layer the same modules as test_layers.LAYERS (less the root package,
    the container itself); the seam contract names the same packages and seam."""
    cp = _contracts()
    layers = cp["importlinter:contract:layers"]
    declared = [line.strip() for line in layers["layers"].strip().splitlines()]
    ours = [{t.strip() for t in line.split(":")} for line in reversed(declared)]
    table = [{p.removeprefix("apt_daq.") for p in prefixes if p != "apt_daq"}
             for _, prefixes in LAYERS]
    assert ours == table
    seam = cp["importlinter:contract:seam"]
    assert {m.strip() for m in seam["modules"].split()} == {m for pair in APART for m in pair}
    ignored = [line.strip() for line in seam["ignore_imports"].strip().splitlines()]
    assert {f"{a} -> {b}.**" for a, b in SEAMS} <= set(ignored)


def _probe_tree(tmp_path: Path, edits: dict[str, str]) -> Path:
    """A copy of the package tree (symlinks) in which each file of ``edits`` (a path inside
    the package) is a real file: the original text plus the given lines."""
    pkg = build_tree() / "apt_daq"
    out = tmp_path / "apt_daq"

    def mirror(src: Path, dst: Path, rel: str) -> None:
        dst.mkdir()
        for entry in src.iterdir():
            name = f"{rel}{entry.name}"
            if name in edits:
                (dst / entry.name).write_text(entry.read_text() + edits[name])
            elif any(e.startswith(name + "/") for e in edits):
                mirror(entry, dst / entry.name, name + "/")
            elif entry.name != "__pycache__":
                (dst / entry.name).symlink_to(entry.resolve())

    mirror(pkg, out, "")
    return tmp_path


def test_the_contracts_can_fail(tmp_path):
    """An upward lazy import in the foundation, a simulator module importing a driver, the
    store importing the analysis and a circle inside a package are each reported."""
    lazy = "\n\ndef _probe():\n    from apt_daq.commands import info  # noqa: F401\n"
    tree = _probe_tree(tmp_path, {
        "errors.py": lazy,
        "sim/faults.py": "\nfrom apt_daq.drivers import base  # noqa: E402,F401\n",
        "io/pos.py": "\nfrom apt_daq.analysis import report  # noqa: E402,F401\n",
        # runner imports table: a circle between two modules of apt_daq.campaign
        "campaign/table.py": "\nfrom apt_daq.campaign import runner  # noqa: E402,F401\n",
    })
    proc = lint(tree)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "apt_daq.errors -> apt_daq.commands.info" in out
    assert "apt_daq.sim.faults -> apt_daq.drivers.base" in out
    assert "apt_daq.io.pos -> apt_daq.analysis.report" in out
    assert "No circle between the modules and subpackages of any package BROKEN" in out
    assert "Contracts: 1 kept, 4 broken." in out

"""Check the import-linter contracts of ``.importlinter`` (the layering rule of
docs/architecture.md).

    python tools/importlint.py           # what tests/foundation/test_import_contracts.py runs
    python tools/importlint.py --verbose # extra arguments go to lint-imports

grimp (import-linter's graph builder) finds a package's modules by walking the folder of its
``__init__``; the editable install maps ``apt_daq.drivers`` to ``drivers/`` and ``apt_daq.sim``
to ``sim/`` with an import hook, so walking ``apt_daq/`` would miss both. This runs
``lint-imports`` from inside the symlink tree of ``tools/typecheck.py`` (``.mypy-tree/apt_daq``
with ``drivers`` and ``sim`` linked in: the package as the interpreter sees it), which comes
first on ``sys.path`` there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from typecheck import ROOT, build_tree

CONFIG = ROOT / ".importlinter"


def lint(tree: Path, argv: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the package ``tree/apt_daq`` (output captured)."""
    cmd = [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
           str(CONFIG), "--no-cache", *argv]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=600)


def main(argv: list[str]) -> int:
    proc = lint(build_tree(), argv)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

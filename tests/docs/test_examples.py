"""Every ```python and ```bash example in docs/ and the README runs, as a user would run it:
in a fresh folder holding the shipped ``configs/`` (and the ``.venv``), with a running
emulator when the example talks to one (``runs/ports.json``). An example that fails or hangs
fails here, so the docs cannot drift from the code.

Blocks in other languages (``yaml``, ``json``, ``toml``, ``text``) are file contents or
synopses with placeholders (``SWEEP.yaml``, a cluster address) and are not run; an untagged
block is refused, so every block says which it is.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
RUN = ("python", "bash")
#: blocks that need a fixture a fresh folder cannot hold, run by a test of their own, found by
#: the HTML comment tag just above the block (checked: that test must read the tag)
RUN_ELSEWHERE = {"calibrate-commands": "tests/pipeline/test_calibrate_unknown_instrument.py"}
TAG = re.compile(r"<!--\s*([\w-]+)\s*-->\s*$")
KNOWN = (*RUN, "yaml", "json", "toml", "text")
TIMEOUT_S = 600


def blocks() -> list:
    out = []
    for md in DOCS:
        text = md.read_text()
        for m in FENCE.finditer(text):
            lang = m.group(1).strip().split()[0] if m.group(1).strip() else ""
            line = text.count("\n", 0, m.start()) + 1
            before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            tag = TAG.search(before)
            out.append(pytest.param(md, line, lang, m.group(2), tag.group(1) if tag else "",
                                    id=f"{md.relative_to(ROOT)}:{line}"))
    return out


ALL = blocks()


@pytest.mark.parametrize(("md", "line", "lang", "code", "tag"), ALL)
def test_every_block_says_what_it_is(md: Path, line: int, lang: str, code: str,
                                     tag: str) -> None:
    assert lang in KNOWN, (f"{md.name}:{line}: a ```{lang} block; tag it python or bash (run "
                           f"in the tests) or yaml/json/toml/text (not run)")


@pytest.mark.slow
@pytest.mark.parametrize(("md", "line", "lang", "code", "tag"),
                         [p for p in ALL if p.values[2] in RUN])
def test_example_runs(md: Path, line: int, lang: str, code: str, tag: str,
                      tmp_path: Path) -> None:
    if tag in RUN_ELSEWHERE:
        owner = ROOT / RUN_ELSEWHERE[tag]
        assert f'"{tag}"' in owner.read_text(), f"{owner} no longer runs <!-- {tag} -->"
        return
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    if (ROOT / ".venv").exists():
        (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "runs").mkdir()
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    emulator = None
    if "runs/ports.json" in code:
        sys.path.insert(0, str(ROOT / "tests" / "hil"))
        from hil_support import EmulatorProcess

        emulator = EmulatorProcess(tmp_path / "runs")
    try:
        if lang == "python":
            cmd = [sys.executable, "-c", code]
        else:
            cmd = ["bash", "-euo", "pipefail", "-c", code]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    finally:
        if emulator is not None:
            emulator.stop()
    assert proc.returncode == 0, (f"{md.name}:{line} failed (exit {proc.returncode}):\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")

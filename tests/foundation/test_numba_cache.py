"""The numba cache is keyed by the sources (apt_daq.shipped.default_numba_cache): numba checks
a cached kernel against its own module's file only, so an edit of a function it calls in
another module loads stale machine code from an unkeyed cache."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from apt_daq import shipped

CALLEE = "from numba import njit\n\n\n@njit(cache=True)\ndef f():\n    return {}\n"
CALLER = textwrap.dedent("""
    from numba import njit
    from callee import f


    @njit(cache=True)
    def g():
        return f()


    print(g())
""")


def _run(src: Path, cache: Path) -> str:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(src)}
    return subprocess.run([sys.executable, str(src / "caller.py")], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()


def _edit_callee(src: Path, value: int) -> None:
    time.sleep(0.01)  # a new mtime even on a coarse clock
    (src / "callee.py").write_text(CALLEE.format(value))


def test_numba_loads_a_stale_caller_after_its_callee_changed(tmp_path):
    """What the keyed cache is for, shown on numba itself: the same cache folder gives the old
    answer after the callee's edit; a folder keyed by the sources gives the new one."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "caller.py").write_text(CALLER)
    _edit_callee(src, 1)
    assert _run(src, tmp_path / "cache") == "1"
    _edit_callee(src, 2)
    stale = _run(src, tmp_path / "cache")
    if stale == "2":
        pytest.skip("this numba version notices a callee's edit: the key is not needed")
    assert stale == "1"
    assert _run(src, tmp_path / "cache-keyed-after-edit") == "2"


def _fake_checkout(root: Path) -> None:
    for top in ("apt_daq", "sim", "drivers"):
        (root / top).mkdir(parents=True)
        (root / top / "m.py").write_text("x = 1\n")


def test_the_digest_changes_with_any_source_edit(tmp_path):
    _fake_checkout(tmp_path)
    before = shipped.source_digest(tmp_path)
    assert shipped.source_digest(tmp_path) == before
    for top in ("apt_daq", "sim", "drivers"):
        time.sleep(0.01)
        (tmp_path / top / "m.py").write_text("x = 22\n")
        after = shipped.source_digest(tmp_path)
        assert after != before, top
        before = after
    (tmp_path / "apt_daq" / "notes.txt").write_text("not a source")
    assert shipped.source_digest(tmp_path) == before


def test_default_cache_is_keyed_kept_and_a_users_choice_stands(tmp_path, monkeypatch):
    _fake_checkout(tmp_path)
    monkeypatch.setattr(shipped, "source_root", lambda: tmp_path)
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/somewhere/mine")
    shipped.default_numba_cache()
    assert os.environ["NUMBA_CACHE_DIR"] == "/somewhere/mine"
    made = []
    for k in range(shipped.CACHES_KEPT + 2):
        monkeypatch.delenv("NUMBA_CACHE_DIR")
        time.sleep(0.01)
        (tmp_path / "sim" / "m.py").write_text(f"x = {k}\n")
        shipped.default_numba_cache()
        here = Path(os.environ["NUMBA_CACHE_DIR"])
        assert here.parent == tmp_path / ".numba-cache" and here.is_dir()
        assert here.name == f"src-{shipped.source_digest(tmp_path)}"
        made.append(here)
    kept = sorted((tmp_path / ".numba-cache").iterdir())
    assert len(kept) == shipped.CACHES_KEPT and made[-1] in kept and made[0] not in kept

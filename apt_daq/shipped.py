"""The example configs that ship inside the package (``apt_daq.configs``), found the same way
in a source checkout, an editable install and a wheel install.

``configs_dir()`` is the folder (``runs/``, ``instruments/``, ``specimens/``, ``ranges/``,
``campaigns/``, ``pyvisa-sim/``); ``resolve(arg, kind)`` turns what a user typed into a file:
an existing path as is, else a shipped config by name (``nmc811-cr-5pj`` ->
``runs/nmc811-cr-5pj.yaml``); ``listing()`` and ``copy_to(dest)`` back ``apt-daq configs``.
"""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

from apt_daq.errors import UserError

KINDS = ("runs", "instruments", "specimens", "ranges", "campaigns", "pyvisa-sim")
_SUFFIXES = (".yaml", ".yml", ".rrng", ".rng")


def configs_dir() -> Path:
    """The shipped configs folder (a real directory: the package is never zipped)."""
    return Path(str(files("apt_daq.configs")))


def listing() -> dict[str, list[str]]:
    """The shipped configs by kind: names without suffix."""
    root = configs_dir()
    return {kind: sorted(p.stem for p in (root / kind).iterdir() if p.suffix in _SUFFIXES)
            for kind in KINDS if (root / kind).is_dir()}


def resolve(arg: str | Path, kind: str = "runs") -> Path:
    """``arg`` if it is an existing file, else the shipped ``kind`` config of that name.

    A name may carry its suffix or not, and may name its kind (``runs/nmc811-cr-5pj``). A
    missing file that names no shipped config is returned as given, for the caller's own
    "cannot read" error."""
    path = Path(arg)
    if path.exists() or path.is_absolute():
        return path
    root = configs_dir()
    for stem in (str(arg), f"{kind}/{arg}"):
        for suffix in ("", *_SUFFIXES):
            cand = root / f"{stem}{suffix}"
            if cand.is_file():
                return cand
    return path


def source_root() -> Path | None:
    """The checkout's root when apt-daq runs from a source tree (editable install), else None."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "apt_daq").is_dir() else None


def source_digest(root: Path) -> str:
    """A digest of every Python source of the checkout (path, size, mtime): it changes with
    any edit, ``git checkout`` or pull."""
    import hashlib
    import os

    h = hashlib.blake2b(digest_size=8)
    for top in ("apt_daq", "sim", "drivers"):
        for dirpath, dirnames, names in os.walk(root / top):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(names):
                if name.endswith(".py"):
                    st = os.stat(os.path.join(dirpath, name))
                    h.update(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


CACHES_KEPT = 4  # source versions whose compiled kernels stay in .numba-cache


def default_numba_cache() -> None:
    """In a writable source checkout every way in (make, the tests, the CLI, worker processes)
    shares one numba cache, ``.numba-cache/src-<digest of the sources>``; elsewhere numba's own
    default stands, and a NUMBA_CACHE_DIR the user set is left alone.

    Keyed by the sources because numba checks a cached kernel against its own module's file
    only: edit a function it calls in another module and the stale machine code loads again
    (on Dec 4 2026 the fused pipeline kernel ran at 95 M hits/s from such a cache, 153 M
    compiled afresh; results could as well be stale). The oldest versions beyond
    ``CACHES_KEPT`` are removed."""
    import os
    import shutil

    root = source_root()
    if "NUMBA_CACHE_DIR" in os.environ or root is None or not os.access(root, os.W_OK):
        return
    base = root / ".numba-cache"
    here = base / f"src-{source_digest(root)}"
    os.environ["NUMBA_CACHE_DIR"] = str(here)
    if here.is_dir():
        return
    try:
        here.mkdir(parents=True, exist_ok=True)
        old = sorted((p for p in base.iterdir() if p != here),
                     key=lambda p: p.stat().st_mtime, reverse=True)
        for p in old[CACHES_KEPT - 1:]:
            shutil.rmtree(p, ignore_errors=True)
    except OSError:
        pass  # a cache that cannot be tidied still works


def copy_to(dest: str | Path) -> Path:
    """Copy every shipped config into ``dest`` (created; existing files are not overwritten),
    keeping the folder layout so relative includes still resolve. Returns ``dest``."""
    dest = Path(dest)
    root = configs_dir()
    copied = 0
    for kind in KINDS:
        src = root / kind
        if not src.is_dir():
            continue
        (dest / kind).mkdir(parents=True, exist_ok=True)
        for p in sorted(src.iterdir()):
            if p.suffix in _SUFFIXES and not (dest / kind / p.name).exists():
                shutil.copy2(p, dest / kind / p.name)
                copied += 1
    if copied == 0 and not any(dest.iterdir()):
        raise UserError(f"{root}: no configs to copy")
    return dest

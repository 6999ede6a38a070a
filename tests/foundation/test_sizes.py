"""No module over 500 lines and no function over 80 lines (issue 21), unless listed in ALLOW.

Sizes are read from the AST of every module of ``apt_daq/``, ``drivers/`` and ``sim/``: a
module's size is its line count, a function's ``end_lineno - lineno + 1`` (decorators and
docstring included; a method is ``Class.method``, a nested function ``outer.inner``). Numba
kernels (decorated with ``njit`` or ``jit``, bare or called, ``numba.`` or ``nb.`` prefixed or
not) are exempt: a hot loop is one function so numba compiles it as one.

ALLOW maps an offender (a module path, or ``path::qualified.name`` for a function) to a
one-line reason. The test fails for an offender that is not listed and for a listed entry that
is no longer an offender (fixed, renamed or moved): delete the entry when the split lands.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("apt_daq", "drivers", "sim")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
KERNEL_DECORATORS = {"njit", "jit"}

ALLOW: dict[str, str] = {
    # modules over 500 lines
    # functions over 80 lines
}


def _is_kernel(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for dec in fn.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        name = (target.attr if isinstance(target, ast.Attribute)
                else target.id if isinstance(target, ast.Name) else None)
        if name in KERNEL_DECORATORS:
            return True
    return False


def _functions(node: ast.AST, prefix: str = ""):
    """(qualified name, function node) of every function under ``node``, nested ones too."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + child.name, child
            yield from _functions(child, prefix + child.name + ".")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, prefix + child.name + ".")
        else:
            yield from _functions(child, prefix)


def offenders() -> dict[str, int]:
    """Offender key (as in ALLOW) -> its size in lines."""
    out: dict[str, int] = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(ROOT).as_posix()
            text = path.read_text()
            n_lines = len(text.splitlines())
            if n_lines > MAX_MODULE_LINES:
                out[rel] = n_lines
            for qualname, fn in _functions(ast.parse(text, rel)):
                assert fn.end_lineno is not None
                size = fn.end_lineno - fn.lineno + 1
                if size > MAX_FUNCTION_LINES and not _is_kernel(fn):
                    out[f"{rel}::{qualname}"] = size
    return out


def test_no_unlisted_long_module_or_function():
    found = offenders()
    unlisted = {k: v for k, v in found.items() if k not in ALLOW}
    assert not unlisted, (
        f"over {MAX_MODULE_LINES} lines per module or {MAX_FUNCTION_LINES} per function, not in "
        "ALLOW (split it, or list it with a one-line reason):\n"
        + "\n".join(f"  {k}: {v} lines" for k, v in sorted(unlisted.items())))


def test_allow_list_has_no_stale_entries():
    found = offenders()
    stale = sorted(k for k in ALLOW if k not in found)
    assert not stale, ("ALLOW entries that are no longer over the limit (or moved): delete "
                       "them:\n" + "\n".join(f"  {k}" for k in stale))


def test_allow_reasons_are_one_line():
    for key, reason in ALLOW.items():
        assert reason.strip() and "\n" not in reason, key


def test_kernels_are_recognised():
    tree = ast.parse("import numba\nfrom numba import njit\n"
                     "@njit(cache=True)\ndef a(): pass\n"
                     "@numba.jit\ndef b(): pass\n"
                     "@staticmethod\ndef c(): pass\n")
    kinds = {name: _is_kernel(fn) for name, fn in _functions(tree)}
    assert kinds == {"a": True, "b": True, "c": False}

"""Every package of the source tree is in pyproject.toml's ``[tool.setuptools] packages``.

The list is explicit (drivers/, sim/ and configs/ install under apt_daq through
``package-dir``), so a new package folder left out of it is missing from the wheel while the
editable install, which finds folders, hides that: tests/packaging catches it by building a
wheel (slow); this catches it from the tree.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def source_packages() -> set[str]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = {"apt_daq": ROOT / "apt_daq"} | {
        pkg: ROOT / folder for pkg, folder in cfg["package-dir"].items()}
    found = set()
    for pkg, folder in roots.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            if "__pycache__" not in rel and not any(p.startswith(".") for p in rel):
                found.add(".".join([pkg, *rel]))
    return found


def test_every_package_folder_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = source_packages()
    assert not found - listed, f"add to pyproject.toml [tool.setuptools] packages: " \
                               f"{sorted(found - listed)}"
    assert not listed - found, f"listed but not a package folder: {sorted(listed - found)}"

"""What a run file must hold to be read: its datasets are 1-D tables with the fields the
readers use, its links can be followed, and its /meta values have the types the writers give
them. :class:`~apt_daq.io.store.reader.RunReader` runs these checks when it opens a file, so
every command (info, analyze, plot, export, range, calibrate, view) meets a malformed file as
one :class:`~apt_daq.errors.DataFileError` naming the file and what is wrong, never a
traceback from deep inside."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from apt_daq.errors import DataFileError
from apt_daq.io.store.layout import DATASETS

#: /meta keys and the JSON type their value must have (what the writers store)
META_TYPES: dict[str, type] = {
    "calibration": dict, "config": dict, "counters": dict, "imported": dict, "instrument": dict,
    "ranges": dict, "versions": dict, "ion_table": list, "transitions": list,
}
_KIND: dict[type, str] = {dict: "a JSON object", list: "a JSON list"}


def node(f: h5py.File, name: str, path: Path) -> h5py.Group | h5py.Dataset | None:
    """``f[name]``, or None if there is no such link; a link that cannot be followed (a
    dangling external or soft link, a loop of soft links) is a DataFileError."""
    if f.get(name, getlink=True) is None:
        return None
    try:
        return f[name]
    except (KeyError, RuntimeError, OSError, ValueError):
        raise DataFileError(f"{path}: /{name} is a link that cannot be followed") from None


def check_datasets(f: h5py.File, path: Path) -> None:
    """Every dataset of the layout that is present is a 1-D table holding the fields of its
    dtype (numeric): else a DataFileError naming the file and the dataset."""
    for name, want in DATASETS.items():
        obj = node(f, name, path)
        if obj is None:
            continue
        if not isinstance(obj, h5py.Dataset):
            raise DataFileError(f"{path}: /{name} is a group, not a dataset of {name} records")
        have = obj.dtype
        if obj.ndim != 1 or have.names is None:
            shape = "x".join(str(s) for s in obj.shape) or "scalar"
            raise DataFileError(f"{path}: /{name} is an array of {have} (shape {shape}), not "
                                f"a table of {name} records")
        fields = set(have.names) | ({"range_index"} if "ion" in have.names else set())
        missing = [n for n in want.names or () if n not in fields]
        if missing:
            raise DataFileError(f"{path}: /{name} lacks the field(s) {', '.join(missing)}")
        bad = [n for n in have.names if n in (want.names or ()) and have[n].kind not in "biuf"]
        if bad:
            raise DataFileError(f"{path}: /{name} field {bad[0]} is {have[bad[0]]}, not a number")


def meta_group(f: h5py.File, path: Path) -> h5py.Group:
    """The file's /meta group (the mark of an apt-daq run file)."""
    obj = node(f, "meta", path)
    if obj is None:
        raise DataFileError(f"{path}: no /meta group: not an apt-daq run file")
    if not isinstance(obj, h5py.Group):
        raise DataFileError(f"{path}: /meta is not a group: not an apt-daq run file")
    return obj


def check_meta(meta: dict[str, Any], path: Path) -> None:
    """/meta values of the types the writers give them: JSON objects and lists where those
    are stored, an ion table of named ions, ranges that make a range table."""
    for key, want in META_TYPES.items():
        v = meta.get(key)
        if v is None or isinstance(v, want):
            continue
        if isinstance(v, str) and v[:1] in ("{", "["):
            raise DataFileError(f"{path}: /meta {key} is not valid JSON")
        raise DataFileError(f"{path}: /meta {key} is not {_KIND[want]} ({_short(v)})")
    _check_ion_table(meta.get("ion_table"), path)
    _check_transitions(meta.get("transitions"), path)
    if meta.get("ranges"):
        from apt_daq.rangetable import MAX_RANGES, table_from_meta

        rows = meta["ranges"].get("rows")
        if isinstance(rows, list) and len(rows) > MAX_RANGES:
            raise DataFileError(f"{path}: /meta ranges holds more than {MAX_RANGES} ranges")
        try:
            table_from_meta(meta["ranges"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataFileError(f"{path}: /meta ranges is not a range table ({_why(e)})") from None


def _check_ion_table(table: list | None, path: Path) -> None:
    if not table:
        return
    from apt_daq.isotopes import parse_ion

    for i, row in enumerate(table):
        name = row[0] if isinstance(row, list) and row else None
        try:
            if not isinstance(name, str):
                raise ValueError(f"row {i} {_short(row)} does not start with an ion name")
            parse_ion(name)
            if len(row) > 1 and not _number(row[1]):
                raise ValueError(f"row {i}: mass {_short(row[1])} is not a number")
        except ValueError as e:
            raise DataFileError(f"{path}: /meta ion_table is not a table of ions "
                                f"({_why(e)})") from None


def _check_transitions(rows: list | None, path: Path) -> None:
    for row in rows or ():
        if not (isinstance(row, list) and row and _number(row[0])):
            raise DataFileError(f"{path}: /meta transitions: {_short(row)} is not a "
                                "[time, ...] row")


def _number(v: Any) -> bool:
    return isinstance(v, int | float | np.number) and not isinstance(v, bool) \
        and math.isfinite(float(v))


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _why(e: BaseException) -> str:
    s = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return s if isinstance(e, ValueError) else f"{type(e).__name__}: {s}"

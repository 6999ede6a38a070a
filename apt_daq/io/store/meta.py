"""The run's ``/meta`` attributes: typed values, JSON text for mappings and lists, and the
time and version stamps a run records."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of apt-daq and the libraries whose behaviour shapes the data."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("apt-daq", "numpy", "numba", "simpy", "h5py", "pydantic"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


JSON_KEYS = "json_keys"
"""The /meta attribute listing the keys whose value is JSON text (mappings and lists); every
other attribute is a plain HDF5 string, integer, float or boolean. Files written before it
have every value as JSON text."""


def write_meta(group: h5py.Group, key: str, value: Any, keys: set[str] | None = None) -> None:
    """``value`` as a typed attribute of ``group`` (a run's /meta): a string, number or bool as
    itself, anything else (mapping, list, None) as JSON text listed in ``json_keys``.

    ``keys``: the JSON keys as the caller keeps them (a writer that made the file), updated in
    place; else they are read back from the file. A writer must not read them back: a run's
    /meta once lost ``ranges`` and ``ion_table`` from ``json_keys`` between two rewrites of
    the list (one point of a 10-point campaign; its ranges then read as text and its analysis
    failed)."""
    if isinstance(value, np.generic):
        value = value.item()
    if keys is None:
        keys = set(_json_keys(group) or ())
    if isinstance(value, str | bool | int | float) and not (
            isinstance(value, float) and not np.isfinite(value)):
        group.attrs[key] = value
        keys.discard(key)
    else:
        group.attrs[key] = json.dumps(value, default=_json_default)
        keys.add(key)
    group.attrs[JSON_KEYS] = sorted(keys)


def _json_keys(group: h5py.Group) -> list[str] | None:
    if JSON_KEYS not in group.attrs:
        return None
    return [k.decode() if isinstance(k, bytes) else str(k) for k in group.attrs[JSON_KEYS]]


#: /meta keys whose value is always a mapping or a list
STRUCTURED = frozenset({"calibration", "config", "counters", "imported", "instrument",
                        "ion_table", "ranges", "transitions", "versions"})


def read_meta(group: h5py.Group) -> dict[str, Any]:
    """The attributes of a run's /meta as Python values (typed files and older all-JSON ones)."""
    keys = _json_keys(group)
    out: dict[str, Any] = {}
    for k, v in group.attrs.items():
        if k == JSON_KEYS:
            continue
        if isinstance(v, bytes):  # a fixed-size string (the state)
            v = v.decode("utf-8", "replace")
        elif isinstance(v, np.generic):
            v = v.item()
        if keys is None or k in keys or (k in STRUCTURED and isinstance(v, str)
                                         and v[:1] in ("{", "[")):
            # older files: every value is JSON text; a key that is always structured is read
            # as JSON even if json_keys lost it (files written before the writer kept the list)
            try:
                v = json.loads(v) if isinstance(v, str) else v
            except ValueError:
                pass
        out[k] = v
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")

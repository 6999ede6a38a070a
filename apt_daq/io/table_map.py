"""The field map of a foreign hit table: which column holds each apt-daq field and in which
unit (YAML ``--field-map`` or ``--fields tof=t:s,...``; see :mod:`apt_daq.io.table` for the
format), the unit factors, and the record dtype of a binary file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apt_daq.errors import UserError

# unit -> factor to apt-daq's unit, per kind of quantity
UNITS: dict[str, dict[str, float]] = {
    "time": {"s": 1e9, "ms": 1e6, "us": 1e3, "µs": 1e3, "ns": 1.0, "ps": 1e-3},
    "voltage": {"V": 1.0, "kV": 1e3, "mV": 1e-3},
    "detector": {"m": 1e3, "cm": 10.0, "mm": 1.0, "um": 1e-3, "µm": 1e-3},
    "specimen": {"nm": 1.0, "A": 0.1, "Å": 0.1, "um": 1e3, "µm": 1e3},
    "mass": {"Da": 1.0, "amu": 1.0, "u": 1.0},
    "count": {"": 1.0, "1": 1.0},
}
KIND_UNIT = {"time": "ns", "voltage": "V", "detector": "mm", "specimen": "nm", "mass": "Da",
             "count": ""}

FIELDS: dict[str, str] = {  # apt-daq field -> kind (its unit: KIND_UNIT[kind])
    "tof": "time", "v_dc": "voltage", "v_pulse": "voltage", "det_x": "detector",
    "det_y": "detector", "pulse": "count", "multiplicity": "count", "mass": "mass",
    "x": "specimen", "y": "specimen", "z": "specimen",
}
ALIASES = {
    "tof_ns": "tof", "time_of_flight": "tof", "v_dc_v": "v_dc", "vdc": "v_dc",
    "v_pulse_v": "v_pulse", "vp": "v_pulse", "det_x_mm": "det_x", "det_y_mm": "det_y",
    "mass_da": "mass", "m_n": "mass", "mn": "mass", "mq": "mass", "pulse_number": "pulse",
    "ipp": "multiplicity", "x_nm": "x", "y_nm": "y", "z_nm": "z",
}
TABLE_FORMATS = ("csv", "tsv", "npy", "binary")
_EXT_FORMAT = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".npy": "npy", ".bin": "binary",
               ".dat": "binary", ".raw": "binary"}


@dataclass
class FieldSpec:
    """One apt-daq field: its source column (a name, or an index) and the unit it is in."""

    column: str | int
    unit: str
    scale: float  # factor to apt-daq's unit


@dataclass
class FieldMap:
    """Which column holds which apt-daq field, in which unit, and how the file is laid out."""

    fields: dict[str, FieldSpec]
    format: str | None = None
    record: np.dtype | None = None  # binary
    header_bytes: int = 0  # binary
    delimiter: str | None = None  # csv
    header: bool = True  # csv
    skip_rows: int = 0  # csv
    source: str = "--fields"

    @property
    def has_mass(self) -> bool:
        return "mass" in self.fields

    def as_meta(self) -> dict[str, Any]:
        """The map as JSON for /meta "imported" (what was read from where, in which unit)."""
        out: dict[str, Any] = {
            "source": self.source,
            "fields": {k: {"column": s.column, "unit": s.unit or "-",
                           "to": KIND_UNIT[FIELDS[k]] or "-"} for k, s in self.fields.items()},
        }
        if self.record is not None:
            out["record"] = [[n, self.record[n].str] for n in self.record.names or ()]
            out["header_bytes"] = self.header_bytes
        return out


def _unit(kind: str, unit: Any, where: str) -> tuple[str, float]:
    unit = "" if unit is None else str(unit).strip()
    table = UNITS[kind]
    if unit == "" and kind != "count":
        unit = KIND_UNIT[kind]  # the apt-daq unit (the field's name says it)
    if unit in table:
        return unit, table[unit]
    folded = {k.lower(): k for k in table}
    if unit.lower() in folded:
        return folded[unit.lower()], table[folded[unit.lower()]]
    accepted = ", ".join(k for k in table if k) or "none"
    raise UserError(f"{where}: unknown unit {unit!r} for a {kind} (accepted: {accepted})")


def _field_name(name: str, where: str) -> str:
    key = str(name).strip()
    key = ALIASES.get(key.lower(), key.lower())
    if key not in FIELDS:
        raise UserError(f"{where}: unknown apt-daq field {name!r} (one of "
                        f"{', '.join(FIELDS)})")
    return key


def _column(value: Any) -> str | int:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        return value
    return str(value).strip()


def _spec(key: str, column: Any, unit: Any, where: str) -> FieldSpec:
    if column is None or (isinstance(column, str) and not column.strip()):
        raise UserError(f"{where}: no source column for {key}")
    unit, scale = _unit(FIELDS[key], unit, where)
    return FieldSpec(_column(column), unit, scale)


def _split_col_unit(text: str) -> tuple[str, str | None]:
    """``"COLUMN:UNIT"`` -> (column, unit); a column without ``:`` has no unit."""
    if ":" in text:
        col, unit = text.rsplit(":", 1)
        return col, unit
    return text, None


def parse_fields(text: str, source: str = "--fields") -> dict[str, FieldSpec]:
    """``tof=t:s,v_dc=vdc:kV,det_x=x:cm,pulse=pn`` -> {field: FieldSpec}."""
    out: dict[str, FieldSpec] = {}
    for item in (s for s in text.split(",") if s.strip()):
        if "=" not in item:
            raise UserError(f"{source}: {item.strip()!r} is not FIELD=COLUMN[:UNIT]")
        name, rhs = item.split("=", 1)
        key = _field_name(name, source)
        col, unit = _split_col_unit(rhs.strip())
        out[key] = _spec(key, int(col) if col.isdigit() else col, unit, f"{source} {key}")
    return out


def _record_dtype(spec: Any, where: str) -> np.dtype:
    items: list[tuple[str, Any]] = []
    if isinstance(spec, dict):
        items = list(spec.items())
    elif isinstance(spec, list):
        for k, r in enumerate(spec):
            if isinstance(r, dict) and "name" in r and "dtype" in r:
                items.append((r["name"], r["dtype"]))
            elif isinstance(r, list | tuple) and len(r) == 2:
                items.append((r[0], r[1]))
            else:
                raise UserError(f"{where}: record[{k}] is not {{name: N, dtype: T}}")
    else:
        raise UserError(f"{where}: record must be a list of {{name, dtype}} (file order)")
    if not items:
        raise UserError(f"{where}: record has no fields")
    try:
        dt = np.dtype([(str(n), np.dtype(str(t))) for n, t in items])
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: record: not a numpy dtype ({e})") from None
    for n in dt.names or ():
        if dt[n].kind not in "biuf" or dt[n].shape:
            raise UserError(f"{where}: record field {n!r} has dtype {dt[n].str}: only "
                            "scalar integers and floats (e.g. '>f4', '<u8')")
    return dt


def load_field_map(path: str | Path | None = None, fields: str | None = None) -> FieldMap:
    """A :class:`FieldMap` from a YAML file and/or a ``--fields`` string (which wins)."""
    fmap = FieldMap(fields={})
    if path is not None:
        from apt_daq.config.loader import compose_yaml

        p = Path(path)
        data = compose_yaml(p)[0]  # readable, at most 1 MiB, UTF-8, YAML: else one line
        if not isinstance(data, dict):
            raise UserError(f"{p}: a field map is a mapping (fields:, record:, ...)")
        known = {"format", "record", "header_bytes", "delimiter", "header", "skip_rows",
                 "fields"}
        extra = sorted(set(data) - known)
        if extra:
            raise UserError(f"{p}: unknown key {extra[0]!r} (known: {', '.join(sorted(known))})")
        fmap.source = str(p)
        fm = data.get("format")
        if fm is not None and fm not in TABLE_FORMATS:
            raise UserError(f"{p}: format: {fm!r} is not one of {', '.join(TABLE_FORMATS)}")
        fmap.format = fm
        if data.get("record") is not None:
            fmap.record = _record_dtype(data["record"], str(p))
        try:
            fmap.header_bytes = int(data.get("header_bytes", 0))
            fmap.skip_rows = int(data.get("skip_rows", 0))
        except (TypeError, ValueError):
            raise UserError(f"{p}: header_bytes and skip_rows are byte/line counts") from None
        if fmap.header_bytes < 0 or fmap.skip_rows < 0:
            raise UserError(f"{p}: header_bytes and skip_rows must be >= 0")
        fmap.delimiter = data.get("delimiter")
        fmap.header = bool(data.get("header", True))
        for name, v in (data.get("fields") or {}).items():
            key = _field_name(name, f"{p}: fields")
            where = f"{p}: fields.{name}"
            if isinstance(v, dict):
                extra = sorted(set(v) - {"column", "unit"})
                if extra:
                    raise UserError(f"{where}: unknown key {extra[0]!r} (column, unit)")
                fmap.fields[key] = _spec(key, v.get("column"), v.get("unit"), where)
            elif isinstance(v, int) and not isinstance(v, bool):
                fmap.fields[key] = _spec(key, v, None, where)
            elif isinstance(v, str):
                col, unit = _split_col_unit(v)
                fmap.fields[key] = _spec(key, col, unit, where)
            else:
                raise UserError(f"{where}: give {{column: C, unit: U}} or 'COLUMN:UNIT'")
    if fields:
        fmap.fields.update(parse_fields(fields))
        if path is None:
            fmap.source = "--fields"
        else:
            fmap.source = f"{fmap.source} + --fields"
    where = fmap.source
    if not fmap.fields:
        raise UserError(f"{where}: no fields mapped (give --fields tof=COL:UNIT,v_dc=COL:UNIT,... "
                        "or --field-map map.yaml)")
    if not ({"tof", "v_dc"} <= set(fmap.fields) or "mass" in fmap.fields):
        missing = [f for f in ("tof", "v_dc") if f not in fmap.fields]
        raise UserError(f"{where}: {' and '.join(missing)} not mapped: a hit list needs tof "
                        "and v_dc (to compute m/n), or mass (an m/n already calibrated)")
    cols = [s.column for s in fmap.fields.values()]
    dup = {c for c in cols if cols.count(c) > 1}
    if dup:
        raise UserError(f"{where}: column {sorted(map(str, dup))[0]!r} is mapped to two fields")
    return fmap


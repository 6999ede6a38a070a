"""The results table: column order and types, written as CSV and Parquet, read back."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pydantic import JsonValue

from apt_daq.campaign.sweep import Row

_FIRST = ["point", "key"]
_AFTER = ["state", "reason", "error", "ions", "ranged_ions", "pulses", "ramp_up_share",
          "burst_share", "duration_s", "specimen_name", "coated", "laser_pj", "seed"]
_GROUPS = ["comp.", "ratio.", "mrp", "fda_mu.", "count."]
_LAST = ["v_min_v", "v_max_v", "path", "host", "pid", "finished", "config_sha", "point_fn"]
_JSON_ONLY = {"traceback", "warnings"}


def mixed_mrp_peaks(rows: Sequence[Row]) -> str | None:
    """One line when ``mrp50``/``mrp10`` measure different peaks at different points (the
    most counted peak changes along a sweep: O2+ at 5 pJ, Li+ at 10 and 20 pJ on an uncoated
    one), where picking the best ``mrp50`` compares unlike peaks; else None."""
    by_peak: dict[str, list[str]] = {}
    for r in rows:
        if r.get("mrp_peak"):
            by_peak.setdefault(str(r["mrp_peak"]), []).append(str(r.get("point", "?")))
    if len(by_peak) < 2:
        return None
    where = "; ".join(f"{peak} at point{'s' if len(pts) > 1 else ''} {', '.join(pts)}"
                      for peak, pts in by_peak.items())
    common = [p for p in by_peak if all(r.get(f"mrp50.{p}") is not None for r in rows
                                        if r.get("mrp_peak"))]
    use = f"mrp50.{common[0]}" if common else "a peak's own mrp50.PEAK column"
    return (f"mrp50/mrp10 measure the most counted peak, which differs between points ({where}):"
            f" compare one peak's, e.g. {use}")


BURST_LIMIT = 0.5  # a point with more of its ions in bursts measures the bursts


def burst_warning(rows: Sequence[Row]) -> str | None:
    """One line naming the points that took most of their ions in bursts (``burst_share``:
    readout blocks far above the target rate; Li+ off an uncoated specimen at 20 pJ: 67 748
    ions in one block, 2.26 times the point's count), which ``ramp_up_share`` and the state
    do not show."""
    bad = [str(r.get("point", "?")) for r in rows
           if isinstance(r.get("burst_share"), int | float)
           and float(r["burst_share"]) > BURST_LIMIT]  # type: ignore[arg-type]
    if not bad:
        return None
    return (f"{len(bad)} of {len(rows)} points took most of their ions in bursts (readout "
            f"blocks above 5 times the target rate; points {', '.join(bad)}): their ratios are "
            "the bursts', not a held acquisition's")


def table_columns(rows: Sequence[Row], params: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(k for k in r if k not in _JSON_ONLY))
    cols = [c for c in _FIRST + params + _AFTER if c in seen or c in params]
    rest = [c for c in seen if c not in cols and c not in _LAST]
    for g in _GROUPS:
        cols += sorted(c for c in rest if c.startswith(g))
    cols += [c for c in rest if not any(c.startswith(g) for g in _GROUPS)]
    return cols + [c for c in _LAST if c in seen]


def _column_type(values: list[JsonValue]) -> str:
    vals = [v for v in values if v is not None]
    if vals and all(isinstance(v, bool) for v in vals):
        return "bool"
    if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return "int"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
        return "float"
    return "str"


def _point_index(row: Row) -> int:
    index = row.get("point", 0)
    return index if isinstance(index, int) else 0


def write_table(rows: Sequence[Row], out_dir: Path, params: list[str],
                stem: str = "results") -> tuple[Path, Path]:
    """The results table as CSV and Parquet (one row per point, point order)."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted(rows, key=_point_index)
    cols = table_columns(rows, params)
    arrays = []
    for c in cols:
        vals = [r.get(c) for r in rows]
        kind = _column_type(vals)
        if kind == "str":
            arrays.append(pa.array([None if v is None else str(v) for v in vals], pa.string()))
        else:
            typ = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64()}[kind]
            arrays.append(pa.array([float(v) if kind == "float" and isinstance(v, int | float)
                                    else v for v in vals], typ))
    out_dir.mkdir(parents=True, exist_ok=True)
    pq_path, csv_path = out_dir / f"{stem}.parquet", out_dir / f"{stem}.csv"
    tmp = pq_path.with_suffix(".parquet.tmp")
    try:
        pq.write_table(pa.table(arrays, names=cols), tmp)
        os.replace(tmp, pq_path)
        tmp = csv_path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for r in rows:
                w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
        os.replace(tmp, csv_path)
    except OSError as e:  # a full disk: the old table stays, no temporary file is left
        tmp.unlink(missing_ok=True)
        from apt_daq.errors import UserError

        raise UserError(f"{tmp.with_suffix('')}: cannot write the results table "
                        f"({e.strerror or e}); the points' rows are beside their runs") from None
    return csv_path, pq_path


def read_table(path: str | Path) -> list[Row]:
    """A results table (Parquet) back as a list of row dicts."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()

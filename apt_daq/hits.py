"""The data contract: hit chunks as numpy structured arrays.

Every stage of apt-daq takes chunks and returns chunks of the dtypes below, defined here once:

- ``RAW_DTYPE``: one delay-line detector record, as the DLD front end and pulser give it. Times
  are integer TDC bins counted from the laser (or HV) pulse trigger; the pulser stamps each record
  with its pulse number and the voltages and laser energy in force at that pulse.
- ``HIT_DTYPE``: a decoded, measured hit (what an EPOS file holds before reconstruction).
- ``TRUTH_DTYPE``: what the simulator knows about each ion and no instrument can: its true
  species, charge and origin. Aligned row for row with the hits of the same chunk.
- ``DERIVED_DTYPE``: what the pipeline adds: mass-to-charge, range index, reconstructed position.

Units live in the field names' documentation and never change: time ns, detector mm, specimen
nm, voltage V, laser energy pJ, mass-to-charge Da.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

RAW_DTYPE = np.dtype(
    [
        ("pulse", "<u8"),  # pulse number since run start
        ("t_x1", "<i4"),  # delay-line x end 1 arrival, TDC bins after the pulse trigger
        ("t_x2", "<i4"),  # delay-line x end 2 arrival, TDC bins
        ("t_y1", "<i4"),  # delay-line y end 1 arrival, TDC bins
        ("t_y2", "<i4"),  # delay-line y end 2 arrival, TDC bins
        ("t_mcp", "<i4"),  # MCP (hit time) signal, TDC bins; -1 if missing
        ("v_dc", "<f4"),  # specimen DC voltage at this pulse, V
        ("v_pulse", "<f4"),  # HV pulse amplitude, V (0 in laser mode)
        ("laser_pj", "<f4"),  # laser pulse energy at this pulse, pJ
    ]
)
"""One raw delay-line detector record. A missing signal is stored as -1."""

HIT_DTYPE = np.dtype(
    [
        ("pulse", "<u8"),  # pulse number since run start
        ("tof", "<f4"),  # time of flight, ns (t0 not yet subtracted)
        ("det_x", "<f4"),  # detector x, mm
        ("det_y", "<f4"),  # detector y, mm
        ("v_dc", "<f4"),  # V
        ("v_pulse", "<f4"),  # V
        ("laser_pj", "<f4"),  # pJ
        ("multiplicity", "u1"),  # hits recorded on this pulse (1 single, >1 multi-hit)
    ]
)
"""One measured hit: a decoded raw record."""

TRUTH_DTYPE = np.dtype(
    [
        ("pulse", "<u8"),  # pulse on which the ion left the specimen
        ("species", "<i2"),  # index into the run's ion table (/meta ion_table); -1 background
        ("charge", "i1"),  # charge state n
        ("mass", "<f4"),  # true mass-to-charge of the isotopologue, Da
        ("x0", "<f4"),  # origin in the specimen, nm (x, y across the tip, z along it,
        ("y0", "<f4"),  #   z = 0 at the initial apex, growing into the specimen)
        ("z0", "<f4"),
        ("detected", "u1"),  # 1 if it produced a recorded hit, 0 if lost
    ]
)
"""Simulation truth for one ion (detected or lost)."""

DERIVED_DTYPE = np.dtype(
    [
        ("mass", "<f4"),  # mass-to-charge, Da
        # range index, -1 unranged; stored as range_index, "ion" (its name in files written
        # before) is a title: an alias that reads and writes the same field
        (("ion", "range_index"), "<i2"),
        ("x", "<f4"),  # reconstructed position, nm
        ("y", "<f4"),
        ("z", "<f4"),
    ]
)
"""Pipeline output aligned row for row with hits."""

ION_TABLE_DTYPE = np.dtype([("name", "S16"), ("mass", "<f4"), ("charge", "i1")])

FIELD_UNITS: dict[str, str] = {
    "t_x1": "TDC_bin", "t_x2": "TDC_bin", "t_y1": "TDC_bin", "t_y2": "TDC_bin",
    "t_mcp": "TDC_bin", "v_dc": "V", "v_pulse": "V", "laser_pj": "pJ", "tof": "ns",
    "det_x": "mm", "det_y": "mm", "mass": "Da", "x0": "nm", "y0": "nm", "z0": "nm",
    "x": "nm", "y": "nm", "z": "nm", "time_s": "s", "v_setpoint": "V", "current_a": "A",
    "rate": "ions/pulse",
}
"""The unit of every field with a physical unit, by field name (one unit per name across all
the dtypes, /log's included); counts, indices and flags have none. The run store writes them
as each dataset's ``units`` attribute."""


def units_of(dtype: np.dtype) -> list[str]:
    """The units of ``dtype``'s fields in order ("" for a field without a unit)."""
    return [FIELD_UNITS.get(name, "") for name in dtype.names or ()]


def empty(dtype: np.dtype, n: int = 0) -> np.ndarray:
    """A zero-filled chunk of ``n`` records of ``dtype``."""
    return np.zeros(n, dtype=dtype)


def concat(chunks: Iterable[np.ndarray], dtype: np.dtype | None = None) -> np.ndarray:
    """Concatenate chunks of one dtype; an empty iterable gives an empty chunk of ``dtype``."""
    parts = [np.asarray(c) for c in chunks]
    if not parts:
        if dtype is None:
            raise ValueError("concat of no chunks needs a dtype")
        return empty(dtype)
    want = dtype or parts[0].dtype
    for p in parts:
        if p.dtype != want:
            raise TypeError(f"chunk dtype {p.dtype} is not {want}")
    return np.concatenate(parts)


def check(chunk: np.ndarray, dtype: np.dtype, what: str = "chunk") -> np.ndarray:
    """Return ``chunk`` if it has ``dtype``, else raise a TypeError naming both."""
    if not isinstance(chunk, np.ndarray) or chunk.dtype != dtype:
        got = getattr(chunk, "dtype", type(chunk).__name__)
        raise TypeError(f"{what}: expected dtype {dtype}, got {got}")
    return chunk

"""The HDF5 run store: one file per run, chunked and appendable, flushed after every chunk.

Layout (datasets of the compound dtypes in :mod:`apt_daq.hits`, chunked and resizable)::

    /raw         RAW_DTYPE      raw delay-line records as the detector gave them
    /hits        HIT_DTYPE      decoded hits, evaporation order
    /derived     DERIVED_DTYPE  mass, range index, reconstructed position (row-aligned with /hits)
    /truth       TRUTH_DTYPE    simulation only, row-aligned with /hits
    /truth_lost  TRUTH_DTYPE    simulation only: evaporated ions that left no hit
    /log         LOG_DTYPE      instrument state at a fixed cadence
    /meta        group; JSON string attributes: config, instrument, ion_table, versions, seed,
                 started, ended, state, counters, ...

Every ``append`` resizes, writes and flushes. The file uses HDF5's default format without SWMR
(the latest format leaves a consistency flag that stops a killed file from opening), so a
process killed at any moment (SIGKILL) leaves a file that opens and holds every chunk but at
most the one being written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from apt_daq.config import InstrumentConfig, RunFile
from apt_daq.errors import DataFileError
from apt_daq.hits import DERIVED_DTYPE, HIT_DTYPE, RAW_DTYPE, TRUTH_DTYPE

LOG_DTYPE = np.dtype(
    [
        ("time_s", "<f8"),  # instrument time since run start, s
        ("v_dc", "<f4"),  # measured specimen voltage, V
        ("v_setpoint", "<f4"),  # HV setpoint, V
        ("current_a", "<f4"),  # HV supply current, A
        ("laser_pj", "<f4"),  # laser pulse energy, pJ
        ("rate", "<f4"),  # detection rate over the last interval, ions per pulse
        ("pulses", "<u8"),  # pulses since run start
        ("ions", "<u8"),  # detected ions since run start
        ("step", "<i2"),  # schedule step index
        ("hv_on", "u1"),  # HV output on
        ("laser_on", "u1"),  # laser emission on
        ("state", "u1"),  # run-engine state code (apt_daq.run.State)
    ]
)

DATASETS: dict[str, np.dtype] = {
    "raw": RAW_DTYPE,
    "hits": HIT_DTYPE,
    "derived": DERIVED_DTYPE,
    "truth": TRUTH_DTYPE,
    "truth_lost": TRUTH_DTYPE,
    "log": LOG_DTYPE,
}
_ALIASES = {"lost": "truth_lost"}
_CHUNK_ROWS = 65536
_LOG_CHUNK_ROWS = 1024  # one /log row per readout block: small chunks, no rewrite of 2.6 MB


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


def _name(name: str) -> str:
    name = _ALIASES.get(name, name)
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; one of {sorted(DATASETS)}")
    return name


class RunWriter:
    """Append chunks to a new run file. Use as a context manager; ``finish(state)`` at the end."""

    def __init__(self, path: str | Path, meta: dict[str, Any] | None = None, overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise DataFileError(f"{self.path}: exists (use --overwrite or another -o)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # no raw-data chunk cache: a partial chunk written through the cache is rewritten in
        # full (2.6 MB) at every flush; without it each append writes just its rows, and the
        # flush writes only metadata
        self._f = h5py.File(self.path, "w", rdcc_nbytes=0)
        self._meta = self._f.create_group("meta")
        # dataset handles, their file types and row counts, kept so that an append costs
        # one resize + one low-level write per dataset (no h5py lookups or type inference)
        self._ds: dict[str, tuple[h5py.Dataset, h5py.h5t.TypeID]] = {}
        self._rows: dict[str, int] = {}
        for name, dtype in DATASETS.items():
            rows = _LOG_CHUNK_ROWS if name == "log" else _CHUNK_ROWS
            d = self._f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype,
                                       chunks=(rows,))
            self._ds[name] = (d, d.id.get_type())
            self._rows[name] = 0
        self.set_meta("started", now_iso())
        self.set_meta("state", "running")
        self.set_meta("versions", versions())
        for k, v in (meta or {}).items():
            self.set_meta(k, v)
        self._f.flush()

    def set_meta(self, key: str, value: Any) -> None:
        self._meta.attrs[key] = json.dumps(value, default=_json_default)

    def _extend(self, name: str, rows: np.ndarray) -> None:
        dset, ftype = self._ds[name]
        want = DATASETS[name]
        if rows.dtype is not want and rows.dtype != want:  # identity first (== is slow)
            raise TypeError(f"/{name}: chunk dtype {rows.dtype} is not {want}")
        rows = np.ascontiguousarray(rows)
        n0, n = self._rows[name], len(rows)
        dset.id.set_extent((n0 + n,))
        fspace = dset.id.get_space()
        fspace.select_hyperslab((n0,), (n,))
        # the memory type is the file type (same packed layout): HDF5 copies, no conversion
        dset.id.write(h5py.h5s.create_simple((n,)), fspace, rows, mtype=ftype)
        self._rows[name] = n0 + n

    def append(self, **chunks: np.ndarray | None) -> None:
        """Append any of raw=, hits=, derived=, truth=, lost= and flush the file."""
        for name, rows in chunks.items():
            if rows is not None and len(rows):
                self._extend(_name(name), rows)
        self._f.flush()

    def log(self, rows: np.ndarray) -> None:
        if len(rows):
            self._extend("log", rows)
            self._f.flush()

    def count(self, name: str) -> int:
        return self._rows[_name(name)]

    def finish(self, state: str) -> None:
        self.set_meta("state", state)
        self.set_meta("ended", now_iso())
        self._f.flush()

    def close(self) -> None:
        if self._f.id.valid:
            self._f.flush()
            self._f.close()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


class RunReader:
    """Read a run file in bounded memory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise DataFileError(f"{self.path}: no such file")
        try:
            # locking=False: a run still being written can be read (info, live analysis)
            self._f = h5py.File(self.path, "r", locking=False)
        except OSError as e:
            raise DataFileError(f"{self.path}: not a readable HDF5 run file ({e})") from None
        if "meta" not in self._f:
            self._f.close()
            raise DataFileError(f"{self.path}: no /meta group: not an apt-daq run file")
        self.meta: dict[str, Any] = {}
        for k, v in self._f["meta"].attrs.items():
            try:
                self.meta[k] = json.loads(v)
            except (TypeError, ValueError):
                self.meta[k] = v

    @property
    def run_file(self) -> RunFile | None:
        cfg = self.meta.get("config")
        return RunFile.model_validate(cfg) if cfg else None

    @property
    def instrument(self) -> InstrumentConfig | None:
        if self.meta.get("instrument"):
            return InstrumentConfig.model_validate(self.meta["instrument"])
        rf = self.run_file
        return rf.instrument if rf else None

    def has(self, name: str) -> bool:
        name = _ALIASES.get(name, name)
        return name in self._f and self._f[name].shape[0] > 0

    def count(self, name: str) -> int:
        name = _ALIASES.get(name, name)
        return int(self._f[name].shape[0]) if name in self._f else 0

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        name = _ALIASES.get(name, name)
        if name not in self._f:
            return np.zeros(0, dtype=DATASETS[_name(name)])
        return self._f[name][start:stop]

    def iter(self, name: str, chunk: int = 1_000_000) -> Iterator[np.ndarray]:
        n = self.count(name)
        for i in range(0, n, chunk):
            yield self.read(name, i, min(i + chunk, n))

    @property
    def log(self) -> np.ndarray:
        return self.read("log")

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The run reader: a run file's meta, config and datasets in bounded memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from apt_daq.errors import DataFileError
from apt_daq.io.store.layout import _ALIASES, DATASETS, _name
from apt_daq.io.store.meta import read_meta

if TYPE_CHECKING:  # the config models (pydantic) load when a run's config is read
    from apt_daq.config import InstrumentConfig, RunFile


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
        self.meta: dict[str, Any] = read_meta(self._f["meta"])

    @property
    def run_file(self) -> RunFile | None:
        cfg = self.meta.get("config")
        from apt_daq.config import RunFile

        return RunFile.model_validate(cfg) if cfg else None

    @property
    def instrument(self) -> InstrumentConfig | None:
        if self.meta.get("instrument"):
            from apt_daq.config import InstrumentConfig

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

"""The run reader: a run file's meta, config and datasets in bounded memory."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from apt_daq.errors import DataFileError
from apt_daq.hits import DERIVED_DTYPE
from apt_daq.io.store.checks import check_datasets, check_meta, meta_group
from apt_daq.io.store.layout import _ALIASES, DATASETS, _name
from apt_daq.io.store.meta import read_meta

log = logging.getLogger(__name__)
_WARNED: set[tuple[str, str]] = set()  # (file, config key) already warned about

if TYPE_CHECKING:  # the config models (pydantic) load when a run's config is read
    from apt_daq.config import InstrumentConfig, RunFile


#: the suffixes of the ion and hit files ``apt-daq import`` reads
ION_FILES = ("epos", "pos", "apt", "ato", "raw", "csv")


class RunReader:
    """Read a run file in bounded memory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise DataFileError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise DataFileError(f"{self.path}: is a directory, not a run file")
        try:
            # locking=False: a run still being written can be read (info, live analysis)
            self._f = h5py.File(self.path, "r", locking=False)
        except OSError as e:
            # h5py's message spans lines (time, buffer addresses): keep its first part
            why = " ".join(str(e).split("(file read failed")[0].split())
            kind = self.path.suffix.lower().lstrip(".")
            what = f"{'an' if kind[:1] in 'aeio' else 'a'} {kind.upper()} file, not a run file"
            if kind in ION_FILES:  # `info` and `range` read these as they are
                raise DataFileError(f"{self.path}: {what}: `apt-daq import {self.path} -o "
                                    "RUN.h5` makes one") from None
            if kind in ("rrng", "rng", "env"):
                raise DataFileError(f"{self.path}: a range file, not a run file (give it as "
                                    "--ranges)") from None
            raise DataFileError(f"{self.path}: not a readable HDF5 run file ({why})") from None
        try:  # every command meets a malformed file here, as one error naming it
            self.meta: dict[str, Any] = read_meta(meta_group(self._f, self.path))
            check_meta(self.meta, self.path)
            check_datasets(self._f, self.path)
        except BaseException:
            self._f.close()
            raise

    @property
    def run_file(self) -> RunFile | None:
        """The run's config as stored, validated by today's models. A stored value today's
        models refuse (a run of an older apt-daq, a hand-edited file) is dropped, its key's
        default used instead, with a warning naming it, so the run stays readable; a config
        that cannot be read so is a DataFileError naming the file."""
        cfg = self.meta.get("config")
        if not cfg:
            return None
        from pydantic import ValidationError

        from apt_daq.config import RunFile

        cfg = copy.deepcopy(cfg)
        for _ in range(20):
            try:
                return RunFile.model_validate(cfg)
            except ValidationError as e:
                err = e.errors()[0]
                if not _drop(cfg, err["loc"]):
                    break
                where = ".".join(str(k) for k in err["loc"])
                if (str(self.path), where) not in _WARNED:  # once a process, not per read
                    _WARNED.add((str(self.path), where))
                    log.warning("%s: stored config %s = %r is refused by this apt-daq (%s); "
                                "its default is used", self.path, where, err.get("input"),
                                err["msg"])
        raise DataFileError(f"{self.path}: its stored run config cannot be read by this apt-daq "
                            f"({'.'.join(str(k) for k in err['loc'])}: {err['msg']})")

    @property
    def instrument(self) -> InstrumentConfig | None:
        if self.meta.get("instrument"):
            from pydantic import ValidationError

            from apt_daq.config import InstrumentConfig

            try:
                return InstrumentConfig.model_validate(self.meta["instrument"])
            except ValidationError as e:
                err = e.errors()[0]
                raise DataFileError(f"{self.path}: /meta instrument cannot be read by this "
                                    f"apt-daq ({'.'.join(str(k) for k in err['loc'])}: "
                                    f"{err['msg']})") from None
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
        rows = finite_rows(self._f[name][start:stop], self.path, name)
        return as_derived(rows) if name == "derived" else rows

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


#: a float field beyond this is garbage (nm, mm, ns, V, Da, pJ are all far below), and its
#: square, scaled by a reconstruction, would overflow float32 (3.4e38) in the analysis
_FLOAT_LIMIT = 1e12


def finite_rows(rows: np.ndarray, path: Path, name: str) -> np.ndarray:
    """``rows`` with every float value that is not finite or beyond ``_FLOAT_LIMIT`` (bytes a
    corrupt file holds: infinities, signalling NaNs, 1e38) read as NaN, which the analysis
    leaves out, with one warning per file and dataset; else ``rows`` untouched. A NaN stays
    (an imported run's hits have no TOF). The analysis never meets numpy's overflow and
    invalid-value warnings on such bytes."""
    floats = [n for n in rows.dtype.names or () if rows.dtype[n].kind == "f"]
    n_bad = 0
    ok = np.empty(len(rows), bool)
    with np.errstate(all="ignore"):
        for f in floats:
            col = rows[f]
            if np.less_equal(np.abs(col), _FLOAT_LIMIT, out=ok).all():
                continue  # every value plausible (the usual case: one pass)
            bad = ~ok & ~np.isnan(col)
            if bad.any():
                col[bad] = np.nan
                n_bad += int(bad.sum())
            sig = np.isnan(col)  # a signalling NaN becomes a quiet one
            if sig.any():
                col[sig] = np.nan
    if n_bad and (str(path), name) not in _WARNED:
        _WARNED.add((str(path), name))
        log.warning("%s: /%s holds values that are not finite or beyond 1e12 (a corrupt file?): "
                    "read as NaN", path, name)
    return rows


def as_derived(rows: np.ndarray) -> np.ndarray:
    """/derived rows as :data:`~apt_daq.hits.DERIVED_DTYPE` (its ``range_index`` also reads as
    ``ion``): HDF5 keeps no alias, and files written before the rename name the field ``ion``
    (same layout); rows of another layout are returned as they are."""
    dt, want = rows.dtype, DERIVED_DTYPE
    if dt == want or dt.names is None or dt.fields is None or want.names is None \
            or want.fields is None:
        return rows
    renamed = ["range_index" if n == "ion" else n for n in dt.names]
    same = (renamed == list(want.names) and dt.itemsize == want.itemsize
            and all(dt.fields[a][:2] == want.fields[b][:2]
                    for a, b in zip(dt.names, want.names, strict=True)))
    return rows.view(DERIVED_DTYPE) if same else rows


def _drop(cfg: Any, loc: tuple) -> bool:
    """Delete the innermost named key of ``loc`` from the nested dict ``cfg`` (a list item's
    error drops the whole list: its key's default is used); False if there is none."""
    keys = [i for i, k in enumerate(loc) if isinstance(k, str)]
    if not keys:
        return False
    node = cfg
    for k in loc[: keys[-1]]:
        try:
            node = node[k]
        except (KeyError, IndexError, TypeError):
            return False
    if not isinstance(node, dict) or loc[keys[-1]] not in node:
        return False
    del node[loc[keys[-1]]]
    return True

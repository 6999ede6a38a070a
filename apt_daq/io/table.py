"""Raw hit lists from other instruments: CSV/TSV, ``.npy`` and binary records, with a field map.

A lab with another straight-flight instrument has, per hit, a time of flight, the DC and pulse
voltages, the detector position and the pulse number (and perhaps an m/n), in its own columns
and units. A :class:`FieldMap` says, for each apt-daq field, which column of the file holds it
and in which unit; :class:`TableFile` streams the file in chunks (``np.memmap`` for ``.npy`` and
binary records, pyarrow's streaming CSV reader for text) and yields :data:`ION_DTYPE` chunks in
apt-daq's units (ns, V, mm, Da, nm). Units are converted here and nowhere else.

Field map (YAML, ``--field-map``; docs/formats.md "Raw hit lists from other instruments")::

    format: binary            # csv | tsv | npy | binary (default: from the file's extension)
    header_bytes: 16          # binary: bytes before the first record
    record:                   # binary: the record, in file order (name: numpy dtype)
      - {name: t, dtype: ">f8"}
      - {name: vdc, dtype: ">f4"}
    delimiter: ","            # csv: default "," (tsv: tab)
    header: true              # csv: the first line names the columns (else columns by index)
    skip_rows: 0              # csv: lines to skip before the header
    fields:
      tof: {column: t, unit: s}
      v_dc: {column: vdc, unit: kV}
      det_x: "x:cm"           # shorthand COLUMN:UNIT

or on the command line ``--fields tof=t:s,v_dc=vdc:kV,det_x=x:cm,det_y=y:cm,pulse=pn``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from apt_daq.errors import DataFileError, UserError
from apt_daq.io._common import DEFAULT_CHUNK, empty_ions, group_starts, require_input
from apt_daq.io.table_map import (  # the field map, importable from here as before
    _EXT_FORMAT,
    ALIASES,
    FIELDS,
    KIND_UNIT,
    TABLE_FORMATS,
    UNITS,
    FieldMap,
    FieldSpec,
    load_field_map,
    parse_fields,
)

__all__ = ["ALIASES", "FIELDS", "KIND_UNIT", "TABLE_FORMATS", "UNITS", "FieldMap", "FieldSpec",
           "TableFile", "load_field_map", "parse_fields", "table_format"]

log = logging.getLogger("apt_daq.io")

# ---------------------------------------------------------------------------- the file
def no_rows(path: Path, lines_before: int = 1) -> str | None:
    """Why a text table holds no ions ("the file is empty", "a header line and no rows"), or
    None when it has a non-blank line after its first ``lines_before`` (skipped rows and the
    header line). Reads only up to that line."""
    if path.stat().st_size == 0:
        return "the file is empty"
    lines = 0
    with path.open("rb") as fh:
        for line in fh:
            lines += bool(line.strip())
            if lines > lines_before:
                return None
    return "a header line and no rows" if lines else "blank lines, no rows"



def table_format(path: Path, fmap: FieldMap) -> str:
    if fmap.format:
        return fmap.format
    if fmap.record is not None:
        return "binary"
    fmt = _EXT_FORMAT.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: cannot tell the table layout from {path.suffix!r}: give "
                        "'format: csv|tsv|npy|binary' in the field map")
    if fmt == "binary":
        raise UserError(f"{path}: a binary record file needs 'record:' in the field map "
                        "(field names and numpy dtypes, in file order)")
    return fmt


class TableFile:
    """A raw hit list, streamed as :data:`ION_DTYPE` chunks in apt-daq units.

    ``n`` is the row count (None for CSV until read to the end), ``present`` the apt-daq fields
    the file supplies (plus ``pulse``/``multiplicity``, always filled). Absent fields: pulse =
    the row index (one pulse per hit), multiplicity from runs of equal pulse numbers, v_pulse
    = 0 (a laser instrument), det_x/det_y = 0 (on axis) with a note; other floats NaN.
    """

    def __init__(self, path: str | Path, fmap: FieldMap):
        self.path = Path(path)
        require_input(self.path)
        self.fmap = fmap
        self.format = table_format(self.path, fmap)
        self.notes: list[str] = []
        self.n: int | None = None
        self.columns: list[str] = []
        self._arr: np.ndarray | None = None  # memmap (npy, binary)
        self._offset0 = 0
        if self.format == "binary":
            self._open_binary()
        elif self.format == "npy":
            self._open_npy()
        else:
            self._open_csv()
        self._resolve_columns()
        mapped = set(fmap.fields)
        self.present = tuple(f for f in FIELDS if f in mapped) + tuple(
            f for f in ("pulse", "multiplicity") if f not in mapped)
        if "pulse" not in mapped:
            self.notes.append("no pulse numbers: each hit is its own pulse (pulse = row index)")
        if "v_pulse" not in mapped and "tof" in mapped:
            self.notes.append("no pulse voltage: v_pulse = 0 (laser pulsing)")
        if "det_x" not in mapped and "tof" in mapped:
            self.notes.append("no detector position: det_x = det_y = 0 (m/n with the on-axis "
                              "flight length)")

    # -- opening
    def _open_binary(self) -> None:
        rec = self.fmap.record
        if rec is None:
            raise UserError(f"{self.path}: a binary record file needs 'record:' in the field map")
        size = self.path.stat().st_size
        hb = self.fmap.header_bytes
        if size < hb:
            raise DataFileError(f"{self.path}: size {size} is smaller than its {hb}-byte header")
        body = size - hb
        if body % rec.itemsize:
            n = body // rec.itemsize
            raise DataFileError(
                f"{self.path}: size {size} is not {hb} header bytes plus whole "
                f"{rec.itemsize}-byte records (truncated? the file breaks off inside record {n}, "
                f"at byte offset {hb + n * rec.itemsize})")
        self.n = body // rec.itemsize
        self._arr = (np.memmap(self.path, dtype=rec, mode="r", offset=hb, shape=(self.n,))
                     if self.n else np.zeros(0, rec))
        self._offset0 = hb
        self.columns = list(rec.names or ())

    def _open_npy(self) -> None:
        try:
            arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataFileError(f"{self.path}: not a readable .npy array ({e})") from None
        if not isinstance(arr, np.ndarray):
            raise DataFileError(f"{self.path}: not a single .npy array")
        if arr.dtype.names:
            if arr.ndim != 1:
                raise DataFileError(f"{self.path}: a structured array must be 1-D, got shape "
                                    f"{arr.shape}")
            self.columns = list(arr.dtype.names)
        elif arr.ndim == 2 and arr.dtype.kind in "biuf":
            self.columns = []  # by index
        else:
            raise DataFileError(f"{self.path}: expected a structured array or a 2-D numeric "
                                f"array (rows = hits), got {arr.dtype} of shape {arr.shape}")
        self._arr = arr
        self.n = int(arr.shape[0])
        self._offset0 = int(getattr(arr, "offset", 0))

    def _open_csv(self) -> None:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        delim = self.fmap.delimiter or ("\t" if self.format == "tsv" else ",")
        self._ropts = dict(skip_rows=self.fmap.skip_rows, block_size=16 << 20,
                           autogenerate_column_names=not self.fmap.header)
        self._popts = pacsv.ParseOptions(delimiter=delim)
        try:
            reader = pacsv.open_csv(self.path, read_options=pacsv.ReadOptions(**self._ropts),
                                    parse_options=self._popts)
        except (pa.ArrowInvalid, OSError) as e:
            why = no_rows(self.path, self.fmap.skip_rows + bool(self.fmap.header))
            if why:  # pyarrow finds no whole line in a lone header: "Empty CSV file or block"
                raise DataFileError(f"{self.path}: holds no ions ({why})") from None
            raise DataFileError(f"{self.path}: not a readable {self.format.upper()} table "
                                f"({_arrow_msg(e)})") from None
        self.columns = list(reader.schema.names)
        reader.close()

    def _resolve_columns(self) -> None:
        """Each field's column -> a name in the file (or an index into a 2-D array)."""
        self._col: dict[str, str | int] = {}
        by_index = self.format == "npy" and not self.columns
        ncols = (self._arr.shape[1] if by_index and self._arr is not None
                 else len(self.columns))
        for key, spec in self.fmap.fields.items():
            c = spec.column
            if not by_index and isinstance(c, str) and c in self.columns:
                self._col[key] = c
                continue
            idx = c if isinstance(c, int) else (int(c) if str(c).isdigit() else None)
            if idx is not None and 0 <= idx < ncols:
                self._col[key] = idx if by_index else self.columns[idx]
                continue
            have = (f"{ncols} columns (0-{ncols - 1})" if by_index or idx is not None
                    else "columns " + ", ".join(repr(x) for x in self.columns[:20]))
            raise DataFileError(f"{self.path}: column {c!r} (for {key}) is not in the file; it "
                                f"has {have}")

    # -- reading
    def _raw_chunks(self, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, :data:`ION_DTYPE` chunk converted to apt-daq units); the file's own
        columns are dropped before the chunk is handed on (bounded memory)."""
        if self.format in ("binary", "npy"):
            n = self.n
            assert n is not None  # counted when opened
            for i in range(0, n, chunk):
                block = self._block(i, min(i + chunk, n))
                cols = {k: np.array(block[:, c] if isinstance(c, int) else block[c])
                        for k, c in self._col.items()}
                del block  # unmap: the pages read do not stay resident
                ions = self._convert(i, cols)
                del cols
                yield i, ions
            return
        import pyarrow as pa
        import pyarrow.csv as pacsv

        names = [str(c) for c in dict.fromkeys(self._col.values())]  # a CSV's: names
        conv = pacsv.ConvertOptions(include_columns=names,
                                    column_types={c: pa.float64() for c in names})
        start = 0
        try:
            reader = pacsv.open_csv(self.path, read_options=pacsv.ReadOptions(**self._ropts),
                                    parse_options=self._popts, convert_options=conv)
            for batch in reader:
                if not batch.num_rows:
                    continue
                cols = {c: batch.column(c).to_numpy(zero_copy_only=False) for c in names}
                del batch
                ions = self._convert(start, {k: cols[str(c)] for k, c in self._col.items()})
                del cols
                yield start, ions
                start += len(ions)
        except (pa.ArrowInvalid, OSError) as e:
            raise DataFileError(f"{self.path}: {self._arrow_msg(e)} (in the block after row "
                                f"{start})") from None
        self.n = start

    def _block(self, i: int, j: int) -> np.ndarray:
        """Rows ``i:j`` through a memory map of just those rows (a C-ordered file), so the
        pages read are released with it; else a slice of the whole file's map."""
        arr = self._arr
        assert arr is not None  # binary and npy files are mapped when opened
        if not isinstance(arr, np.memmap) or not (arr.flags.c_contiguous or arr.ndim == 1):
            return arr[i:j]
        row = arr.dtype.itemsize * (arr.shape[1] if arr.ndim == 2 else 1)
        shape = (j - i, *arr.shape[1:])
        return np.memmap(self.path, dtype=arr.dtype, mode="r", offset=self._offset0 + i * row,
                         shape=shape)

    def _arrow_msg(self, e: BaseException) -> str:
        """pyarrow's message, with the column's name beside its number."""
        import re

        def name(m: re.Match) -> str:
            k = int(m.group(1))
            return m.group(0) + (f" ({self.columns[k]!r})" if k < len(self.columns) else "")

        return re.sub(r"column #(\d+)", name, _arrow_msg(e))

    def _where(self, row: int) -> str:
        if self.format == "binary":
            assert self.fmap.record is not None  # a binary file has a record
            rec = self.fmap.record.itemsize
            return f"record {row} (byte offset {self._offset0 + row * rec})"
        if self.format == "npy":
            return f"row {row}"
        line = row + 1 + self.fmap.skip_rows + (1 if self.fmap.header else 0)
        return f"row {row} (line {line})"

    def _convert(self, start: int, raw: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(raw.values())))
        out = empty_ions(n)
        for key, v in raw.items():
            spec = self.fmap.fields[key]
            if key in ("pulse", "multiplicity"):
                if v.dtype.kind in "iu" and key == "pulse":
                    bad = np.flatnonzero(v < 0) if v.dtype.kind == "i" else np.zeros(0, int)
                    if bad.size:
                        raise DataFileError(f"{self.path}: {self._where(start + bad[0])}: "
                                            f"{key} ({spec.column}) = {int(v[bad[0]])} is negative")
                    out[key] = v
                    continue
                f = np.asarray(v, np.float64)
                bad = np.flatnonzero(~np.isfinite(f) | (f < 0) | (f != np.floor(f)))
                if bad.size:
                    raise DataFileError(f"{self.path}: {self._where(start + bad[0])}: {key} "
                                        f"({spec.column}) = {float(f[bad[0]])!r} is not a count")
                out[key] = f.astype(np.uint64)
                continue
            f = np.asarray(v, np.float64)
            bad = np.flatnonzero(~np.isfinite(f))
            if bad.size:
                raise DataFileError(f"{self.path}: {self._where(start + bad[0])}: {key} "
                                    f"({spec.column}) is {float(f[bad[0]])!r}, not a finite number")
            out[key] = f * spec.scale if spec.scale != 1.0 else f
        mapped = self.fmap.fields
        if "pulse" not in mapped:
            out["pulse"] = np.arange(start, start + n, dtype=np.uint64)
        if "tof" in mapped:
            if "v_pulse" not in mapped:
                out["v_pulse"] = 0.0
            if "det_x" not in mapped:
                out["det_x"] = 0.0
            if "det_y" not in mapped:
                out["det_y"] = 0.0
        return out

    def iter(self, chunk: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
        """:data:`ION_DTYPE` chunks (bounded memory). Without a multiplicity column, each
        chunk's last pulse group is held back until the next chunk shows where it ends."""
        counted = "multiplicity" in self.fmap.fields
        held: np.ndarray | None = None
        for _start, ions in self._raw_chunks(chunk):
            if counted:
                ions["multiplicity"] = np.maximum(ions["multiplicity"], 1)
                yield ions
                continue
            lead = 0  # rows of this chunk that continue the held group
            if held is not None:
                other = np.flatnonzero(ions["pulse"] != held["pulse"][0])
                lead = int(other[0]) if other.size else len(ions)
                if lead == len(ions):  # the whole chunk continues it
                    held = np.concatenate([held, ions])
                    continue
                total = len(held) + lead
                held["multiplicity"] = total
                yield held
            cut = _last_group_start(ions["pulse"])
            held = ions[cut:].copy()
            if cut:  # cut >= lead: the pulse changes after the lead rows
                body = ions[:cut]
                body["multiplicity"] = _group_sizes(body["pulse"])
                if lead:
                    body["multiplicity"][:lead] = total
                yield body
        if held is not None and len(held):
            held["multiplicity"] = _group_sizes(held["pulse"])
            yield held


def _last_group_start(pulse: np.ndarray) -> int:
    starts = np.flatnonzero(group_starts(pulse))
    return int(starts[-1]) if starts.size else 0


def _group_sizes(pulse: np.ndarray) -> np.ndarray:
    """Multiplicity on every hit: the size of its run of equal pulse numbers."""
    starts = np.flatnonzero(group_starts(pulse))
    sizes = np.diff(np.append(starts, len(pulse)))
    return np.repeat(sizes, sizes).astype(np.uint32)


def _arrow_msg(e: BaseException) -> str:
    return " ".join(str(e).split())

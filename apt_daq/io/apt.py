"""APT files (AP Suite 6 "APT v2"): a file header followed by self-describing sections.

All integers little-endian. The file header (540 bytes)::

    cSignature      char[4]       "APT\\0"
    iHeaderSize     int32         540
    iHeaderVersion  int32         2
    wcFileName      wchar_t[256]  UTF-16LE, NUL-padded
    ftCreationTime  uint64        Windows FILETIME (100 ns ticks since 1601-01-01 UTC)
    llIonCount      uint64        ions in the file

Each section: a 148-byte header, optional extra header bytes (``iHeaderSize`` > 148: the
Position section carries six float32 bounds xmin, xmax, ymin, ymax, zmin, zmax), then
``llByteCount`` bytes of data; the next section starts right after::

    cSignature      char[4]       "SEC\\0"
    iHeaderSize     int32         148 (+ extra)
    iHeaderVersion  int32         2
    wcSectionType   wchar_t[32]   the section's name: "Mass", "Position", "tof", ...
    iSectionVersion int32         1
    eRelationship   uint32        0 unknown, 1 one-to-one with ions, 2 indexed, 3 unrelated, 4 one-to-many
    eRecordType     uint32        0 unknown, 1 fixed size, 2 variable size, 3 variable indexed
    eRecordDataType uint32        0 unknown, 1 int, 2 uint, 3 IEEE float, 4 char string, 5 other
    iDataTypeSize   int32         bits of one value (8/16/32/64)
    iRecordSize     int32         bytes of one record (a multiple of iDataTypeSize/8)
    wcDataUnit      wchar_t[16]   "nm", "Da", "ns", "mm", "V", ""
    llRecordCount   uint64        records that follow
    llByteCount     uint64        data bytes that follow (>= count x size; use it to seek)

Sections written and read here (name, type, unit): Position (3 x float32, nm), Mass (float32,
Da), tof (float32, ns), Voltage (float32, V), Pulse Voltage (float32, V), XDet_mm and YDet_mm
(float32, mm), Multiplicity (int32: the count on the first ion of a multi-hit, 0 on the rest;
apav reads it as ``ipp``), pulse (float32 pulse number, exact below 2^24) and pulseDelta
(int16: pulses since the previous ion, saturating at 32767; the first ion's counts from
``pulse_origin``, so an export's sum is its run's pulse count: docs/formats.md); the writer
leaves out the sections of fields the source does not hold (:func:`ions_sections`; Multiplicity
comes of the pulse numbers too). A file with pulse numbers but no Multiplicity gets its
multiplicities from equal pulse numbers (:func:`multiplicity_of_pulses`). Every section not
read (tofc, freq, erate, a Detector Coordinates beside XDet_mm, one that is not one-to-one with
the ions) is listed by name in ``skipped``; a section whose kind cannot be decoded (an unknown
relationship, record or data type, or a bad signature) is a DataFileError naming its offset.
Without pulse or pulseDelta the pulse numbers are one per Multiplicity group, or one per ion
(``pulses``; ``present`` lists ``pulse`` only when the file has them). ``created_filetime``:
ftCreationTime, None when 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apt_daq.errors import DataFileError
from apt_daq.io._common import (
    DEFAULT_CHUNK,
    FLOAT_FIELDS,
    ION_DTYPE,
    atomic_output,
    empty_ions,
    fill_multiplicity,
    multiplicity_first_only,
    multiplicity_of_pulses,
    pulses_from,
    require_input,
    write_first_only,
)
from apt_daq.io.epos import detect_voltage_scale

log = logging.getLogger("apt_daq.io")

FILE_HEADER = np.dtype([
    ("cSignature", "S4"), ("iHeaderSize", "<i4"), ("iHeaderVersion", "<i4"),
    ("wcFileName", "<u2", (256,)), ("ftCreationTime", "<u8"), ("llIonCount", "<u8"),
])
SECTION_HEADER = np.dtype([
    ("cSignature", "S4"), ("iHeaderSize", "<i4"), ("iHeaderVersion", "<i4"),
    ("wcSectionType", "<u2", (32,)), ("iSectionVersion", "<i4"), ("eRelationshipType", "<u4"),
    ("eRecordType", "<u4"), ("eRecordDataType", "<u4"), ("iDataTypeSize", "<i4"),
    ("iRecordSize", "<i4"), ("wcDataUnit", "<u2", (16,)), ("llRecordCount", "<u8"),
    ("llByteCount", "<u8"),
])
assert FILE_HEADER.itemsize == 540 and SECTION_HEADER.itemsize == 148
MAGIC = b"APT\0"
SECTION_MAGIC = b"SEC\0"
_FILETIME_UNIX_OFFSET_S = 11644473600
_PULSE_DELTA_MAX = np.iinfo(np.int16).max


@dataclass(frozen=True)
class SectionSpec:
    """How one of our fields is stored as an APT section."""

    name: str
    kind: int  # eRecordDataType: 1 int, 2 uint, 3 float
    bits: int
    columns: int
    unit: str
    extra: int = 0  # header bytes beyond 148


SECTIONS = {
    "Position": SectionSpec("Position", 3, 32, 3, "nm", extra=24),
    "Mass": SectionSpec("Mass", 3, 32, 1, "Da"),
    "tof": SectionSpec("tof", 3, 32, 1, "ns"),
    "Voltage": SectionSpec("Voltage", 3, 32, 1, "V"),
    "Pulse Voltage": SectionSpec("Pulse Voltage", 3, 32, 1, "V"),
    "XDet_mm": SectionSpec("XDet_mm", 3, 32, 1, "mm"),
    "YDet_mm": SectionSpec("YDet_mm", 3, 32, 1, "mm"),
    "Multiplicity": SectionSpec("Multiplicity", 1, 32, 1, ""),
    "pulse": SectionSpec("pulse", 3, 32, 1, ""),
    "pulseDelta": SectionSpec("pulseDelta", 1, 16, 1, ""),
}
_FIELD_OF = {"Mass": "mass", "tof": "tof", "Voltage": "v_dc", "Pulse Voltage": "v_pulse",
             "XDet_mm": "det_x", "YDet_mm": "det_y"}
_KNOWN_REL = {0, 1, 2, 3, 4}
_KNOWN_RECORD = {0, 1, 2, 3}
_KNOWN_DATA = {0, 1, 2, 3, 4, 5}


def _wstr(a: np.ndarray) -> str:
    return "".join(chr(c) for c in a if c)


def _wchars(text: str, n: int) -> np.ndarray:
    codes = np.frombuffer(text.encode("utf-16-le"), "<u2")[: n - 1]
    out = np.zeros(n, "<u2")
    out[: len(codes)] = codes
    return out


def _numpy_type(kind: int, bits: int) -> np.dtype | None:
    code = {1: "i", 2: "u", 3: "f"}.get(kind)
    if code is None or bits not in ((16, 32, 64) if code == "f" else (8, 16, 32, 64)):
        return None
    return np.dtype(f"<{code}{bits // 8}")


@dataclass
class Section:
    """One section as found in a file: its header fields and where its data lies."""

    name: str
    offset: int  # of the section header
    data_offset: int
    header: np.ndarray
    dtype: np.dtype
    columns: int
    count: int
    extra: bytes

    @property
    def unit(self) -> str:
        return _wstr(self.header["wcDataUnit"])


class AptFile:
    """An APT file: the header and a map of its sections, each readable by memory map."""

    def __init__(self, path: str | Path, voltage_unit: str = "auto"):
        self.path = Path(path)
        require_input(self.path)
        self.size = self.path.stat().st_size
        with open(self.path, "rb") as fh:
            head = fh.read(FILE_HEADER.itemsize)
            if len(head) < 4 or head[:4] != MAGIC:
                raise DataFileError(
                    f"{self.path}: byte offset 0: signature {head[:4]!r} is not {MAGIC!r}: "
                    "not an AP Suite APT file")
            if len(head) < FILE_HEADER.itemsize:
                raise DataFileError(f"{self.path}: file header truncated at byte offset {len(head)} "
                                    f"(needs {FILE_HEADER.itemsize})")
            h = np.frombuffer(head, FILE_HEADER)[0]
            if int(h["iHeaderVersion"]) != 2:
                raise DataFileError(f"{self.path}: byte offset 8: header version "
                                    f"{int(h['iHeaderVersion'])} (only APT v2 is known)")
            hsize = int(h["iHeaderSize"])
            if not FILE_HEADER.itemsize <= hsize <= self.size:
                raise DataFileError(f"{self.path}: byte offset 4: header size {hsize} " + (
                    f"< {FILE_HEADER.itemsize}" if hsize < FILE_HEADER.itemsize else
                    f"is larger than the file ({self.size} bytes): corrupt header"))
            self.header = h
            self.n = int(h["llIonCount"])
            self.original_name = _wstr(h["wcFileName"])
            self.created_filetime = int(h["ftCreationTime"]) or None
            self.sections: dict[str, Section] = {}
            self.skipped: list[str] = []
            self._scan(fh, hsize)
        self._maps: dict[str, np.ndarray] = {}
        present = [f for s, f in _FIELD_OF.items() if s in self.sections]
        if "Position" in self.sections:
            present += ["x", "y", "z"]
        if "det_x" not in present and "Detector Coordinates" in self.sections:
            present += ["det_x", "det_y"]
        if self.sections.keys() & {"pulse", "pulseDelta", "Delta Pulse"}:
            present.append("pulse")
        if "Multiplicity" in self.sections:
            present.append("multiplicity")
        self.present, self.pulses = tuple(present), pulses_from(present)
        used = {*SECTIONS, "Delta Pulse", *(() if "XDet_mm" in self.sections
                                            else ("Detector Coordinates",))}
        self.skipped += [s for s in self.sections if s not in used]
        self.voltage_scale, self.voltage_note = 1.0, "no voltage in the file"
        if "v_dc" in present:
            if voltage_unit == "auto":
                k = np.linspace(0, self.n - 1, min(self.n, 65536)).astype(np.int64)
                col = lambda s: self.column(s)[k] if s in self.sections else np.zeros(len(k))  # noqa: E731
                self.voltage_scale, self.voltage_note = detect_voltage_scale(
                    col("Mass"), col("tof"), col("Voltage"))
                if self.voltage_scale != 1.0:
                    log.warning("%s: Voltage read as %s; converted to V", self.path,
                                self.voltage_note)
            else:
                self.voltage_scale = 1000.0 if voltage_unit == "kV" else 1.0
                self.voltage_note = f"{voltage_unit} (given)"

    def _fail(self, offset: int, msg: str) -> DataFileError:
        return DataFileError(f"{self.path}: byte offset {offset}: {msg}")

    def _scan(self, fh, offset: int) -> None:
        while offset < self.size:
            fh.seek(offset)
            raw = fh.read(SECTION_HEADER.itemsize)
            if len(raw) < 4 or raw[:4] != SECTION_MAGIC:
                raise self._fail(offset, f"section signature {raw[:4]!r} is not {SECTION_MAGIC!r}")
            if len(raw) < SECTION_HEADER.itemsize:
                raise self._fail(offset, f"section header truncated ({len(raw)} of "
                                         f"{SECTION_HEADER.itemsize} bytes)")
            s = np.frombuffer(raw, SECTION_HEADER)[0]
            name = _wstr(s["wcSectionType"])
            hsize = int(s["iHeaderSize"])
            where = f"section {name!r}"
            if hsize < SECTION_HEADER.itemsize:
                raise self._fail(offset, f"{where}: header size {hsize} < 148")
            rel, rec, kind = (int(s["eRelationshipType"]), int(s["eRecordType"]),
                              int(s["eRecordDataType"]))
            for what, v, known in (("relationship type", rel, _KNOWN_REL),
                                   ("record type", rec, _KNOWN_RECORD),
                                   ("record data type", kind, _KNOWN_DATA)):
                if v not in known:
                    raise self._fail(offset, f"{where}: unknown {what} {v}")
            count, nbytes = int(s["llRecordCount"]), int(s["llByteCount"])
            data = offset + hsize
            if data + nbytes > self.size:
                have = max(0, self.size - data)
                rsize = max(1, int(s["iRecordSize"]))
                raise self._fail(data, f"{where} declares {nbytes} data bytes but the file ends "
                                       f"after {have} (truncated at record {have // rsize})")
            if name in self.sections:
                raise self._fail(offset, f"{where} appears twice")
            bits, rsize = int(s["iDataTypeSize"]), int(s["iRecordSize"])
            dtype = _numpy_type(kind, bits)
            decodable = (rel == 1 and rec == 1 and dtype is not None and rsize > 0
                         and rsize % dtype.itemsize == 0 and nbytes >= count * rsize)
            if name in SECTIONS or name in ("Detector Coordinates", "Delta Pulse"):
                if not decodable:
                    raise self._fail(offset, f"{where}: cannot decode (relationship {rel}, record "
                                             f"type {rec}, data type {kind}/{bits} bit, record "
                                             f"{rsize} B, {count} records in {nbytes} B)")
                if count != self.n:
                    raise self._fail(offset, f"{where} has {count} records for {self.n} ions")
            if decodable:
                assert dtype is not None  # decodable says so
                fh.seek(offset + SECTION_HEADER.itemsize)
                extra = fh.read(hsize - SECTION_HEADER.itemsize)
                self.sections[name] = Section(name, offset, data, s, dtype,
                                              rsize // dtype.itemsize, count, extra)
            else:
                self.skipped.append(name)
            offset = data + nbytes
        missing = [s for s in ("Mass",) if s not in self.sections]
        if missing:
            raise DataFileError(f"{self.path}: no {missing[0]} section (sections: "
                                f"{', '.join(self.sections) or 'none'})")

    def __len__(self) -> int:
        return self.n

    def column(self, name: str) -> np.ndarray:
        """A section's data as a read-only memory map, shape (n,) or (n, columns)."""
        if name not in self._maps:
            s = self.sections[name]
            shape = (s.count,) if s.columns == 1 else (s.count, s.columns)
            if s.count == 0:
                self._maps[name] = np.zeros(shape, s.dtype)
            else:
                self._maps[name] = np.memmap(self.path, dtype=s.dtype, mode="r",
                                             offset=s.data_offset, shape=shape)
        return self._maps[name]

    @property
    def position_bounds(self) -> np.ndarray | None:
        """xmin, xmax, ymin, ymax, zmin, zmax from the Position section header (nm)."""
        s = self.sections.get("Position")
        if s is None or len(s.extra) < 24:
            return None
        return np.frombuffer(s.extra[:24], "<f4").copy()

    def iter(self, chunk: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
        """:data:`ION_DTYPE` chunks (bounded memory)."""
        pulse0, last_mult = -1, 0
        for i in range(0, self.n, chunk):
            out, pulse0, last_mult = self._ions(i, min(i + chunk, self.n), pulse0, last_mult)
            yield out

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.n if stop is None else min(stop, self.n)
        return self._ions(start, max(start, stop), -1, 0)[0]

    def _ions(self, a: int, b: int, pulse0: int, last_mult: int) -> tuple[np.ndarray, int, int]:
        out = empty_ions(b - a)
        sec = self.sections
        if "Position" in sec:
            pos = self.column("Position")[a:b]
            out["x"], out["y"], out["z"] = pos[:, 0], pos[:, 1], pos[:, 2]
        for s, f in _FIELD_OF.items():
            if s in sec:
                out[f] = self.column(s)[a:b]
        if "det_x" in self.present and "XDet_mm" not in sec:
            dc = self.column("Detector Coordinates")[a:b]
            out["det_x"], out["det_y"] = dc[:, 0], dc[:, 1]
        if self.voltage_scale != 1.0:
            out["v_dc"] *= self.voltage_scale
            out["v_pulse"] *= self.voltage_scale
        if "Pulse Voltage" not in sec and "v_dc" in self.present:
            out["v_pulse"] = 0.0
        mult = None
        if "Multiplicity" in sec:
            raw = np.asarray(self.column("Multiplicity")[a:b]).astype(np.int64)
            if len(raw) and raw[0] == 0 and last_mult:
                raw[0] = last_mult
            mult = fill_multiplicity(np.maximum(raw, 0))
            nz = np.flatnonzero(raw > 0)
            if nz.size:
                last_mult = int(raw[nz[-1]])
            out["multiplicity"] = mult
        elif "pulse" in self.present:  # the multi-hits are the runs of equal pulse numbers
            out["multiplicity"] = multiplicity_of_pulses(lambda lo, hi: self._pulses(lo, hi, 0),
                                                         a, b, self.n)
        else:
            out["multiplicity"] = 1
        pulse = self._pulses(a, b, pulse0)
        out["pulse"] = pulse
        return out, (int(pulse[-1]) if len(pulse) else pulse0), last_mult

    def _pulses(self, a: int, b: int, pulse0: int) -> np.ndarray:
        """Pulse numbers: exact from pulseDelta when it never saturates, else from the float
        pulse section (exact below 2^24), else one pulse per multi-hit group."""
        sec = self.sections
        delta_name = "pulseDelta" if "pulseDelta" in sec else (
            "Delta Pulse" if "Delta Pulse" in sec else None)
        fpulse = np.rint(np.asarray(self.column("pulse")[a:b], np.float64)) if "pulse" in sec else None
        if delta_name is not None:
            d = np.asarray(self.column(delta_name)[a:b]).astype(np.int64)
            bad = (d < 0) | (d >= _PULSE_DELTA_MAX)
            if fpulse is not None and bad.any():
                prev = np.empty_like(fpulse)
                prev[1:] = fpulse[:-1]
                prev[:1] = pulse0 if pulse0 >= 0 else 0
                d[bad] = (fpulse - prev)[bad].astype(np.int64)
            if pulse0 < 0:
                pulse0 = 0
            return (np.cumsum(np.maximum(d, 0)) + pulse0).astype(np.uint64)
        if fpulse is not None:
            return np.maximum(fpulse, 0).astype(np.uint64)
        if "Multiplicity" in sec:
            raw = np.asarray(self.column("Multiplicity")[a:b])
            return np.maximum(np.cumsum(raw > 0) + pulse0, 0).astype(np.uint64)
        return np.arange(a, b, dtype=np.uint64)


def read_apt(path: str | Path) -> np.ndarray:
    """The whole APT file as :data:`ION_DTYPE` (small files; use :class:`AptFile` to stream)."""
    return AptFile(path).read()


# ---------------------------------------------------------------------------- writing

DEFAULT_SECTIONS = ("Position", "Mass", "tof", "Voltage", "Pulse Voltage", "XDet_mm", "YDet_mm",
                    "Multiplicity", "pulse", "pulseDelta")


def _section_header(spec: SectionSpec, n: int) -> np.ndarray:
    h = np.zeros((), SECTION_HEADER)
    rsize = spec.bits // 8 * spec.columns
    h["cSignature"] = SECTION_MAGIC
    h["iHeaderSize"] = SECTION_HEADER.itemsize + spec.extra
    h["iHeaderVersion"] = 2
    h["wcSectionType"] = _wchars(spec.name, 32)
    h["iSectionVersion"] = 1
    h["eRelationshipType"] = 1
    h["eRecordType"] = 1
    h["eRecordDataType"] = spec.kind
    h["iDataTypeSize"] = spec.bits
    h["iRecordSize"] = rsize
    h["wcDataUnit"] = _wchars(spec.unit, 16)
    h["llRecordCount"] = n
    h["llByteCount"] = n * rsize
    return h


def write_apt(path: str | Path, n: int, chunks: Iterable[np.ndarray],
              sections: Iterable[str] = DEFAULT_SECTIONS, overwrite: bool = True,
              created_filetime: int | None = None, pulse_origin: int = 0) -> int:
    """Stream ``n`` ions (:data:`ION_DTYPE` chunks) into an APT v2 file, atomically.

    The layout is fixed by ``n``, so the file is sized first and each chunk is written into
    every section through a memory map; the Position bounds are patched in at the end. The
    pulse section holds pulse - ``pulse_origin`` (the pulse number before the first one
    counted), and the first pulseDelta counts from it.
    """
    path = Path(path)
    layout = []
    off = FILE_HEADER.itemsize
    for spec in (SECTIONS[s] for s in sections):
        h = _section_header(spec, n)
        layout.append((spec, off, off + int(h["iHeaderSize"]), h))
        off += int(h["iHeaderSize"]) + int(h["llByteCount"])
    total = off
    head = np.array((MAGIC, FILE_HEADER.itemsize, 2, _wchars(path.name, 256), created_filetime
                     or int((time.time() + _FILETIME_UNIX_OFFSET_S) * 1e7), n), FILE_HEADER)
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    with atomic_output(path, overwrite) as tmp:
        with open(tmp, "wb") as fh:
            fh.truncate(total)
        mm = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=(total,))
        mm[: FILE_HEADER.itemsize] = np.frombuffer(head.tobytes(), np.uint8)
        for _spec, hoff, _doff, h in layout:
            mm[hoff : hoff + SECTION_HEADER.itemsize] = np.frombuffer(h.tobytes(), np.uint8)
        views = {}
        for spec, _hoff, doff, _h in layout:
            dt = _numpy_type(spec.kind, spec.bits)
            assert dt is not None  # the writer's own section specs
            shape = (n, spec.columns) if spec.columns > 1 else (n,)
            views[spec.name] = mm[doff : doff + n * spec.bits // 8 * spec.columns].view(dt).reshape(shape)
        i = 0
        last_pulse = pulse_origin
        open_start: int | None = None
        for ions in chunks:
            k = len(ions)
            if i + k > n:
                raise ValueError(f"write_apt: more than the announced {n} ions")
            p = ions["pulse"].astype(np.int64)
            for name, v in views.items():
                if name == "Position":
                    for c, f in enumerate("xyz"):
                        v[i : i + k, c] = ions[f]
                    xyz = np.stack([ions["x"], ions["y"], ions["z"]], axis=1)
                    if k and np.isfinite(xyz).any():
                        lo = np.fmin(lo, np.nanmin(xyz, axis=0))
                        hi = np.fmax(hi, np.nanmax(xyz, axis=0))
                elif name in _FIELD_OF:
                    v[i : i + k] = ions[_FIELD_OF[name]]
                elif name == "pulse":
                    v[i : i + k] = (p - pulse_origin).astype(np.float32)
            if "pulseDelta" in views and k:
                d = np.diff(p, prepend=last_pulse)
                views["pulseDelta"][i : i + k] = np.clip(d, 0, _PULSE_DELTA_MAX)
            if "Multiplicity" in views and k:
                open_start = write_first_only(views["Multiplicity"], p, i, last_pulse, open_start)
            if k:
                last_pulse = int(p[-1])
            i += k
        if i != n:
            raise ValueError(f"write_apt: {i} ions written, {n} announced")
        if "Multiplicity" in views and open_start is not None:
            views["Multiplicity"][open_start] = n - open_start
        for spec, hoff, _doff, _h in layout:
            if spec.name == "Position":
                b = np.array([lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]], "<f4")
                b[~np.isfinite(b)] = 0
                mm[hoff + 148 : hoff + 172] = np.frombuffer(b.tobytes(), np.uint8)
        mm.flush()
        del mm, views
    return n


def ions_sections(present: Iterable[str] | None) -> tuple[str, ...]:
    """The sections to write for the fields a source really holds (None: every section).
    Multiplicity is written from the pulse numbers' groups: with pulse numbers it is known
    (a raw hit file's multi-hits are its equal pulse numbers) even where the file had none."""
    if present is None:
        return DEFAULT_SECTIONS
    have = set(present) | ({"multiplicity"} if "pulse" in present else set())
    need = {"Position": {"x", "y", "z"}, "Multiplicity": {"multiplicity"}, "pulse": {"pulse"},
            "pulseDelta": {"pulse"}}
    return tuple(s for s in DEFAULT_SECTIONS if need.get(s, {_FIELD_OF.get(s)}) <= have)


__all__ = ["FILE_HEADER", "FLOAT_FIELDS", "ION_DTYPE", "SECTIONS", "SECTION_HEADER", "AptFile",
           "multiplicity_first_only", "read_apt", "write_apt"]

"""Length-prefixed binary framing of raw DLD records over TCP (client and emulator share it).

Every frame, both directions, is a 40-byte little-endian header and a payload::

    offset size type   field
     0      4   bytes  magic b"APTD"
     4      4   u32    frame_len: bytes after this field (32 + payload length)
     8      2   u16    version (1)
    10      2   u16    kind (below)
    12      4   u32    record_size: RAW_DTYPE.itemsize (40) for DATA, else 0
    16      8   u64    first_pulse: pulse number of the block's first pulse
    24      8   u64    n_pulses: pulses the block covers (records or not)
    32      4   u32    n_records
    36      4   u32    dropped: records the front end lost in this block
    40      ..         payload: n_records x RAW_DTYPE (little endian) for DATA,
                       UTF-8 text for ERROR, empty otherwise

Kinds: client -> server ``START`` (16), ``STOP`` (17); server -> client ``DATA`` (1), ``END``
(2, acquisition stopped, after STOP), ``ERROR`` (3, payload is the message).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from apt_daq.hits import RAW_DTYPE

MAGIC = b"APTD"
VERSION = 1
HEADER = struct.Struct("<4sIHHIQQII")
HEADER_SIZE = HEADER.size  # 40
DATA, END, ERROR, START, STOP = 1, 2, 3, 16, 17
KINDS = {DATA: "DATA", END: "END", ERROR: "ERROR", START: "START", STOP: "STOP"}
MAX_FRAME = 1 << 30  # 1 GiB: anything larger is a corrupt length field


class FrameError(ValueError):
    """A byte stream that is not a valid frame; the message names the byte offset."""


@dataclass
class Frame:
    kind: int
    first_pulse: int = 0
    n_pulses: int = 0
    dropped: int = 0
    records: np.ndarray = field(default_factory=lambda: np.zeros(0, RAW_DTYPE))
    text: str = ""

    @property
    def kind_name(self) -> str:
        return KINDS.get(self.kind, str(self.kind))


def encode(kind: int, records: np.ndarray | None = None, *, first_pulse: int = 0,
           n_pulses: int = 0, dropped: int = 0, text: str = "") -> bytes:
    """One frame as bytes. ``records`` must be RAW_DTYPE (DATA frames)."""
    if records is not None and len(records):
        if records.dtype != RAW_DTYPE:
            raise TypeError(f"records: expected RAW_DTYPE, got {records.dtype}")
        payload = np.ascontiguousarray(records).tobytes()
        n, size = len(records), RAW_DTYPE.itemsize
    else:
        payload = text.encode("utf-8")
        n, size = 0, RAW_DTYPE.itemsize if kind == DATA else 0
    head = HEADER.pack(MAGIC, HEADER_SIZE - 8 + len(payload), VERSION, kind, size,
                       first_pulse, n_pulses, n, dropped)
    return head + payload


def encode_data(records: np.ndarray, *, first_pulse: int, n_pulses: int,
                dropped: int = 0) -> bytes:
    return encode(DATA, records, first_pulse=first_pulse, n_pulses=n_pulses, dropped=dropped)


def decode_header(buf: bytes, offset: int = 0) -> tuple[int, int, int, int, int, int, int]:
    """(frame_len, kind, record_size, first_pulse, n_pulses, n_records, dropped), validated."""
    magic, flen, version, kind, size, first, npulses, nrec, dropped = HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise FrameError(f"byte {offset}: bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise FrameError(f"byte {offset + 8}: version {version}, expected {VERSION}")
    if kind not in KINDS:
        raise FrameError(f"byte {offset + 10}: unknown frame kind {kind}")
    if flen < HEADER_SIZE - 8 or flen > MAX_FRAME:
        raise FrameError(f"byte {offset + 4}: frame_len {flen} out of range")
    payload = flen - (HEADER_SIZE - 8)
    if kind == DATA:
        if size != RAW_DTYPE.itemsize:
            raise FrameError(f"byte {offset + 12}: record_size {size}, expected "
                             f"{RAW_DTYPE.itemsize} (RAW_DTYPE)")
        if payload != nrec * size:
            raise FrameError(f"byte {offset + 4}: frame_len {flen} does not hold {nrec} records "
                             f"of {size} bytes")
    return flen, kind, size, first, npulses, nrec, dropped


def decode_frame(buf: bytes, offset: int = 0) -> Frame:
    """A whole frame (header + payload) from ``buf``."""
    if len(buf) < HEADER_SIZE:
        raise FrameError(f"byte {offset}: {len(buf)} bytes, a header needs {HEADER_SIZE}")
    flen, kind, _size, first, npulses, _nrec, dropped = decode_header(buf, offset)
    end = 8 + flen
    if len(buf) < end:
        raise FrameError(f"byte {offset}: frame truncated at {len(buf)} of {end} bytes")
    payload = bytes(buf[HEADER_SIZE:end])
    if kind == DATA:
        recs = np.frombuffer(payload, dtype=RAW_DTYPE).copy()
        return Frame(kind, first, npulses, dropped, recs)
    return Frame(kind, first, npulses, dropped, text=payload.decode("utf-8", "replace"))


class FrameDecoder:
    """Incremental decoder: ``feed(bytes)`` returns the frames completed so far."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0], for messages

    def feed(self, data: bytes) -> list[Frame]:
        self._buf.extend(data)
        out = []
        while len(self._buf) >= HEADER_SIZE:
            flen = decode_header(bytes(self._buf[:HEADER_SIZE]), self._offset)[0]
            end = 8 + flen
            if len(self._buf) < end:
                break
            out.append(decode_frame(bytes(self._buf[:end]), self._offset))
            del self._buf[:end]
            self._offset += end
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self._buf)

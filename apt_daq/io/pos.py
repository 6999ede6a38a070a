"""POS files (IVAS/AP Suite): reconstructed positions and mass-to-charge, nothing else.

Layout: no header; one 16-byte record per ion of four big-endian IEEE float32::

    x (nm)  y (nm)  z (nm)  m/n (Da)

POS records no pulse numbers and no multiplicities: each ion is read as its own event (pulse =
its index, multiplicity 1), so nothing downstream groups ions that may not have arrived
together; ``present`` leaves both out (:data:`apt_daq.io._common.PULSES`, "ions").

The ion count is the file size / 16; a size that is not a multiple of 16 is a truncated or
foreign file and is refused (naming the ion at which the file breaks off). An EPOS file whose
size is also a multiple of 16 (one in four: 4 ions = 11 POS records) would read as POS records
that pass every bound on values (its TOF, volts and detector coordinates are numbers of the
same size as positions and m/n); it is recognised by its two integer columns and refused,
naming EPOS (:func:`looks_like_epos`). A file whose records are not ions as stored but are
byte-swapped is refused as EPOS refuses one: "(not a POS file, or a little-endian one?)"
(:meth:`PosFile._check_byte_order`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from apt_daq.errors import DataFileError
from apt_daq.io._common import (
    DEFAULT_CHUNK,
    ION_DTYPE,
    IonRecordCheck,
    atomic_output,
    empty_ions,
    require_input,
)

POS_DTYPE = np.dtype([("x", ">f4"), ("y", ">f4"), ("z", ">f4"), ("mass", ">f4")])
POS_NATIVE = POS_DTYPE.newbyteorder("<")
RECORD_BYTES = POS_DTYPE.itemsize  # 16


def check_size(path: Path, size: int, record: int, what: str) -> int:
    """Number of records in a headerless file, or a DataFileError naming where it breaks off."""
    if size % record:
        n = size // record
        raise DataFileError(
            f"{path}: size {size} is not a multiple of the {record}-byte {what} record "
            f"(truncated or not {what}? the file breaks off inside ion {n}, "
            f"at byte offset {n * record})"
        )
    return size // record


EPOS_WORDS = 11  # an EPOS record: 9 big-endian float32 then 2 big-endian int32 (psl, ipp)


def looks_like_epos(path: Path, size: int, sample: int = 4096) -> bool:
    """Whether a file of ``size`` bytes reads as EPOS records: a whole number of 44-byte records
    whose ions-per-pulse word is a small count (0 .. 2^16) and whose pulses-since-last word is
    not negative, in every sampled record, with m/n finite and within 0 .. 10 kDa.

    A POS file read so puts a float32 of a position or an m/n in the ipp word: any value above
    ~1e-40 in magnitude (or any negative one) is an integer above 2^16 there, so a real POS
    file fails on its first record that is not all zeros."""
    if size == 0 or size % (4 * EPOS_WORDS):
        return False
    n = size // (4 * EPOS_WORDS)
    words = np.memmap(path, dtype=">u4", mode="r", shape=(n, EPOS_WORDS))
    idx = np.unique(np.linspace(0, n - 1, min(n, sample)).astype(np.int64))
    rec = np.asarray(words[idx])
    ipp, psl = rec[:, 10], rec[:, 9].view(">i4")
    mass = rec[:, 3].view(">f4")
    return bool(np.all(ipp <= 1 << 16) and np.all(psl >= 0) and np.any(ipp > 0)
                and np.all(np.isfinite(mass)) and np.all((mass >= 0) & (mass <= 1e4)))


class PosFile:
    """A POS file opened by memory map; ``read`` and ``iter`` give native-endian slices."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        require_input(self.path)
        size = self.path.stat().st_size
        self.n = check_size(self.path, size, RECORD_BYTES, "POS")
        if looks_like_epos(self.path, size):
            raise DataFileError(
                f"{self.path}: holds EPOS records (44 bytes an ion, with pulse and "
                "ions-per-pulse counts), not POS: import it with --format epos (or name it "
                ".epos)")
        self._mm = (np.memmap(self.path, dtype=">u4", mode="r", shape=(self.n * 4,))
                    if self.n else np.zeros(0, ">u4"))
        self.present = ("x", "y", "z", "mass")
        self.pulses = "ions"  # neither pulse numbers nor multiplicities in the file
        self._check_byte_order()

    def _check_byte_order(self, sample: int = 4096) -> None:
        """Refuse a little-endian POS (numpy's ``tofile`` on a PC) with EPOS's hint: records
        spread over the file that are not ions read big-endian, as POS is stored, but are
        byte-swapped (:class:`IonRecordCheck`, and a median m/n of a real spectrum, >= 0.5 Da:
        a big-endian file of bad m/n read swapped gives ~1e-40). Anything else is left to the
        full check, which names what the values are."""
        if not self.n:
            return
        idx = np.unique(np.linspace(0, self.n - 1, min(self.n, sample)).astype(np.int64))
        words = np.asarray(self._mm.reshape(self.n, 4)[idx])
        stored, swapped = IonRecordCheck(self.path), IonRecordCheck(self.path)
        stored.add(words.astype("<u4").view(POS_NATIVE).reshape(-1), self.present)
        flipped = words.view("<u4").view(POS_NATIVE).reshape(-1)  # the bytes read little-endian
        swapped.add(flipped, self.present)
        if (stored.bad <= stored.MAX_SHARE * stored.n or swapped.bad > swapped.MAX_SHARE * swapped.n
                or not np.median(flipped["mass"]) >= 0.5):
            return
        i, what = stored.first or (0, "")
        raise DataFileError(
            f"{self.path}: {stored.bad} of {stored.n} sampled records are not ions as POS "
            f"stores them, big-endian (first at ion {int(idx[i])}: {what}), but are "
            "byte-swapped (not a POS file, or a little-endian one?)")

    def __len__(self) -> int:
        return self.n

    def records(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Native-endian POS records ``start:stop`` (x, y, z, mass as float32)."""
        stop = self.n if stop is None else min(stop, self.n)
        return self._mm[start * 4 : stop * 4].astype("<u4").view(POS_NATIVE)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Ions ``start:stop`` as :data:`ION_DTYPE` (fields POS lacks are NaN; each ion its own
        event: pulse = its index in the file, multiplicity 1)."""
        rec = self.records(start, stop)
        out = empty_ions(len(rec))
        for f in self.present:
            out[f] = rec[f]
        out["pulse"] = np.arange(start, start + len(rec), dtype=np.uint64)
        out["multiplicity"] = 1
        return out

    def iter(self, chunk: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
        for i in range(0, self.n, chunk):
            yield self.read(i, i + chunk)


def read_pos(path: str | Path) -> np.ndarray:
    """The whole POS file as :data:`ION_DTYPE` (small files; use :class:`PosFile` to stream)."""
    f = PosFile(path)
    return f.read()


def pos_bytes(ions: np.ndarray) -> np.ndarray:
    """POS records (big-endian) of an :data:`ION_DTYPE` chunk, as a flat uint32 array."""
    words = np.empty((len(ions), 4), dtype="<u4")
    for k, f in enumerate(("x", "y", "z", "mass")):
        words[:, k] = np.asarray(ions[f], dtype="<f4").view("<u4")
    return words.byteswap()


def write_pos(path: str | Path, chunks: Iterable[np.ndarray], overwrite: bool = True) -> int:
    """Stream :data:`ION_DTYPE` chunks to a POS file (atomically); return the ion count."""
    n = 0
    with atomic_output(path, overwrite) as tmp, open(tmp, "wb") as fh:
        for ions in chunks:
            if ions.dtype != ION_DTYPE:
                raise TypeError(f"write_pos: chunk dtype {ions.dtype} is not ION_DTYPE")
            fh.write(pos_bytes(ions).data)
            n += len(ions)
    return n

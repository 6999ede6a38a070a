"""EPOS files (IVAS/AP Suite "extended POS"): POS plus the measured quantities of each ion.

Layout: no header; one 44-byte record per ion of eleven big-endian 4-byte fields::

    x, y, z (nm) | m/n (Da) | TOF (ns) | V_dc | V_pulse | det_x, det_y (mm) | psl | ipp
    ---------------------- float32 ------------------------------------------  uint32 uint32

``psl`` (pulses since the last ion's pulse) is 0 on the second and later ions of a multi-hit;
``ipp`` (ions per pulse) holds the multiplicity on the first ion of a multi-hit and 0 on the
others. The reader's pulse numbers are ``cumsum(psl)``, so ``sum(psl)`` is the file's pulse count
(as IVAS, apav and ifes read it). The writer's psl[0] counts from ``pulse_origin``, the pulse
number before the first pulse counted: 0 (the default) writes the pulse numbers as they are,
and ``cumsum(psl)`` restores them exactly; an export passes its run's (docs/formats.md, "Pulse
numbers in exports"), so that sum is the run's pulse count.

Files without pulse numbers: psl = 0 on every ion after the first (IVAS exports, apav's
Si.epos) carries no pulse numbers: the reader numbers one pulse per ipp group (``pulse`` is
left out of ``present``), and a run that has no pulse numbers is exported with psl = 0 again
(``EposWriter(pulses=False)``), so EPOS -> run -> EPOS gives the file back byte for byte. With
psl all 0, ipp = 1 on every ion is what we write for a run that has no multiplicities either
(from POS): read back, ``multiplicity`` is left out as well and each ion is its own event.

Voltages: we write volts. Files in the wild hold V_dc in V (LEAP/IVAS) or, from some tools,
in kV; the reader decides per file (:func:`detect_voltage_scale`): from the physics when TOF
and m/n are present (the flight path implied by m/n = 1.9297e-10 V t^2 / L^2 must be a real
one, 5 cm to 3 m), else from the magnitude (a median V_dc below 100 is taken as kV), and warns
whenever it converts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from numba import njit

from apt_daq.errors import DataFileError
from apt_daq.io._common import (
    DEFAULT_CHUNK,
    ION_DTYPE,
    IonRecordCheck,
    atomic_output,
    pulses_from,
    require_input,
)
from apt_daq.io.pos import check_size
from apt_daq.pipeline.tof import K_DA, implied_flight_path_mm

log = logging.getLogger("apt_daq.io")

_F = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("mass", "f4"), ("tof", "f4"), ("v_dc", "f4"),
      ("v_pulse", "f4"), ("det_x", "f4"), ("det_y", "f4"), ("psl", "u4"), ("ipp", "u4")]
EPOS_DTYPE = np.dtype([(n, ">" + t) for n, t in _F])
"""One EPOS record as stored (big-endian)."""
EPOS_NATIVE = np.dtype([(n, "<" + t) for n, t in _F])
"""The same record in native (little-endian) byte order."""
RECORD_BYTES = EPOS_DTYPE.itemsize  # 44
WORDS = RECORD_BYTES // 4

MDA_PER_V_NS2_M2 = K_DA  # m/n [Da] = k V[V] t[ns]^2 / L[m]^2: the pipeline's one constant
PLAUSIBLE_FLIGHT_M = (0.05, 3.0)
_U32_MAX = np.iinfo(np.uint32).max


@njit(cache=True, nogil=True)
def _bswap32(v):
    return ((v >> 24) & 0xFF) | ((v >> 8) & 0xFF00) | ((v << 8) & 0xFF0000) | ((v << 24) & 0xFF000000)


@njit(cache=True, nogil=True)
def epos_to_ion_words(src, n, pulse0, last_ipp, at_start, out):
    """Big-endian EPOS words (n*11, read as little-endian uint32) -> ION words (n, 12).

    One pass: byteswap the nine floats, pulse = pulse0 + cumsum(psl) into words 9-10 (uint64
    little-endian), multiplicity = ipp of the pulse's first ion on every ion (word 11); a chunk
    that starts inside a multi-hit continues ``last_ipp``. A new pulse group (ipp > 0) with
    psl = 0 after the file's first ion (files written without pulse numbers) advances the pulse
    by one, so groups stay apart. Returns (last pulse, last ipp).
    """
    pulse = np.int64(pulse0)
    mult = last_ipp if last_ipp > 0 else 1
    for i in range(n):
        b = i * 11
        for k in range(9):
            out[i, k] = _bswap32(np.int64(src[b + k]))
        psl = _bswap32(np.int64(src[b + 9]))
        ipp = _bswap32(np.int64(src[b + 10]))
        if psl == 0 and ipp > 0 and (i > 0 or not at_start):
            psl = 1
        pulse += psl
        out[i, 9] = pulse & 0xFFFFFFFF
        out[i, 10] = pulse >> 32
        if ipp > 0:
            mult = ipp
            last_ipp = ipp
        out[i, 11] = mult
    return pulse, last_ipp


@njit(cache=True, nogil=True)
def ion_words_to_epos(src, n, last_pulse, out):
    """ION words (n, 12) -> big-endian EPOS words (n, 11). NaN floats are written as 0.

    psl = pulse - previous ion's pulse (first ion: - ``last_pulse``), clipped to uint32;
    ipp = the size of the pulse group on its first ion, 0 on the others (the caller passes
    whole groups). Returns (last pulse, number of clipped gaps).
    """
    # pass 1: the nine floats, NaN -> 0, byteswapped (branch-free so it vectorises)
    for i in range(n):
        for k in range(9):
            v = np.uint32(src[i, k])
            nan = ((v & np.uint32(0x7F800000)) == np.uint32(0x7F800000)) & (
                (v & np.uint32(0x007FFFFF)) != np.uint32(0))
            v = v * np.uint32(1 - nan)
            out[i, k] = ((v >> np.uint32(24)) | ((v >> np.uint32(8)) & np.uint32(0xFF00))
                         | ((v << np.uint32(8)) & np.uint32(0xFF0000)) | (v << np.uint32(24)))
    # pass 2: psl and ipp per pulse group
    clipped = 0
    i = 0
    while i < n:
        lo, hi = src[i, 9], src[i, 10]
        p = np.int64(lo) | (np.int64(hi) << 32)
        j = i + 1
        while j < n and src[j, 9] == lo and src[j, 10] == hi:
            out[j, 9] = 0
            out[j, 10] = 0
            j += 1
        d = p - last_pulse
        if d < 0 or d > 0xFFFFFFFF:
            d = 0xFFFFFFFF if d > 0 else 0
            clipped += 1
        out[i, 9] = _bswap32(np.int64(d))
        out[i, 10] = _bswap32(np.int64(j - i))
        last_pulse = p
        i = j
    return last_pulse, clipped


def implied_flight_path_m(mass_da: np.ndarray, tof_ns: np.ndarray, v: np.ndarray,
                          det_x_mm: np.ndarray | None = None,
                          det_y_mm: np.ndarray | None = None) -> float:
    """Median flight path L (m) that the pipeline's m/n (L_eff^2 = L^2 + x^2 + y^2, t0 = 0)
    implies from a file's m/n, TOF and V (NaN without usable ions); without detector
    coordinates, the mean L_eff."""
    return implied_flight_path_mm(mass_da, tof_ns, v, det_x_mm, det_y_mm) * 1e-3


def detect_voltage_scale(mass_da: np.ndarray, tof_ns: np.ndarray, v_dc: np.ndarray) -> tuple[float, str]:
    """(factor to volts, reason) for a sample of an EPOS file's V_dc column.

    Physics first: with V in volts the implied flight path is that of a real instrument; read
    as kV it comes out sqrt(1000) ~ 32 times too short. Magnitude second: LEAP specimens
    evaporate at 1-15 kV, so a median below 100 is kilovolts.
    """
    finite = v_dc[np.isfinite(v_dc) & (v_dc > 0)]
    if finite.size == 0:
        return 1.0, "no voltage in the file"
    lo, hi = PLAUSIBLE_FLIGHT_M
    with np.errstate(all="ignore"):  # a corrupt file's bytes: infinities, signalling NaNs
        l_v = implied_flight_path_m(mass_da, tof_ns, v_dc)
    if np.isfinite(l_v):
        if lo <= l_v <= hi:
            return 1.0, f"V (TOF and m/n imply a {l_v * 1000:.0f} mm flight path)"
        l_kv = l_v * np.sqrt(1000.0)
        if lo <= l_kv <= hi:
            return 1000.0, (f"kV (as volts, TOF and m/n would imply a {l_v * 1000:.1f} mm "
                            f"flight path; as kV {l_kv * 1000:.0f} mm)")
    med = float(np.median(finite))
    if med < 100.0:
        return 1000.0, f"kV (median V_dc {med:.3g} < 100: no LEAP evaporates at {med:.3g} V)"
    return 1.0, f"V (median V_dc {med:.4g})"


def _ions_like(path: Path, sample: np.ndarray) -> bool:
    """Whether a sample of records reads as ions (:class:`IonRecordCheck`): a file that will be
    refused as not ions gets no warning about its volts first."""
    check = IonRecordCheck(path)
    check.add(sample, ("x", "y", "z", "mass"))
    return check.bad <= check.MAX_SHARE * check.n


class EposFile:
    """An EPOS file opened by memory map.

    ``records(start, stop)`` gives native-endian raw records (fast: one byteswap);
    ``read``/``iter`` give :data:`ION_DTYPE` ions with pulse numbers, multiplicities and volts.
    ``voltage_scale`` (1 or 1000) and ``voltage_note`` say how V was read; ``present`` lists
    the fields the file really holds (an all-zero TOF, V_dc or detector column is absent).
    """

    def __init__(self, path: str | Path, voltage_unit: str = "auto"):
        self.path = Path(path)
        require_input(self.path)
        self.n = check_size(self.path, self.path.stat().st_size, RECORD_BYTES, "EPOS")
        self._mm = (np.memmap(self.path, dtype=">u4", mode="r", shape=(self.n * WORDS,))
                    if self.n else np.zeros(0, ">u4"))
        sample = self.records_sample()
        names = sample.dtype.names or ()
        has = {f: self.n == 0 or bool(np.any(sample[f] != 0)) for f in names}
        has["v_pulse"] = has["v_pulse"] or has["v_dc"]  # V_pulse 0 without V_dc: not recorded
        has["det_x"] = has["det_y"] = has["det_x"] or has["det_y"]
        present = ["x", "y", "z", "mass"] + [f for f in ("tof", "v_dc", "v_pulse", "det_x",
                                                          "det_y") if has[f]]
        psl, ipp = self._pulse_columns(sample)
        present += ["pulse"] * psl + ["multiplicity"] * ipp
        self.present = tuple(present)
        self.pulses = pulses_from(present)
        self._check_counts(sample)  # not an EPOS file: say so before reading its volts
        if voltage_unit == "auto":
            self.voltage_scale, self.voltage_note = detect_voltage_scale(
                sample["mass"], sample["tof"], sample["v_dc"])
            if self.voltage_scale != 1.0 and _ions_like(self.path, sample):
                log.warning("%s: V_dc and V_pulse read as %s; converted to V", self.path,
                            self.voltage_note)
        elif voltage_unit in ("V", "kV"):
            self.voltage_scale = 1000.0 if voltage_unit == "kV" else 1.0
            self.voltage_note = f"{voltage_unit} (given)"
        else:
            raise ValueError(f"voltage_unit must be 'auto', 'V' or 'kV', got {voltage_unit!r}")

    def __len__(self) -> int:
        return self.n

    def _pulse_columns(self, sample: np.ndarray) -> tuple[bool, bool]:
        """(psl holds pulse numbers, ipp holds multiplicities). psl = 0 on every ion after the
        first (a file written without pulse numbers, e.g. Si.epos of apav) is no pulse number;
        with it, ipp = 1 on every ion (our export of a run that had neither) is no multiplicity.
        A sample with a psl > 0 decides at once; otherwise the whole file is read to be sure."""
        if self.n == 0 or np.any(sample["psl"][1:] != 0):
            return True, True
        rows = self._mm.reshape(self.n, WORDS)
        single = True
        for i in range(0, self.n, DEFAULT_CHUNK):
            block = np.asarray(rows[i : i + DEFAULT_CHUNK, 9:11])
            if np.any(block[1 if i == 0 else 0 :, 0] != 0):
                return True, True
            single = single and bool(np.all(block[:, 1] == 1))
        return False, not single

    def records_sample(self, max_ions: int = 65536) -> np.ndarray:
        """Up to ``max_ions`` records spread evenly over the file (native byte order)."""
        if self.n == 0:
            return np.zeros(0, EPOS_NATIVE)
        idx = np.unique(np.linspace(0, self.n - 1, min(self.n, max_ions)).astype(np.int64))
        words = self._mm.reshape(self.n, WORDS)[idx]
        return words.astype("<u4").view(EPOS_NATIVE).reshape(-1)

    def _check_counts(self, sample: np.ndarray) -> None:
        bad = np.flatnonzero(sample["ipp"] > 1 << 16)
        if bad.size:
            raise DataFileError(
                f"{self.path}: ions-per-pulse {int(sample['ipp'][bad[0]])} is not a count "
                "(not an EPOS file, or a little-endian one?)")

    def records(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Native-endian EPOS records ``start:stop`` (a copy; the file is never loaded whole)."""
        stop = self.n if stop is None else min(stop, self.n)
        block = self._mm[start * WORDS : stop * WORDS]
        return block.astype("<u4").view(EPOS_NATIVE)

    def iter_records(self, chunk: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
        for i in range(0, self.n, chunk):
            yield self.records(i, i + chunk)

    def iter(self, chunk: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
        """:data:`ION_DTYPE` chunks with pulse = cumsum(psl) and multiplicity on every ion."""
        pulse0, last_ipp = 0, 0
        for i in range(0, self.n, chunk):
            ions, pulse0, last_ipp = self._ions(i, min(i + chunk, self.n), pulse0, last_ipp)
            yield ions

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Ions ``start:stop``; their pulse numbers count from ``start`` (``iter`` carries them
        over the whole file)."""
        stop = self.n if stop is None else min(stop, self.n)
        return self._ions(start, max(start, stop), 0, 0)[0]

    def _ions(self, start: int, stop: int, pulse0: int, last_ipp: int) -> tuple[np.ndarray, int, int]:
        n = stop - start
        out = np.empty(n, ION_DTYPE)
        src = self._mm[start * WORDS : stop * WORDS].view("<u4")
        pulse0, last_ipp = epos_to_ion_words(src, n, pulse0, last_ipp, start == 0,
                                             out.view("<u4").reshape(n, 12))
        for f in ("tof", "v_dc", "v_pulse", "det_x", "det_y"):
            if f not in self.present:
                out[f] = np.nan
        if self.voltage_scale != 1.0:
            with np.errstate(all="ignore"):  # a corrupt file's bytes (refused once checked)
                out["v_dc"] *= self.voltage_scale
                out["v_pulse"] *= self.voltage_scale
        return out, int(pulse0), int(last_ipp)


def read_epos(path: str | Path) -> np.ndarray:
    """The whole EPOS file as :data:`ION_DTYPE` (small files; use :class:`EposFile` to stream)."""
    return EposFile(path).read()


class EposWriter:
    """Stream ions into an EPOS file: psl and ipp are computed across chunk boundaries.

    The last pulse group of each chunk is held back until the next chunk (or ``close``) shows
    where it ends, so ``ipp`` is right for a multi-hit cut by a chunk boundary. Chunks travel
    as (n, 12) uint32 word views of :data:`ION_DTYPE` (no per-field copies).

    Speed: the numba kernel writes the big-endian records straight into one preallocated
    buffer of ``buffer_ions`` records (a few MB: still in the CPU cache when ``write`` copies
    it to the file), and a full buffer goes to the file in one ``write``. Small chunks (a run's
    blocks) are gathered into the buffer, a large one is cut at pulse-group boundaries; a
    buffer costs a few Python calls. (A writer thread overlapping the kernel with the write
    was no faster on the shared 2-core machine: the write is the page cache's memcpy.)
    """

    BUFFER_IONS = 1 << 16  # 2.9 MB of records per write

    def __init__(self, fh, *, buffer_ions: int = BUFFER_IONS, pulses: bool = True,
                 pulse_origin: int = 0):
        self._fh = fh
        self._pulses = pulses  # False: the pulse numbers are not real, psl = 0 on every ion
        self._buf = np.empty((max(1, int(buffer_ions)), WORDS), "<u4")
        self._fill = 0  # records in the buffer
        self._held = np.zeros((0, 12), "<u4")
        self._last_pulse = int(pulse_origin)  # psl[0] = first pulse - pulse_origin
        self.n = 0
        self.clipped = 0

    def write(self, ions: np.ndarray) -> None:
        if ions.dtype != ION_DTYPE:
            raise TypeError(f"EposWriter: chunk dtype {ions.dtype} is not ION_DTYPE")
        words = np.ascontiguousarray(ions).view("<u4").reshape(len(ions), 12)
        start = 0
        if len(self._held):
            h = self._held[-1]
            while start < len(words) and words[start, 9] == h[9] and words[start, 10] == h[10]:
                start += 1  # the held group continues into this chunk
            if start < len(words):
                self._emit(np.concatenate([self._held, words[:start]]))
                self._held = self._held[:0]
            else:
                self._held = np.concatenate([self._held, words])
                return
        cut = len(words) - 1
        while cut > start and words[cut - 1, 9] == words[-1, 9] and words[cut - 1, 10] == words[-1, 10]:
            cut -= 1  # groups are a few ions: a short scan back
        self._held = words[cut:].copy()
        self._emit(words[start:cut])

    def _emit(self, src: np.ndarray) -> None:
        """Convert whole pulse groups ``src`` into the buffer, writing it each time it fills."""
        cap, n, i = len(self._buf), len(src), 0
        while i < n:
            m = n - i
            if m > cap - self._fill:  # fill up to the last group boundary that fits
                j = i + cap - self._fill
                while j > i and src[j - 1, 9] == src[j, 9] and src[j - 1, 10] == src[j, 10]:
                    j -= 1
                if j == i:  # the next group does not fit
                    if self._fill:
                        self._flush()
                        continue
                    self._buf = np.empty((2 * cap, WORDS), "<u4")  # nor in an empty buffer
                    cap = len(self._buf)
                    continue
                m = j - i
            out = self._buf[self._fill : self._fill + m]
            self._last_pulse, clipped = ion_words_to_epos(src[i : i + m], m, self._last_pulse, out)
            if not self._pulses:
                out[:, 9] = 0
                clipped = 0
            self.clipped += int(clipped)
            self._fill += m
            self.n += m
            i += m
            if self._fill == cap or i < n:
                self._flush()

    def _flush(self) -> None:
        if self._fill:
            self._fh.write(self._buf[: self._fill].data)
            self._fill = 0

    def close(self) -> None:
        """Write what is held and buffered."""
        self._emit(self._held)
        self._held = np.zeros((0, 12), "<u4")
        self._flush()
        if self.clipped:
            log.warning("EPOS: %d pulse gaps outside uint32 (or pulse numbers going back) "
                        "were clipped", self.clipped)


def write_epos(path: str | Path, chunks: Iterable[np.ndarray], overwrite: bool = True, *,
               pulses: bool = True, pulse_origin: int = 0) -> int:
    """Stream :data:`ION_DTYPE` chunks to an EPOS file (atomically, volts); return the count.
    ``pulses=False``: the chunks' pulse numbers only group multi-hits (the source had none):
    psl = 0 on every ion, what EPOS means by "not recorded". ``pulse_origin``: the pulse
    number psl[0] counts from (the one before the first pulse counted)."""
    with atomic_output(path, overwrite) as tmp, open(tmp, "wb") as fh:
        w = EposWriter(fh, pulses=pulses, pulse_origin=pulse_origin)
        for ions in chunks:
            w.write(ions)
        w.close()
    return w.n

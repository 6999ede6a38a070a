"""What the interchange formats share: the ion record they read into and write from, atomic output.

Every reader (POS, EPOS, APT, NeXus) yields chunks of :data:`ION_DTYPE`, native little-endian,
one row per detected ion in evaporation order; every writer takes such chunks. A field the file
does not hold is NaN (floats) or 0 (integers) and is left out of :attr:`present`.

``multiplicity`` is the number of ions recorded on the ion's pulse, on *every* ion of the pulse
(the store's convention); the EPOS/APT convention (the count on the first ion, 0 on the others)
is converted at the file boundary by :func:`multiplicity_first_only` and :func:`fill_multiplicity`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

ION_DTYPE = np.dtype(
    [
        ("x", "<f4"),  # reconstructed position, nm
        ("y", "<f4"),
        ("z", "<f4"),
        ("mass", "<f4"),  # mass-to-charge, Da
        ("tof", "<f4"),  # raw time of flight, ns
        ("v_dc", "<f4"),  # specimen DC voltage, V
        ("v_pulse", "<f4"),  # pulse voltage, V
        ("det_x", "<f4"),  # detector position, mm
        ("det_y", "<f4"),
        ("pulse", "<u8"),  # pulse number since run start
        ("multiplicity", "<u4"),  # ions recorded on this ion's pulse (on every ion of the pulse)
    ]
)
"""One ion as the interchange formats see it."""

FLOAT_FIELDS = ("x", "y", "z", "mass", "tof", "v_dc", "v_pulse", "det_x", "det_y")
DEFAULT_CHUNK = 1 << 20


def empty_ions(n: int) -> np.ndarray:
    """``n`` ions with every float NaN and every integer 0 (nothing known yet)."""
    out = np.zeros(n, dtype=ION_DTYPE)
    for f in FLOAT_FIELDS:
        out[f] = np.nan
    return out


class IonRecordCheck:
    """Whether an ion file's records are ions: fed every chunk read, it refuses (one line) a file
    that holds none, or in which more than :attr:`MAX_SHARE` of the records are what no atom
    probe writes: an m/n that is negative, not finite or beyond :attr:`MAX_MASS_DA` (a
    4-column CSV of something else read as hits: 82 of 160 negative), a position that is
    infinite or beyond :attr:`MAX_COORD_NM` (NaN positions are allowed: not reconstructed).

    A file of the right size but the wrong content (random bytes, another format renamed .pos)
    reads as float32 with ~90 % of values outside any of those bounds; real files read ~0 %.
    """

    MAX_MASS_DA = 1.0e4
    MAX_COORD_NM = 1.0e6  # a millimetre: specimens are a few micrometres
    MAX_SHARE = 0.05

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.n = 0
        self.bad = 0
        self.first: tuple[int, str] | None = None  # (ion index, what) of the first bad record

    def add(self, ions: np.ndarray, present: Iterable[str]) -> None:
        present = set(present)
        bad = np.zeros(len(ions), bool)
        if "mass" in present:
            m = ions["mass"]
            bad |= ~((m >= 0) & (m <= self.MAX_MASS_DA))  # NaN compares False: bad
        for f in ("x", "y", "z"):
            if f in present:
                bad |= np.abs(ions[f]) > self.MAX_COORD_NM  # inf too; NaN is not
        nb = int(bad.sum())
        if nb and self.first is None:
            i = int(np.argmax(bad))
            what = ", ".join(f"{f}={float(ions[f][i]):.4g}" for f in ("x", "y", "z", "mass")
                             if f in present)
            self.first = (self.n + i, what)
        self.n += len(ions)
        self.bad += nb

    def check(self) -> None:
        from apt_daq.errors import DataFileError

        if self.n == 0:
            raise DataFileError(f"{self.path}: holds no ions")
        if self.bad > self.MAX_SHARE * self.n and self.first is not None:
            i, what = self.first
            raise DataFileError(
                f"{self.path}: {self.bad} of {self.n} records are not ions (m/n negative, not finite or "
                f"beyond {self.MAX_MASS_DA:g} Da, or a position beyond {self.MAX_COORD_NM:g} nm; "
                f"first at ion {i}: {what}): not this format, or corrupt")


def checked_ions(src, path: str | Path, chunk: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
    """``src.iter(chunk)``'s chunks, then :meth:`IonRecordCheck.check` once all are read."""
    check = IonRecordCheck(path)
    for ions in src.iter(chunk):
        check.add(ions, src.present)
        yield ions
    check.check()


def require_input(path: str | Path) -> Path:
    """``path`` as a Path if it is a readable regular file, else a DataFileError saying which
    it is not: missing, a directory, or another kind of file (a FIFO, a device)."""
    from apt_daq.errors import DataFileError

    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise DataFileError(f"{path}: is a directory, not a data file")
    if path.exists():
        raise DataFileError(f"{path}: is not a regular file")
    raise DataFileError(f"{path}: no such file")


def check_output(out: str | Path, overwrite: bool, inputs: Iterable[str | Path | None] = (),
                 *, new_folders: bool = True) -> Path:
    """``out`` as a Path once it may be written: refused (one line) if it exists without
    ``overwrite``, or if it is one of ``inputs`` (the same file by any name: a link, ``./``),
    which ``--overwrite`` would replace with the output before or while it is read.
    ``new_folders=False`` (export): a folder of ``out`` that does not exist is refused, naming
    it, rather than created (a typo in -o would otherwise make folders, as root anywhere)."""
    from apt_daq.errors import UserError

    out = Path(out)
    if out.is_dir():
        raise UserError(f"{out}: is a directory; -o takes the name of the file to write")
    if not new_folders and not out.absolute().parent.exists():
        raise UserError(f"{out}: cannot write: the folder {out.absolute().parent} does not "
                        "exist (create it first, or give another -o)")
    _check_writable_folder(out)
    if not os.path.lexists(out):
        return out
    for src in inputs:
        if src is not None and _same_file(out, Path(src)):
            raise UserError(f"{out}: is the input {src}; write the output to another file "
                            "(-o): --overwrite would replace the input")
    if not overwrite:
        raise UserError(f"{out}: exists (use --overwrite or another -o)")
    return out


def _check_writable_folder(out: Path) -> None:
    """Refuse (one line, naming ``out``) a target whose folder cannot take a new file: the
    write goes through a temporary file beside it (:func:`atomic_output`), which would
    otherwise fail after the work with that temporary file's name."""
    from apt_daq.errors import UserError

    folder = out.absolute().parent
    while not folder.exists():  # atomic_output creates the missing folders
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{out}: cannot write: {folder} is not a directory")
    try:  # a probe, as the write itself will go (os.access says yes to root on sysfs)
        with tempfile.TemporaryFile(dir=folder, prefix=".apt-daq-probe."):
            pass
    except OSError as e:
        raise UserError(f"{out}: cannot write into {folder}: {e.strerror or e}") from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either missing or unreadable: not provably the same
        return False


@contextlib.contextmanager
def atomic_output(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` only on success.

    A failure (an exception, Ctrl-C) deletes the temporary file, so a reader never sees a file
    written half-way, and an existing ``path`` is left untouched. The temporary file is
    ``.NAME.HOST-PID.XXXXXXXX.part``: one left by a killed process (SIGKILL, power cut) is
    removed by the next write of the same target once that process is gone
    (:func:`clean_stale_parts`).
    """
    from apt_daq.errors import DataFileError

    path = Path(path)
    if path.exists() and not overwrite:
        raise DataFileError(f"{path}: exists (use --overwrite or another -o)")
    clean_stale_parts(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_part_tag()}.", suffix=".part",
                                   dir=path.parent)
    except OSError as e:  # name the user's path, not the temporary file's
        raise DataFileError(f"{path}: cannot write: {e.strerror or e}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file 0600: give it the mode a plain open() would (the old file's,
        # or 0666 less the umask), so colleagues on a shared server can read an export
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _part_tag() -> str:
    return f"{_host_tag()}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, someone else's
        return True
    return True


def clean_stale_parts(path: str | Path) -> list[Path]:
    """Delete the ``.NAME.HOST-PID.XXXXXXXX.part`` files of ``path`` whose process (on this
    host) no longer runs, with a warning each; returns them. A ``.part`` of a live process, or
    written from another host, is left alone; an older apt-daq's ``.NAME.XXXXXXXX.part`` (no
    pid: whether it is still written cannot be told) gets a warning and is left."""
    path = Path(path)
    log = logging.getLogger("apt_daq.io")
    prefix = f".{path.name}."
    ours = re.compile(re.escape(_host_tag()) + r"-(\d+)\.[^.]+")
    try:
        names = sorted(os.listdir(path.parent))
    except OSError:
        return []
    removed = []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".part")):
            continue
        middle = name[len(prefix):-len(".part")]
        part = path.parent / name
        m = ours.fullmatch(middle)
        if m is None:
            if re.fullmatch(r"[a-z0-9_]{8}", middle):
                log.warning("%s: a temporary file of an export or import that did not finish "
                            "(or is still running); delete it if none is", part)
            continue
        pid = int(m.group(1))
        if _pid_alive(pid):
            continue
        try:
            part.unlink()
        except OSError:
            continue
        with contextlib.suppress(OSError):  # a run file's writer lock (import)
            (path.parent / f".{name}.lock").unlink()
        log.warning("%s: removed, left by an export or import that was killed (pid %d no "
                    "longer runs)", part, pid)
        removed.append(part)
    return removed


def group_starts(pulse: np.ndarray) -> np.ndarray:
    """Boolean mask of the first ion of each pulse (ions of one pulse are consecutive)."""
    first = np.ones(len(pulse), dtype=bool)
    if len(pulse) > 1:
        first[1:] = pulse[1:] != pulse[:-1]
    return first


def multiplicity_first_only(pulse: np.ndarray) -> np.ndarray:
    """EPOS/APT ``ions per pulse``: the group size on the first ion of a pulse, 0 on the rest."""
    first = group_starts(pulse)
    starts = np.flatnonzero(first)
    sizes = np.diff(np.append(starts, len(pulse)))
    out = np.zeros(len(pulse), dtype=np.uint32)
    out[starts] = sizes
    return out


def group_sizes(pulse: np.ndarray) -> np.ndarray:
    """The store's multiplicity of a pulse column: on every ion, the size of its run of equal
    pulse numbers."""
    sizes = np.diff(np.append(np.flatnonzero(group_starts(pulse)), len(pulse)))
    return np.repeat(sizes, sizes).astype(np.uint32)


def multiplicity_of_pulses(pulses_of, a: int, b: int, n: int) -> np.ndarray:
    """:func:`group_sizes` of ions ``a:b`` of ``n``, whose pulse numbers ``pulses_of(lo, hi)``
    gives (a file without multiplicities: APT with only pulse/pulseDelta). A pulse group cut by
    ``a`` or ``b`` is followed into the ions around (a wider window until both ends are group
    boundaries), so chunked reading gives what reading the whole file does. Only equality of
    neighbours is used: ``pulses_of`` may count from any origin."""
    pad = 64
    while True:
        lo, hi = max(0, a - pad), min(n, b + pad)
        pulse = pulses_of(lo, hi)
        starts = np.flatnonzero(group_starts(pulse))  # starts[0] == 0: the window's own edge
        if (lo == 0 or np.any((starts > 0) & (starts <= a - lo))) and (
                hi == n or np.any(starts >= b - lo)):
            return group_sizes(pulse)[a - lo : b - lo]
        pad *= 8


def write_first_only(view: np.ndarray, pulse: np.ndarray, i: int, last_pulse: int,
                     open_start: int | None) -> int | None:
    """Write chunk ``i:i+len(pulse)`` of a first-of-pulse multiplicity column (APT
    Multiplicity: the size of each pulse group on its first ion, 0 elsewhere) into ``view``;
    groups may straddle chunks. Returns the start of the group still open (its size is written
    when the next chunk, or the caller at the end, closes it)."""
    k = len(pulse)
    first = np.empty(k, bool)
    first[0] = i == 0 or pulse[0] != last_pulse
    first[1:] = pulse[1:] != pulse[:-1]
    view[i : i + k] = 0
    starts = np.flatnonzero(first) + i
    if open_start is not None and starts.size:
        view[open_start] = starts[0] - open_start
    if starts.size:
        view[starts[:-1]] = np.diff(starts)
        return int(starts[-1])
    return open_start


def fill_multiplicity(ipp: np.ndarray) -> np.ndarray:
    """Inverse of :func:`multiplicity_first_only`: every ion gets its pulse's count.

    An ion with 0 takes the count of the last non-zero ion before it; leading zeros (a file cut
    inside a multi-hit) get 1.
    """
    ipp = np.asarray(ipp)
    nz = ipp > 0
    idx = np.where(nz, np.arange(len(ipp)), -1)
    np.maximum.accumulate(idx, out=idx)
    out = np.ones(len(ipp), dtype=np.uint32)
    ok = idx >= 0
    out[ok] = ipp[idx[ok]]
    return out


PULSES = {
    "file": "the file's own pulse numbers",
    "events": ("not in the file: one per multi-hit event (the file's multiplicity groups), "
               "counted in order; how many pulses lay between events is unknown"),
    "ions": ("not in the file, nor multiplicities: one per ion (its index); which ions "
             "arrived together is unknown"),
}
"""What a reader's ``pulse`` numbers are, by :func:`pulses_from`."""


def pulses_from(present: Iterable[str]) -> str:
    """"file" (the file holds pulse numbers), "events" (only multiplicities: one pulse per
    multi-hit event) or "ions" (neither: one pulse per ion): the key of :data:`PULSES`."""
    have = set(present)
    return "file" if "pulse" in have else "events" if "multiplicity" in have else "ions"


def run_fields(meta: dict) -> set[str] | None:
    """The :data:`ION_DTYPE` fields a run really holds: an imported run's (the file's fields,
    with m/n and positions, which its ion stream always gives), or None (all) for a run
    apt-daq acquired or simulated, or imported before the fields were recorded."""
    fields = (meta.get("imported") or {}).get("fields")
    if fields is None:
        return None
    return set(fields) | {"mass", "x", "y", "z"}


def one_event_per_ion(chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """:data:`ION_DTYPE` chunks with pulse = the running ion index and multiplicity 1: the
    exports of a run whose file recorded neither pulse numbers nor multiplicities (a run
    imported from POS by an older apt-daq has every ion on pulse 0)."""
    i = 0
    for ions in chunks:
        ions = ions.copy()
        ions["pulse"] = np.arange(i, i + len(ions), dtype=np.uint64)
        ions["multiplicity"] = 1
        i += len(ions)
        yield ions


def split_trailing_group(pulse: np.ndarray) -> int:
    """Index where the last pulse group of a chunk starts (the rows to hold back for the next)."""
    if len(pulse) == 0:
        return 0
    starts = np.flatnonzero(group_starts(pulse))
    return int(starts[-1])


# ---------------------------------------------------------------------------- run -> ions


def run_ions(reader, chunk: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
    """Stream a run's /hits and /derived as :data:`ION_DTYPE` chunks (bounded memory).

    Positions come from /derived x, y, z when they are all finite; otherwise the pipeline's
    streaming reconstruction (:func:`reconstructor_for`) computes them chunk by chunk.
    """
    from apt_daq.errors import DataFileError

    n = reader.count("hits")
    if reader.count("derived") != n:
        raise DataFileError(
            f"{reader.path}: /derived has {reader.count('derived')} rows but /hits has {n}: "
            "the run was not processed to the end"
        )
    rec = None if derived_positions_finite(reader) else reconstructor_for(reader)
    for i in range(0, n, chunk):
        hits = reader.read("hits", i, min(i + chunk, n))
        der = reader.read("derived", i, min(i + chunk, n))
        out = np.empty(len(hits), dtype=ION_DTYPE)
        for f in ("tof", "v_dc", "v_pulse", "det_x", "det_y", "pulse"):
            out[f] = hits[f]
        out["multiplicity"] = hits["multiplicity"]
        out["mass"] = der["mass"]
        if rec is None:
            out["x"], out["y"], out["z"] = der["x"], der["y"], der["z"]
        elif rec == "zeros":
            out["x"] = out["y"] = out["z"] = 0.0
        else:
            out["x"], out["y"], out["z"] = rec.process(hits)
        yield out


def derived_positions_finite(reader) -> bool:
    """True if every /derived x, y, z is finite (a reconstructed run)."""
    for d in reader.iter("derived"):
        if not (np.isfinite(d["x"]).all() and np.isfinite(d["y"]).all()
                and np.isfinite(d["z"]).all()):
            return False
    return True


def reconstructor_for(reader):
    """The pipeline's streaming Reconstructor configured from the run (its instrument, the
    analysis.reconstruction config and the specimen's k_f and xi), or "zeros" with a warning
    when the run has no instrument to reconstruct with."""
    import logging

    inst = reader.instrument
    if inst is None:
        logging.getLogger("apt_daq.io").warning(
            "%s: no reconstructed positions and no instrument to reconstruct with: x, y, z "
            "exported as 0", reader.path)
        return "zeros"
    from apt_daq.pipeline.reconstruction import Reconstructor

    rf = reader.run_file
    if rf is None:
        return Reconstructor(inst)
    rc = rf.analysis.reconstruction
    return Reconstructor(inst, rc, k_f=rc.field_factor or rf.specimen.field_factor,
                         xi=rc.image_compression or rf.specimen.image_compression)

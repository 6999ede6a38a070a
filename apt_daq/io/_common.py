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
import os
import tempfile
from collections.abc import Iterator
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


@contextlib.contextmanager
def atomic_output(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` only on success.

    A failure (an exception, Ctrl-C) deletes the temporary file, so a reader never sees a file
    written half-way, and an existing ``path`` is left untouched.
    """
    from apt_daq.errors import DataFileError

    path = Path(path)
    if path.exists() and not overwrite:
        raise DataFileError(f"{path}: exists (use --overwrite or another -o)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


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


def split_trailing_group(pulse: np.ndarray) -> int:
    """Index where the last pulse group of a chunk starts (the rows to hold back for the next)."""
    if len(pulse) == 0:
        return 0
    starts = np.flatnonzero(group_starts(pulse))
    return int(starts[-1])


# ---------------------------------------------------------------------------- run -> ions


def _reconstructor(reader):  # pragma: no cover - depends on the pipeline helper's module
    """The pipeline's reconstruction for this run, or None if it is not available."""
    try:
        from apt_daq.analysis import reconstruction
    except ImportError:
        return None
    return reconstruction


def run_ions(reader, chunk: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
    """Stream a run's /hits and /derived as :data:`ION_DTYPE` chunks (bounded memory).

    Positions come from /derived x, y, z when they are finite; otherwise from the pipeline's
    reconstruction (:func:`positions_for_export`).
    """
    from apt_daq.errors import DataFileError

    n = reader.count("hits")
    if reader.count("derived") != n:
        raise DataFileError(
            f"{reader.path}: /derived has {reader.count('derived')} rows but /hits has {n}: "
            "the run was not processed to the end (run `apt-daq analyze` first)"
        )
    xyz = positions_for_export(reader)
    for i in range(0, n, chunk):
        hits = reader.read("hits", i, min(i + chunk, n))
        der = reader.read("derived", i, min(i + chunk, n))
        out = np.empty(len(hits), dtype=ION_DTYPE)
        for f in ("tof", "v_dc", "v_pulse", "det_x", "det_y", "pulse"):
            out[f] = hits[f]
        out["multiplicity"] = hits["multiplicity"]
        out["mass"] = der["mass"]
        if xyz is None:
            out["x"], out["y"], out["z"] = der["x"], der["y"], der["z"]
        else:
            out["x"], out["y"], out["z"] = (xyz[k][i : i + len(hits)] for k in range(3))
        yield out


def positions_for_export(reader) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """None if /derived x, y, z are all finite (use them); else reconstructed x, y, z in nm.

    Uses the pipeline's reconstruction when it is available; without it the positions are
    zeros, behind a warning, so that POS/EPOS still carry the mass spectrum.
    """
    import logging

    n = reader.count("derived")
    finite = True
    for d in reader.iter("derived"):
        if not (np.isfinite(d["x"]).all() and np.isfinite(d["y"]).all()
                and np.isfinite(d["z"]).all()):
            finite = False
            break
    if finite:
        return None
    rec = _reconstructor(reader)
    if rec is not None and hasattr(rec, "reconstruct_run"):
        x, y, z = rec.reconstruct_run(reader)
        return (np.asarray(x, np.float32), np.asarray(y, np.float32), np.asarray(z, np.float32))
    logging.getLogger("apt_daq.io").warning(
        "%s: /derived has no reconstructed positions and no reconstruction is available: "
        "x, y, z exported as 0", reader.path)
    zeros = np.zeros(n, np.float32)
    return zeros, zeros, zeros

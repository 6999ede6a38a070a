"""EPOS throughput: our streaming writer and memory-mapped reader against baselines measured on
the same bytes in the same run: ``np.ndarray.tofile`` / ``np.fromfile`` of the big-endian
records (no conversion at all: what the disk and page cache give), and the independent reader
ifes-apt-tc-data-modeling (its per-column memory-mapped getters) when it is installed.

GB/s count EPOS bytes (44 per ion). Our reader's figure includes the full conversion to native
byte order, pulse numbers and multiplicities (:data:`ION_DTYPE` chunks); our writer's the
conversion from :data:`ION_DTYPE` chunks (byte swap, psl and ipp) and the atomic rename. Each
write, ours and the baseline's, makes a new file: the previous one is removed untimed (freeing
its pages is the file system's cost, not the writer's, and would land on either at random).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from apt_daq.bench import Result, best_time_s, result


def _ions(n: int) -> np.ndarray:
    from apt_daq.io._common import ION_DTYPE

    rng = np.random.default_rng(0)
    a = np.zeros(n, ION_DTYPE)
    for f in ("x", "y", "z", "mass", "det_x", "det_y"):
        a[f] = rng.random(n, np.float32) * 100
    a["v_dc"] = 3000 + rng.random(n, np.float32) * 5000
    a["tof"] = 0.1 * np.sqrt(a["mass"] / (1.9297e-10 * a["v_dc"]))
    gaps = rng.geometric(0.01, n).astype(np.uint64)
    gaps[rng.random(n) < 0.05] = 0
    a["pulse"] = np.cumsum(gaps)
    a["multiplicity"] = 1
    return a


def run(quick: bool = False) -> list[Result]:
    from apt_daq.io.epos import EPOS_DTYPE, EposFile, write_epos

    n = 200_000 if quick else 5_000_000
    chunk = 1 << 18  # 12 MB of ions: buffers the allocator reuses
    repeat = 2 if quick else 4
    ions = _ions(n)
    gb = n * EPOS_DTYPE.itemsize / 1e9
    out: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="apt-daq-bench-io-") as d:
        path = Path(d) / "bench.epos"
        parts = [ions[i : i + chunk] for i in range(0, n, chunk)]
        write_epos(path, parts)  # warm-up (numba compile, page cache)
        raw = np.fromfile(path, EPOS_DTYPE)
        base_path = Path(d) / "base.epos"
        t_w = best_time_s(lambda: write_epos(path, parts), repeat, setup=path.unlink)
        t_bw = best_time_s(lambda: raw.tofile(base_path), repeat,
                           setup=lambda: base_path.unlink(missing_ok=True))
        out.append(
            result(
                "EPOS write (ions -> file)",
                gb / t_w,
                "GB/s",
                gb / t_bw,
                f"{n} ions in chunks of {chunk}; baseline ndarray.tofile of the same records "
                "(no conversion, one write)",
            )
        )

        def read_ours() -> None:
            for _ in EposFile(path).iter(chunk):
                pass

        read_ours()
        t_r = best_time_s(read_ours, repeat)
        t_br = best_time_s(lambda: np.fromfile(path, EPOS_DTYPE), repeat)
        out.append(
            result(
                "EPOS read (file -> ions)",
                gb / t_r,
                "GB/s",
                gb / t_br,
                "baseline np.fromfile of the big-endian records, no conversion",
            )
        )
        try:
            from ifes_apt_tc_data_modeling.epos.epos_reader import ReadEposFileFormat
        except ImportError:
            return out

        def read_ifes() -> None:
            r = ReadEposFileFormat(str(path))
            for get in (
                r.get_reconstructed_positions,
                r.get_mass_to_charge_state_ratio,
                r.get_raw_time_of_flight,
                r.get_standing_voltage,
                r.get_pulse_voltage,
                r.get_hit_positions,
                r.get_number_of_pulses,
                r.get_ions_per_pulse,
            ):
                get()

        t_i = best_time_s(read_ifes, max(1, repeat // 2))
        out.append(
            result(
                "EPOS read vs ifes-apt-tc-data-modeling",
                gb / t_r,
                "GB/s",
                gb / t_i,
                "baseline: the independent reader, all 11 fields, same file",
            )
        )
    return out

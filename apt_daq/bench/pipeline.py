"""Pipeline throughput: each numba kernel beside the same arithmetic in plain numpy, same run.

Entries (all "pipeline ..."):
- decode + m/n + corrections + ranging (the fused per-chunk kernel, one core), hits/s;
- the same kernel's input bytes/s beside a plain copy (``np.copyto``, a memcpy) of its input
  array, GB/s: how near the memory limit it runs. Its input is the raw record, 40 B per hit
  (RAW_DTYPE: all of it crosses the memory bus, as the fields it reads interleave), so the
  ratio is the copy's time over the kernel's on the same bytes; the issue's "~20 B per hit"
  accounting gives half that ratio (in the note);
- the kernel's memory traffic, the record read plus every output column written per hit (from
  the dtypes), beside the copy's read plus write (:func:`traffic_results`);
- ranging by the lookup table against the binary search per hit, same m/n;
- the same on 2 threads (prange over slices) against 1 thread;
- process_chunk as the run engine calls it (fused kernel + assembling HIT/DERIVED records);
- Bas reconstruction and FDA block counting of large arrays, ions/s.
"""

from __future__ import annotations

import numpy as np

from apt_daq.bench import Result, best_time_s, result
from apt_daq.config import InstrumentConfig
from apt_daq.hits import RAW_DTYPE
from apt_daq.pipeline.corrections import Calibration, voltage_factor
from apt_daq.pipeline.decode import time_sum_bins, time_sum_tolerance_bins
from apt_daq.pipeline.process import _args, fused_kernel, fused_parallel, process_chunk
from apt_daq.pipeline.ranging import RangeLookup, ranges_for_ions
from apt_daq.pipeline.tof import flight_time_ns, mass_da

IONS = ["Li+", "O+", "O2+", "LiO+", "Ni+", "Ni2+", "Co+", "Co2+", "Mn+", "Mn2+", "NiO+", "CoO+",
        "MnO+", "Cr+", "Cr2+", "CrO+", "Ga+"]  # fmt: skip


def synthetic_raw(n: int, inst: InstrumentConfig, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mass = rng.choice([7.016, 15.995, 31.99, 57.935, 28.968, 58.933, 27.469, 73.93], n)
    r = 38 * np.sqrt(rng.random(n))
    phi = rng.uniform(0, 2 * np.pi, n)
    x, y = r * np.cos(phi), r * np.sin(phi)
    v = np.full(n, 6000.0)
    t = flight_time_ns(mass, v, inst.flight_path_mm, x, y) + rng.exponential(0.3, n)
    b, d, s = inst.tdc_bin_ns, inst.delay_line_offset_ns, inst.signal_velocity_mm_per_ns
    raw = np.zeros(n, RAW_DTYPE)
    raw["pulse"] = np.cumsum(rng.geometric(0.005, n))
    raw["t_mcp"] = np.round(t / b)
    raw["t_x1"] = np.round((t + d + x / s) / b)
    raw["t_x2"] = np.round((t + d - x / s) / b)
    raw["t_y1"] = np.round((t + d + y / s) / b)
    raw["t_y2"] = np.round((t + d - y / s) / b)
    raw["t_x2"][rng.random(n) < 0.02] = -1
    raw["v_dc"] = v
    return raw


def numpy_pipeline(raw, inst, cal, lo, hi):
    """The same arithmetic as the fused kernel, vectorised numpy."""
    a, b, c, d, m = (raw[f].astype(np.int64) for f in ("t_x1", "t_x2", "t_y1", "t_y2", "t_mcp"))
    s, tol = time_sum_bins(inst), time_sum_tolerance_bins(inst)
    ok = (a >= 0) & (b >= 0) & (c >= 0) & (d >= 0) & (m >= 0)
    ok &= (np.abs(a + b - 2 * m - s) <= tol) & (np.abs(c + d - 2 * m - s) <= tol)
    keep = np.flatnonzero(ok)
    half = 0.5 * inst.tdc_bin_ns * inst.signal_velocity_mm_per_ns
    x = (a[keep] - b[keep]) * half
    y = (c[keep] - d[keep]) * half
    t = m[keep] * inst.tdc_bin_ns
    v = raw["v_dc"][keep].astype(np.float64) + raw["v_pulse"][keep]
    mass = mass_da.py_func(t, x, y, v, inst.t0_ns, inst.flight_path_mm)  # the one m/n, numpy
    bc = cal.bc
    xs, ys = x / 10, y / 10
    f = voltage_factor(cal.vc, v) * (bc[0] + bc[1] * xs + bc[2] * ys + bc[3] * xs * xs
                                  + bc[4] * xs * ys + bc[5] * ys * ys)  # fmt: skip
    mass /= f
    j = np.searchsorted(lo, mass, side="right") - 1
    ion = np.where((j >= 0) & (mass < hi[np.clip(j, 0, None)]), j, -1).astype(np.int16)
    return keep, x.astype(np.float32), y.astype(np.float32), mass.astype(np.float32), ion


def run(quick: bool = False) -> list[Result]:
    inst = InstrumentConfig()
    n = 1_000_000 if quick else 20_000_000
    raw = synthetic_raw(n, inst)
    ranges = ranges_for_ions(IONS)
    lookup = RangeLookup.build(ranges)
    cal = Calibration((0.998, 0.0005, -1e-5), (1.0, 1e-4, -1e-4, 2e-4, 0.0, 2e-4))
    args = _args(inst, cal, lookup)
    outs = (np.empty(n, np.int64), np.empty(n, np.float32), np.empty(n, np.float32),
            np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.int16))  # fmt: skip
    fused_kernel(raw[:100], *args, *outs)  # compile / load cache
    repeat = 3 if quick else 5
    t_nb, t_cp = kernel_and_copy_s(raw, lambda: fused_kernel(raw, *args, *outs), repeat)
    t_np = best_time_s(
        lambda: numpy_pipeline(raw, inst, cal, lookup.lo, lookup.hi), 2 if quick else 3
    )
    out = [result("pipeline decode+m/n+corrections+ranging (1 core)", n / t_nb, "hits/s", n / t_np,
                  "fused numba kernel vs vectorised numpy; >= 5x and >= 2e8 hits/s targeted")]  # fmt: skip
    out += traffic_results(n, t_nb, t_cp, outs)
    out.append(lookup_result(quick, repeat))
    counts = np.zeros((2, 3), np.int64)
    fused_parallel(raw, *args, 2, *outs, counts)
    t_par = best_time_s(lambda: fused_parallel(raw, *args, 2, *outs, counts), repeat)
    out.append(result("pipeline decode+m/n+corrections+ranging (2 threads)", n / t_par, "hits/s",
                      n / t_nb, "prange over 2 slices vs 1 core"))  # fmt: skip
    out.append(machine_traffic_result(raw, t_par, repeat))
    process_chunk(raw[:1000], inst, ranges, calibration=cal, lookup=lookup)
    t_pc = best_time_s(
        lambda: process_chunk(raw, inst, ranges, calibration=cal, lookup=lookup), repeat
    )
    out.append(result("pipeline process_chunk (records assembled, 1 core)", n / t_pc, "hits/s",
                      n / t_np, "vs the numpy arithmetic alone"))  # fmt: skip

    # reconstruction
    from apt_daq.pipeline.reconstruction import bas_kernel

    m = n
    rng = np.random.default_rng(1)
    dx, dy = rng.uniform(-30, 30, (2, m)).astype(np.float32)
    vv = np.linspace(4000, 9000, m)
    xo, yo, zo = (np.empty(m, np.float32) for _ in range(3))
    area = np.pi * 40.0**2
    rec = (dx, dy, vv, 100.0, 3.3, 28.0, 1.65, 0.0094, area, 0.8, 0.0, 0, xo, yo, zo)
    bas_kernel(*(a[:10] if isinstance(a, np.ndarray) else a for a in rec))

    def numpy_bas():
        r = vv / (3.3 * 28.0)
        x = dx * 1.65 * r / 100.0
        y = dy * 1.65 * r / 100.0
        dz = 0.0094 * 100.0**2 * (3.3 * 28.0) ** 2 / (area * 0.8 * 1.65**2 * vv * vv)
        z = np.cumsum(dz) + r * (1 - np.sqrt(1 - np.minimum((x * x + y * y) / (r * r), 1)))
        return x, y, z

    t_rb = best_time_s(lambda: bas_kernel(*rec), repeat)
    t_rn = best_time_s(numpy_bas, 2 if quick else 3)
    out.append(result("pipeline Bas reconstruction", m / t_rb, "ions/s", m / t_rn,
                      f"{m:.0e} ions: {t_rb:.2f} s numba vs {t_rn:.2f} s numpy"))  # fmt: skip
    # FDA block counts
    from apt_daq.analysis.fda import block_counts_kernel, fda

    seq = (rng.random(m) < 0.25).astype(np.uint8)
    block_counts_kernel(seq[:1000], 100)
    t_fb = best_time_s(lambda: fda(seq, 100), repeat)
    t_fn = best_time_s(
        lambda: seq[: m // 100 * 100].reshape(-1, 100).sum(axis=1), 2 if quick else 3
    )
    out.append(result("pipeline FDA (blocks of 100)", m / t_fb, "ions/s", m / t_fn,
                      "numba block counts + chi2 vs numpy reshape-sum alone"))  # fmt: skip
    out.append(autorange_result(quick))
    return out


FUSED_READS = ("t_x1", "t_x2", "t_y1", "t_y2", "t_mcp", "v_dc", "v_pulse")
"""The raw record's fields the fused kernel reads (``pulse`` and ``laser_pj`` it does not)."""


def traffic_results(n: int, t_nb: float, t_cp: float, outs: tuple) -> list[Result]:
    """The fused kernel's bytes beside np.copyto of the raw records, same run, two ways:

    - input: the 40-byte raw record per hit (RAW_DTYPE: all of it crosses the memory bus, the
      fields interleave) over the kernel's time, beside the copy's bytes over its time; the
      issue's "~20 B per hit" accounting gives the ratio scaled by 20/40 (in the note);
    - traffic: bytes read (the record) plus bytes written (every output column's itemsize,
      per hit: the kept records are written, the rare dropped one is not) per hit, beside
      the copy's read + write (2 x 40 B per hit): what the memory bus carries.
    The bytes come from the dtypes, not from constants."""
    rec = RAW_DTYPE.itemsize
    used = sum(RAW_DTYPE.fields[f][0].itemsize for f in FUSED_READS)
    written = sum(a.dtype.itemsize for a in outs)
    gb = 1e9
    return [
        result("pipeline fused kernel bytes/s vs memcpy (1 core)", n * rec / t_nb / gb, "GB/s",
               n * rec / t_cp / gb,
               f"input {rec} B/hit (the raw record; {used} B of its fields read) over the "
               f"kernel's time, beside np.copyto of the same {n * rec / 1e6:.0f} MB; at the "
               f"issue's 20 B/hit accounting the ratio is {20 * t_cp / (rec * t_nb):.3f}, at "
               f"the {used} B read {used * t_cp / (rec * t_nb):.3f}; >= 0.2 targeted"),
        result("pipeline fused kernel memory traffic vs memcpy (1 core)",
               n * (rec + written) / t_nb / gb, "GB/s", n * 2 * rec / t_cp / gb,
               f"read {rec} B + written {written} B per hit ({' + '.join(str(a.dtype) for a in outs)}"
               f" columns) over the kernel's time, beside np.copyto's read + write of the same "
               f"records ({2 * rec} B per hit)"),
    ]  # fmt: skip


def machine_traffic_result(raw: np.ndarray, t_par: float, repeat: int) -> Result:
    """The 2-thread kernel's input bytes beside the machine's copy bandwidth: np.copyto of the
    same bytes in two halves on two threads at once (numpy releases the GIL for the copy), so
    both sides use every core of this 2-core machine."""
    from concurrent.futures import ThreadPoolExecutor

    src = raw.view(np.uint8)
    dst = np.empty_like(src)
    half = src.size // 2
    parts = ((src[:half], dst[:half]), (src[half:], dst[half:]))
    with ThreadPoolExecutor(2) as pool:

        def copy2() -> None:
            list(pool.map(lambda p: np.copyto(p[1], p[0]), parts))

        copy2()
        t_cp2 = best_time_s(copy2, repeat)
    rec, n = RAW_DTYPE.itemsize, len(raw)
    return result("pipeline fused kernel bytes/s vs memcpy (2 threads)", n * rec / t_par / 1e9,
                  "GB/s", n * rec / t_cp2 / 1e9,
                  f"the 2-thread kernel's input, {rec} B/hit, beside np.copyto of the same "
                  f"{n * rec / 1e6:.0f} MB in two halves on two threads; at the issue's 20 B/hit "
                  f"the ratio is {20 * t_cp2 / (rec * t_par):.3f}; >= 0.2 targeted")  # fmt: skip


def kernel_and_copy_s(raw: np.ndarray, kernel, repeat: int) -> tuple[float, float]:
    """Best times of ``kernel()`` and of np.copyto of ``raw``'s bytes, timed alternately (the
    machine's load falls on both)."""
    src = raw.view(np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    t_nb = t_cp = float("inf")
    for _ in range(3):
        t_nb = min(t_nb, best_time_s(kernel, repeat))
        t_cp = min(t_cp, best_time_s(lambda: np.copyto(dst, src), repeat))
    return t_nb, t_cp


def lookup_result(quick: bool, repeat: int) -> Result:
    """Ranging of NMC811-like m/n by the lookup table (edge cells by search) against the
    binary search per m/n, the same answers (checked)."""
    from apt_daq.pipeline.ranging import range_bucket_kernel, range_kernel

    n = 1_000_000 if quick else 10_000_000
    mass = synthetic_masses(n)
    lk = RangeLookup.build(ranges_for_ions(IONS))
    a, b = np.empty(n, np.int16), np.empty(n, np.int16)
    range_bucket_kernel(mass, lk.lo, lk.hi, lk.table, lk.inv_width, a)
    range_kernel(mass, lk.lo, lk.hi, b)
    if not np.array_equal(a, b):
        raise AssertionError("ranging by table differs from the search")
    t_lut = best_time_s(lambda: range_bucket_kernel(mass, lk.lo, lk.hi, lk.table, lk.inv_width, a),
                        repeat)
    t_s = best_time_s(lambda: range_kernel(mass, lk.lo, lk.hi, b), repeat)
    return result("pipeline ranging by lookup table (1 core)", n / t_lut, "ions/s", n / t_s,
                  f"{len(lk.lo)} ranges, cells of {1 / lk.inv_width:.4g} Da, "
                  f"{np.mean(lk.table == -2):.1%} of cells at an edge; baseline binary search "
                  "per m/n, same answers")  # fmt: skip


def synthetic_masses(n: int, seed: int = 2) -> np.ndarray:
    """m/n of ``n`` ions: the NMC811 ion list with every isotopologue (natural abundances), a
    resolving power of ~1000 at FWHM, and 5 % background flat in time of flight."""
    from apt_daq.isotopes import isotopologues, parse_ion

    rng = np.random.default_rng(seed)
    peaks = [(m, p) for ion in IONS for m, p in isotopologues(*parse_ion(ion))]
    mu = np.array([m for m, _ in peaks])
    w = np.array([p for _, p in peaks])
    idx = rng.choice(len(mu), n, p=w / w.sum())
    mass = mu[idx] * (1 + rng.normal(0, 1 / 2355.0, n))
    bg = rng.random(n) < 0.05
    mass[bg] = rng.uniform(np.sqrt(1.0), np.sqrt(120.0), int(bg.sum())) ** 2
    return mass.astype(np.float32)


def autorange_result(quick: bool = False) -> Result:
    """Ranging with no input (issue target: 7.7 M ions in < 10 s on one core, rangefinder's
    figure), beside numpy's histogram of the same m/n (the least any ranger does per ion)."""
    import time

    from apt_daq.pipeline.autorange import autorange

    n = 1_000_000 if quick else 7_700_000
    mass = synthetic_masses(n)
    autorange(mass[:200_000])  # compile / load the kernel cache, build the candidate table
    t0 = time.perf_counter()
    res = autorange(mass)
    t_ar = time.perf_counter() - t0
    t_np = best_time_s(lambda: np.histogram(mass, bins=20_000, range=(0.5, 250.0)),
                       2 if quick else 3)
    found = sorted({r.ion for r in res.ranges})
    return result("pipeline autorange (no input, 1 core)", n / t_ar, "ions/s", n / t_np,
                  f"{n / 1e6:.1f} M ions in {t_ar:.2f} s, {len(found)} ions named; baseline "
                  "np.histogram of the same m/n")

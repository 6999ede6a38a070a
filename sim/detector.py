"""The LEAP's delay-line detector: projection, efficiency, dead time/zone, jitter, background
and the delay-line signal times that the pipeline decodes.

Projection (Bas et al. 1995 point projection, the inverse of the reconstruction):
    X_D [mm] = x0 [nm] * L [mm] / (xi R [nm]),  Y_D likewise; hits beyond the detector radius
    are lost. A small Gaussian blur stands for trajectory aberrations.
Timing (shared contract):
    t_hit = t0 + t_dep + L_eff[m] sqrt(m/n / (K V)) + jitter,
    L_eff^2 = L^2 + X_D^2 + Y_D^2: the inverse of the pipeline's one m/n kernel
    (:func:`apt_daq.tof.flight_time_one`, with its constant K = 1.9297e-10).
Delay lines (shared contract): t_mcp = round(t / bin); t_x1 = round((t + D + x / v) / bin),
    t_x2 = round((t + D - x / v) / bin); y likewise.
Dead time/zone: two hits of one pulse closer than ``dead_time_ns`` in time and
``dead_zone_mm`` in space give one record; the later one is lost.
"""

from __future__ import annotations

import math

import numpy as np
from apt_daq.sim.sampling import counter_uniform
from numba import njit

from apt_daq.config import InstrumentConfig
from apt_daq.hits import RAW_DTYPE, TRUTH_DTYPE
from apt_daq.tof import K_DA, flight_time_one

BLUR_MM = 0.15  # rms trajectory aberration on the detector, mm (assumed)


@njit(cache=True)
def project_and_time(x0: np.ndarray, y0: np.ndarray, mass: np.ndarray, t_dep: np.ndarray,
                     volts: np.ndarray, mag_mm_per_nm: float, flight_path_mm: float,
                     t0_ns: float, jitter_ns: float, blur_mm: float, normals: np.ndarray):
    """Detector position (mm) and arrival time (ns) of each ion. ``normals``: (n, 3) N(0, 1)."""
    n = x0.shape[0]
    dx = np.empty(n, np.float64)
    dy = np.empty(n, np.float64)
    t = np.empty(n, np.float64)
    for i in range(n):
        xd = x0[i] * mag_mm_per_nm + blur_mm * normals[i, 0]
        yd = y0[i] * mag_mm_per_nm + blur_mm * normals[i, 1]
        v = volts[i]
        tof = flight_time_one(mass[i], v, flight_path_mm, xd, yd) if v > 0 else 1e9
        dx[i] = xd
        dy[i] = yd
        t[i] = t0_ns + t_dep[i] + tof + jitter_ns * normals[i, 2]
    return dx, dy, t


@njit(cache=True)
def detect_mask(pulse: np.ndarray, det_x: np.ndarray, det_y: np.ndarray, t_ns: np.ndarray,
                neutral: np.ndarray, u_eff: np.ndarray, efficiency: float, radius_mm: float,
                dead_time_ns: float, dead_zone_mm: float) -> np.ndarray:
    """1 for ions that give a record: charged, inside the detector, detected (efficiency), and
    not shadowed by an earlier hit of the same pulse within the dead time and dead zone.
    Ions must come in pulse order (any order within a pulse)."""
    n = pulse.shape[0]
    keep = np.zeros(n, np.uint8)
    r2 = radius_mm * radius_mm
    for i in range(n):
        if neutral[i] == 0 and u_eff[i] < efficiency and \
                det_x[i] * det_x[i] + det_y[i] * det_y[i] <= r2:
            keep[i] = 1
    i = 0
    dz2 = dead_zone_mm * dead_zone_mm
    while i < n:
        j = i + 1
        while j < n and pulse[j] == pulse[i]:
            j += 1
        if j - i > 1:
            # same pulse, in arrival order: a hit within the dead time and dead zone of an
            # earlier recorded hit is lost
            order = np.argsort(t_ns[i:j]) + i
            for ia in range(1, j - i):
                a = order[ia]
                if keep[a] == 0:
                    continue
                for ib in range(ia):
                    b = order[ib]
                    if keep[b] == 0:
                        continue
                    if t_ns[a] - t_ns[b] < dead_time_ns:
                        ex = det_x[a] - det_x[b]
                        ey = det_y[a] - det_y[b]
                        if ex * ex + ey * ey < dz2:
                            keep[a] = 0
                            break
        i = j
    return keep


@njit(cache=True)
def encode_delay_line(t_ns: np.ndarray, x_mm: np.ndarray, y_mm: np.ndarray, bin_ns: float,
                      offset_ns: float, velocity_mm_per_ns: float) -> np.ndarray:
    """Delay-line signal times in TDC bins, shape (n, 5): x1, x2, y1, y2, mcp."""
    n = t_ns.shape[0]
    out = np.empty((n, 5), np.int32)
    for i in range(n):
        t = t_ns[i]
        sx = x_mm[i] / velocity_mm_per_ns
        sy = y_mm[i] / velocity_mm_per_ns
        out[i, 0] = math.floor((t + offset_ns + sx) / bin_ns + 0.5)
        out[i, 1] = math.floor((t + offset_ns - sx) / bin_ns + 0.5)
        out[i, 2] = math.floor((t + offset_ns + sy) / bin_ns + 0.5)
        out[i, 3] = math.floor((t + offset_ns - sy) / bin_ns + 0.5)
        out[i, 4] = math.floor(t / bin_ns + 0.5)
    return out


@njit(cache=True, nogil=True)
def detect_seeded(seed: np.uint64, pulse: np.ndarray, x0: np.ndarray, y0: np.ndarray,
                  mass: np.ndarray, t_dep: np.ndarray, volts: np.ndarray, neutral: np.ndarray,
                  mag_mm_per_nm: float, flight_path_mm: float, t0_ns: float, jitter_ns: float,
                  blur_mm: float, efficiency: float, radius_mm: float, dead_time_ns: float,
                  dead_zone_mm: float):
    """Projection, timing and the detection mask, with random numbers from the counter
    generator (normals as scaled sums of four uniforms: no transcendental functions)."""
    n = x0.shape[0]
    normals = np.empty((n, 3))
    u_eff = np.empty(n)
    for i in range(n):
        for j in range(3):  # sum of 4 uniforms, scaled to unit variance (CLT; |z| < 3.46)
            acc = 0.0
            for m in range(4):
                acc += counter_uniform(seed, i, 4 * j + m)
            normals[i, j] = (acc - 2.0) * 1.7320508075688772
        u_eff[i] = counter_uniform(seed, i, 12)
    dx, dy, t = project_and_time(x0, y0, mass, t_dep, volts, mag_mm_per_nm, flight_path_mm,
                                 t0_ns, jitter_ns, blur_mm, normals)
    keep = detect_mask(pulse, dx, dy, t, neutral, u_eff, efficiency, radius_mm, dead_time_ns,
                       dead_zone_mm)
    return dx, dy, t, keep


@njit(cache=True)
def record_order(pulse: np.ndarray, t_ns: np.ndarray, n_first: int) -> np.ndarray:
    """Order of records: by pulse, then arrival time. ``pulse[:n_first]`` and
    ``pulse[n_first:]`` are each sorted by pulse (ions, background): merged in O(n), then each
    pulse's few hits sorted by time."""
    n = pulse.shape[0]
    order = np.empty(n, np.int64)
    i, j, k = 0, n_first, 0
    while i < n_first or j < n:
        if j >= n or (i < n_first and pulse[i] <= pulse[j]):
            order[k] = i
            i += 1
        else:
            order[k] = j
            j += 1
        k += 1
    a = 0
    while a < n:
        b = a + 1
        while b < n and pulse[order[b]] == pulse[order[a]]:
            b += 1
        for c in range(a + 1, b):  # insertion sort of one pulse's hits by time
            cur = order[c]
            d = c - 1
            while d >= a and t_ns[order[d]] > t_ns[cur]:
                order[d + 1] = order[d]
                d -= 1
            order[d + 1] = cur
        a = b
    return order


class Detector:
    """The detector of one instrument configuration (stateless; randomness passed in)."""

    def __init__(self, instrument: InstrumentConfig):
        self.cfg = instrument
        self.radius_mm = instrument.detector_diameter_mm / 2.0

    def magnification_mm_per_nm(self, radius_nm: float, image_compression: float) -> float:
        """det [mm] per specimen [nm]: L / (xi R) (Bas et al. point projection)."""
        return self.cfg.flight_path_mm / (image_compression * radius_nm)

    def window_ns(self, volts: float, max_mass_da: float = 250.0) -> float:
        """The acquisition window after each pulse: the flight time of ``max_mass_da``."""
        c = self.cfg
        leff = math.hypot(c.flight_path_mm, self.radius_mm) * 1e-3
        return c.t0_ns + leff * math.sqrt(max_mass_da / (K_DA * max(volts, 100.0)))

    def background(self, rng: np.random.Generator, first_pulse: int, n_pulses: int,
                   volts: float, n: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Uniform background (dark counts, uncorrelated field evaporation): pulses, t, x, y.
        ``n``: the count, if :meth:`background_count` already drew it from ``rng``."""
        w = self.window_ns(volts)
        if n is None:
            n = self.background_count(rng, n_pulses, volts)
        pulses = np.sort(rng.integers(0, n_pulses, n)) + first_pulse if n else np.zeros(0, int)
        t = rng.random(n) * w
        r = self.radius_mm * np.sqrt(rng.random(n))
        ph = 2 * np.pi * rng.random(n)
        return pulses.astype(np.int64), t, r * np.cos(ph), r * np.sin(ph)

    def background_count(self, rng: np.random.Generator, n_pulses: int, volts: float) -> int:
        """The number of background hits in ``n_pulses`` pulses (Poisson): the first draw of
        :meth:`background`."""
        return int(rng.poisson(self.cfg.background_per_ns * self.window_ns(volts) * n_pulses))

    def records(self, pulse: np.ndarray, t_ns: np.ndarray, x_mm: np.ndarray, y_mm: np.ndarray,
                v_dc: np.ndarray, laser_pj: float) -> np.ndarray:
        """RAW_DTYPE records of hits (already in record order)."""
        c = self.cfg
        sig = encode_delay_line(np.ascontiguousarray(t_ns, np.float64),
                                np.ascontiguousarray(x_mm, np.float64),
                                np.ascontiguousarray(y_mm, np.float64), c.tdc_bin_ns,
                                c.delay_line_offset_ns, c.signal_velocity_mm_per_ns)
        raw = np.empty(len(pulse), RAW_DTYPE)
        raw["pulse"] = pulse
        raw["t_x1"] = sig[:, 0]
        raw["t_x2"] = sig[:, 1]
        raw["t_y1"] = sig[:, 2]
        raw["t_y2"] = sig[:, 3]
        raw["t_mcp"] = sig[:, 4]
        raw["v_dc"] = v_dc
        raw["v_pulse"] = 0.0
        raw["laser_pj"] = laser_pj
        return raw


def truth_rows(pulse: np.ndarray, species: np.ndarray, charge: np.ndarray, mass: np.ndarray,
               x0: np.ndarray, y0: np.ndarray, z0: np.ndarray, detected: int) -> np.ndarray:
    out = np.empty(len(pulse), TRUTH_DTYPE)
    out["pulse"] = pulse
    out["species"] = species
    out["charge"] = charge
    out["mass"] = mass
    out["x0"] = x0
    out["y0"] = y0
    out["z0"] = z0
    out["detected"] = detected
    return out


@njit(cache=True, nogil=True)
def assemble_block(e_pulse: np.ndarray, det_x: np.ndarray, det_y: np.ndarray, t_ns: np.ndarray,
                   keep: np.ndarray, e_sp: np.ndarray, e_neu: np.ndarray, e_mass: np.ndarray,
                   e_x: np.ndarray, e_y: np.ndarray, e_z: np.ndarray, charges: np.ndarray,
                   b_pulse: np.ndarray, b_t: np.ndarray, b_x: np.ndarray, b_y: np.ndarray,
                   first: int, n_pulses: int, v0: float, v1: float, laser_pj: float,
                   bin_ns: float, offset_ns: float, velocity_mm_per_ns: float,
                   raw: np.ndarray, truth: np.ndarray, lost: np.ndarray) -> None:
    """Fill one sub-block's RAW and TRUTH rows (record order) and the lost ions' TRUTH rows
    (event order) in one pass, straight into the output arrays.

    Detected ions (``keep``) and background hits (``b_*``, species -1, NaN truth) are merged by
    :func:`record_order`; the DC voltage is interpolated linearly over the sub-block (the HV
    slews); the delay-line times follow the shared contract (:func:`encode_delay_line`). This
    is the fused form of ``record_order`` + ``Detector.records`` + ``truth_rows``.
    """
    n_ev = e_pulse.shape[0]
    n_b = b_pulse.shape[0]
    n_k = raw.shape[0] - n_b
    pulse = np.empty(n_k + n_b, np.int64)
    t_all = np.empty(n_k + n_b, np.float64)
    src = np.empty(n_k, np.int64)
    k = 0
    m = 0
    for i in range(n_ev):
        if keep[i]:
            pulse[k] = e_pulse[i]
            t_all[k] = t_ns[i]
            src[k] = i
            k += 1
        else:
            row = lost[m]
            row.pulse = e_pulse[i] + first
            row.species = e_sp[i]
            row.charge = 0 if e_neu[i] else charges[e_sp[i]]
            row.mass = e_mass[i]
            row.x0 = e_x[i]
            row.y0 = e_y[i]
            row.z0 = e_z[i]
            row.detected = 0
            m += 1
    for j in range(n_b):
        pulse[n_k + j] = b_pulse[j]
        t_all[n_k + j] = b_t[j]
    order = record_order(pulse, t_all, n_k)
    nan = np.float32(np.nan)
    for r in range(n_k + n_b):
        o = order[r]
        rel = pulse[o]
        t = t_all[o]
        if o < n_k:
            i = src[o]
            x = det_x[i]
            y = det_y[i]
        else:
            x = b_x[o - n_k]
            y = b_y[o - n_k]
        sx = x / velocity_mm_per_ns
        sy = y / velocity_mm_per_ns
        rw = raw[r]
        rw.pulse = rel + first
        rw.t_x1 = math.floor((t + offset_ns + sx) / bin_ns + 0.5)
        rw.t_x2 = math.floor((t + offset_ns - sx) / bin_ns + 0.5)
        rw.t_y1 = math.floor((t + offset_ns + sy) / bin_ns + 0.5)
        rw.t_y2 = math.floor((t + offset_ns - sy) / bin_ns + 0.5)
        rw.t_mcp = math.floor(t / bin_ns + 0.5)
        rw.v_dc = v0 + (v1 - v0) * float(rel) / n_pulses
        rw.v_pulse = 0.0
        rw.laser_pj = laser_pj
        tr = truth[r]
        tr.pulse = rel + first
        tr.detected = 1
        if o < n_k:
            i = src[o]
            tr.species = e_sp[i]
            tr.charge = 0 if e_neu[i] else charges[e_sp[i]]
            tr.mass = e_mass[i]
            tr.x0 = e_x[i]
            tr.y0 = e_y[i]
            tr.z0 = e_z[i]
        else:
            tr.species = -1
            tr.charge = 0
            tr.mass = nan
            tr.x0 = nan
            tr.y0 = nan
            tr.z0 = nan

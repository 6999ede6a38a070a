"""Time of flight -> mass-to-charge: the project's one m/n kernel and its one constant.

Energy conservation for an ion of mass m and charge n e accelerated through V:
n e V = m v^2 / 2 with v = L_eff / (t - t0), so

    m/n = 2 e V (t - t0)^2 / L_eff^2,    L_eff^2 = L^2 + x_D^2 + y_D^2,

with V = V_dc + beta V_pulse (beta = 1 for an HV pulse at the specimen; in laser mode
V_pulse = 0). In practical units m/n [Da] = K V[V] t[ns]^2 / L[m]^2 with K = 2 e / u * 1e-18
= 1.929695e-10 (CODATA 2018); the project uses the contract's 1.9297e-10 (3.4 ppm above,
absorbed by any fitted flight length), so the simulator and the pipeline are exactly inverse.

Every m/n in the project comes from :func:`mass_da` (numba inlines it into the kernels that
call it: the fused per-chunk pass, the corrected-mass kernel, the ion stream) and every
simulated flight time from its inverse :func:`flight_time_one` (the simulator's detector).
Imports (EPOS, APT) imply their flight length with the same geometry
(:func:`implied_flight_path_mm`), so an imported file's m/n and ours agree.

A foundation module: the simulator (below the pipeline) times ions with it and the pipeline
converts them back; :mod:`apt_daq.pipeline.tof` re-exports it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

E_CHARGE_C = 1.602176634e-19
DALTON_KG = 1.66053906660e-27
K_CODATA = 2.0 * E_CHARGE_C / DALTON_KG * 1e-18
"""2 e / u * 1e-18 = 1.929695e-10, for reference (tests check K_DA against it)."""
K_DA = 1.9297e-10
"""m/n [Da] = K_DA * V [V] * t [ns]^2 / L [m]^2: the one constant of the project."""


@njit(cache=True, nogil=True)
def mass_da(tof_ns, det_x_mm, det_y_mm, voltage_v, t0_ns, flight_path_mm):
    """The one m/n (Da) of one hit: K V (t - t0)^2 / (L^2 + x^2 + y^2).

    Plain arithmetic, so ``mass_da.py_func`` applies it to numpy arrays as well (the numpy
    twins of the kernels use that)."""
    t = tof_ns - t0_ns
    leff2_m2 = (flight_path_mm * flight_path_mm + det_x_mm * det_x_mm
                + det_y_mm * det_y_mm) * 1e-6
    return K_DA * voltage_v * t * t / leff2_m2


@njit(cache=True, nogil=True)
def flight_time_one(mass_over_n_da, voltage_v, flight_path_mm, det_x_mm, det_y_mm):
    """The inverse of :func:`mass_da` with t0 = 0: the flight time (ns) of an ion of m/n
    accelerated through ``voltage_v`` to the detector point (x, y) (the simulator's timing)."""
    leff_m = np.sqrt(flight_path_mm ** 2 + det_x_mm * det_x_mm + det_y_mm * det_y_mm) * 1e-3
    return leff_m * np.sqrt(mass_over_n_da / (K_DA * voltage_v))


@njit(cache=True, nogil=True)
def mass_kernel(tof_ns, det_x_mm, det_y_mm, v_dc, v_pulse, t0_ns, flight_path_mm, beta, out):
    """m/n in Da for each hit, written into ``out``."""
    for i in range(tof_ns.shape[0]):
        v = np.float64(v_dc[i]) + beta * v_pulse[i]
        out[i] = mass_da(np.float64(tof_ns[i]), np.float64(det_x_mm[i]),
                         np.float64(det_y_mm[i]), v, t0_ns, flight_path_mm)
    return out


def mass_to_charge(
    hits: np.ndarray, t0_ns: float, flight_path_mm: float, beta: float = 1.0
) -> np.ndarray:
    """m/n (float64, Da) of a HIT_DTYPE chunk."""
    out = np.empty(len(hits), dtype=np.float64)
    mass_kernel(hits["tof"], hits["det_x"], hits["det_y"], hits["v_dc"], hits["v_pulse"],
                float(t0_ns), float(flight_path_mm), float(beta), out)  # fmt: skip
    return out


def flight_time_ns(
    mass_da: np.ndarray | float, voltage_v: np.ndarray | float, flight_path_mm: float,
    det_x_mm: np.ndarray | float = 0.0, det_y_mm: np.ndarray | float = 0.0, t0_ns: float = 0.0,
) -> np.ndarray:  # fmt: skip
    """Vectorised :func:`flight_time_one` plus t0 (tests, synthetic data)."""
    return t0_ns + flight_time_one.py_func(
        np.asarray(mass_da, np.float64), np.asarray(voltage_v, np.float64),
        float(flight_path_mm), np.asarray(det_x_mm, np.float64), np.asarray(det_y_mm, np.float64))


def implied_flight_path_mm(mass_da_: np.ndarray, tof_ns: np.ndarray, voltage_v: np.ndarray,
                           det_x_mm: np.ndarray | None = None,
                           det_y_mm: np.ndarray | None = None, t0_ns: float = 0.0) -> float:
    """The flight length L (mm) that makes :func:`mass_da` reproduce a file's m/n: the median
    over the ions of sqrt(K V (t - t0)^2 / m - x^2 - y^2) (NaN without 10 usable ions).

    Without detector coordinates x = y = 0 (then L is the mean L_eff, as before)."""
    m = np.asarray(mass_da_, np.float64)
    t = np.asarray(tof_ns, np.float64) - t0_ns
    v = np.asarray(voltage_v, np.float64)
    x = np.zeros_like(m) if det_x_mm is None else np.asarray(det_x_mm, np.float64)
    y = np.zeros_like(m) if det_y_mm is None else np.asarray(det_y_mm, np.float64)
    ok = (m > 0.5) & (t > 0) & (v > 0) & np.isfinite(m + t + v + x + y)
    if ok.sum() < 10:
        return float("nan")
    leff2_mm2 = K_DA * v[ok] * t[ok] ** 2 / m[ok] * 1e6
    l2 = leff2_mm2 - x[ok] ** 2 - y[ok] ** 2
    med = float(np.median(l2))
    return math.sqrt(med) if med > 0 else float("nan")

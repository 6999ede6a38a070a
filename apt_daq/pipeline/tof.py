"""Time of flight -> mass-to-charge.

Energy conservation for an ion of mass m and charge n e accelerated through V:
n e V = m v^2 / 2 with v = L_eff / (t - t0), so

    m/n = 2 e V (t - t0)^2 / L_eff^2,    L_eff^2 = L^2 + x_D^2 + y_D^2,

with V = V_dc + beta V_pulse (beta = 1 for an HV pulse at the specimen; in laser mode
V_pulse = 0). In practical units m/n [Da] = K V[V] t[ns]^2 / L[m]^2 with K = 2 e / u * 1e-18
= 1.929695e-10 (CODATA 2018; the contract's 1.9297e-10 is the same to 3e-6).
"""

from __future__ import annotations

import numpy as np
from numba import njit

E_CHARGE_C = 1.602176634e-19
DALTON_KG = 1.66053906660e-27
K_DA = 2.0 * E_CHARGE_C / DALTON_KG * 1e-18
"""m/n [Da] = K_DA * V [V] * t [ns]^2 / L [m]^2."""


@njit(cache=True, nogil=True)
def mass_kernel(tof_ns, det_x_mm, det_y_mm, v_dc, v_pulse, t0_ns, flight_path_mm, beta, out):
    """m/n in Da for each hit, written into ``out``."""
    l2 = flight_path_mm * flight_path_mm
    for i in range(tof_ns.shape[0]):
        t = np.float64(tof_ns[i]) - t0_ns
        x = np.float64(det_x_mm[i])
        y = np.float64(det_y_mm[i])
        leff2_m2 = (l2 + x * x + y * y) * 1e-6
        out[i] = K_DA * (np.float64(v_dc[i]) + beta * v_pulse[i]) * t * t / leff2_m2
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
    """Inverse of the above: tof of an ion of m/n leaving at t0 (tests, simulation)."""
    leff_m = np.sqrt(flight_path_mm**2 + np.square(det_x_mm) + np.square(det_y_mm)) * 1e-3
    return t0_ns + leff_m * np.sqrt(np.asarray(mass_da) / (K_DA * np.asarray(voltage_v)))

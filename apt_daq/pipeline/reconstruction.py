"""Tomographic reconstruction: Bas et al. (1995) point projection and the Geiser/Gault variant.

Protocol (Bas, Bostel, Deconihout, Blavette, Appl. Surf. Sci. 87/88, 298, 1995), per ion in
evaporation order:

- tip radius from the voltage, R = V / (k_f F_e)                                   [nm]
- magnification M = L / (xi R); specimen position x = X_D / M, y = Y_D / M         [nm]
- depth increment dz = Omega L^2 k_f^2 F_e^2 / (A_det eta xi^2 V^2)
  (= Omega / (eta A_analysed), the analysed area being A_det / M^2)                [nm]
- z = sum of dz so far + R (1 - sqrt(1 - (x^2 + y^2) / R^2))  (the cap: off-axis atoms sit
  deeper), z growing into the specimen as in the simulator's truth.

Geiser et al. (Microsc. Microanal. 15, 2009) / Gault et al. (Ultramicroscopy 111, 2011) use the
angles: the projection point sits (xi - 1) R behind the centre of the cap, theta_P =
atan(r_D / L), theta' = theta_P + asin((xi - 1) sin theta_P), (x, y) = R sin theta'
(cos phi, sin phi), z = sum dz + R (1 - cos theta'). Both use the same dz here.

The :class:`Reconstructor` streams: it keeps the cumulative depth across chunks.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from apt_daq.config import InstrumentConfig, ReconstructionConfig


@njit(cache=True, nogil=True)
def bas_kernel(det_x_mm, det_y_mm, voltage_v, flight_path_mm, k_f, f_e, xi, omega_nm3,
               area_mm2, eta, z0_nm, method, x_out, y_out, z_out):  # fmt: skip
    """Reconstruct one chunk; returns the cumulative depth after it (nm).

    ``method`` 0: Bas point projection; 1: Geiser/Gault angular projection.
    """
    z_cum = z0_nm
    lf = flight_path_mm
    dz_const = omega_nm3 * lf * lf * k_f * k_f * f_e * f_e / (area_mm2 * eta * xi * xi)
    for i in range(det_x_mm.shape[0]):
        v = np.float64(voltage_v[i])
        if v <= 0.0:
            x_out[i] = np.nan
            y_out[i] = np.nan
            z_out[i] = np.nan
            continue
        r_nm = v / (k_f * f_e)
        xd = np.float64(det_x_mm[i])
        yd = np.float64(det_y_mm[i])
        if method == 0:
            scale = xi * r_nm / lf  # 1 / M, nm per mm
            x = xd * scale
            y = yd * scale
            rho2 = (x * x + y * y) / (r_nm * r_nm)
            if rho2 > 1.0:
                rho2 = 1.0
            cap = r_nm * (1.0 - math.sqrt(1.0 - rho2))
        else:
            rd = math.sqrt(xd * xd + yd * yd)
            theta_p = math.atan2(rd, lf)
            s = (xi - 1.0) * math.sin(theta_p)
            if s > 1.0:
                s = 1.0
            theta = theta_p + math.asin(s)
            if rd > 0.0:
                c = xd / rd
                sn = yd / rd
            else:
                c = 1.0
                sn = 0.0
            rs = r_nm * math.sin(theta)
            x = rs * c
            y = rs * sn
            cap = r_nm * (1.0 - math.cos(theta))
        z_cum += dz_const / (v * v)
        x_out[i] = x
        y_out[i] = y
        z_out[i] = z_cum + cap
    return z_cum


class Reconstructor:
    """Streaming reconstruction: ``process(hits_chunk) -> (x, y, z)`` in nm, evaporation order."""

    def __init__(
        self,
        instrument: InstrumentConfig,
        recon_cfg: ReconstructionConfig | None = None,
        detection_efficiency: float | None = None,
        k_f: float | None = None,
        xi: float | None = None,
    ):
        cfg = recon_cfg or ReconstructionConfig()
        self.method = cfg.method
        self.flight_path_mm = float(instrument.flight_path_mm)
        self.k_f = float(k_f if k_f is not None else (cfg.field_factor or 3.3))
        self.xi = float(xi if xi is not None else (cfg.image_compression or 1.65))
        self.f_e = float(cfg.evaporation_field_v_per_nm)
        self.omega_nm3 = float(cfg.atomic_volume_nm3)
        self.eta = float(detection_efficiency if detection_efficiency is not None
                         else instrument.detection_efficiency)  # fmt: skip
        self.area_mm2 = math.pi * (0.5 * instrument.detector_diameter_mm) ** 2
        self.z_nm = 0.0
        self.ions = 0

    def process(self, hits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(hits)
        x = np.empty(n, dtype=np.float32)
        y = np.empty(n, dtype=np.float32)
        z = np.empty(n, dtype=np.float32)
        v = hits["v_dc"].astype(np.float64) + hits["v_pulse"]
        self.z_nm = bas_kernel(
            hits["det_x"], hits["det_y"], v, self.flight_path_mm, self.k_f, self.f_e, self.xi,
            self.omega_nm3, self.area_mm2, self.eta, self.z_nm,
            0 if self.method == "bas" else 1, x, y, z,
        )  # fmt: skip
        self.ions += n
        return x, y, z

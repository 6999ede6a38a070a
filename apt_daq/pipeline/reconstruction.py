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

import functools
import itertools
import math

import numpy as np
from numba import njit

from apt_daq.config import InstrumentConfig, ReconstructionConfig


@njit(cache=True, nogil=True, inline="always")
def _dz_const(flight_path_mm, k_f, f_e, xi, omega_nm3, area_mm2, eta):
    """dz * V^2 (nm V^2): the depth increment's constant."""
    lf = flight_path_mm
    return omega_nm3 * lf * lf * k_f * k_f * f_e * f_e / (area_mm2 * eta * xi * xi)


@njit(cache=True, nogil=True, inline="always")
def _project(xd, yd, v, lf, k_f, f_e, xi, method):
    """(x, y, cap depth) in nm of a hit at (xd, yd) mm on the detector under V > 0 (scalars
    only: an array handed to an inlined helper per ion costs numba's reference counting)."""
    r_nm = v / (k_f * f_e)
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
    return x, y, cap


@njit(cache=True, nogil=True)
def bas_kernel(det_x_mm, det_y_mm, voltage_v, flight_path_mm, k_f, f_e, xi, omega_nm3,
               area_mm2, eta, z0_nm, method, x_out, y_out, z_out):  # fmt: skip
    """Reconstruct one chunk; returns the cumulative depth after it (nm).

    ``method`` 0: Bas point projection; 1: Geiser/Gault angular projection.
    """
    z_cum = z0_nm
    dz_const = _dz_const(flight_path_mm, k_f, f_e, xi, omega_nm3, area_mm2, eta)
    for i in range(det_x_mm.shape[0]):
        v = np.float64(voltage_v[i])
        if v <= 0.0:
            x_out[i] = np.nan
            y_out[i] = np.nan
            z_out[i] = np.nan
            continue
        x, y, cap = _project(np.float64(det_x_mm[i]), np.float64(det_y_mm[i]), v,
                             flight_path_mm, k_f, f_e, xi, method)
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
        f_e: float | dict[float, float] | None = None,
    ):
        cfg = recon_cfg or ReconstructionConfig()
        self.method = cfg.method
        self.flight_path_mm = float(instrument.flight_path_mm)
        self.k_f = float(k_f if k_f is not None else (cfg.field_factor or 3.3))
        self.xi = float(xi if xi is not None else (cfg.image_compression or 1.65))
        self.f_e = float(cfg.evaporation_field_v_per_nm)
        self.step_fields: dict[float, float] = {}  # laser pJ -> F_e (a schedule's steps)
        self.field_source = "configured"
        if isinstance(f_e, dict) and f_e:
            self.step_fields = {float(k): float(v) for k, v in f_e.items()}
            self.f_e = next(iter(self.step_fields.values()))
        elif f_e is not None and not isinstance(f_e, dict):
            self.f_e = float(f_e)
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
        # one field per stretch of hits at one laser energy (a schedule's steps run in turn)
        bounds = [0, n]
        if self.step_fields and n and "laser_pj" in (hits.dtype.names or ()):
            lp = hits["laser_pj"]
            bounds = [0, *(np.flatnonzero(lp[1:] != lp[:-1]) + 1).tolist(), n]
        for a, b in itertools.pairwise(bounds):
            f_e = self.field_at(float(hits["laser_pj"][a])) if self.step_fields else self.f_e
            self.z_nm = bas_kernel(
                hits["det_x"][a:b], hits["det_y"][a:b], v[a:b], self.flight_path_mm, self.k_f,
                f_e, self.xi, self.omega_nm3, self.area_mm2, self.eta, self.z_nm,
                0 if self.method == "bas" else 1, x[a:b], y[a:b], z[a:b],
            )  # fmt: skip
        self.ions += n
        return x, y, z

    def field_at(self, laser_pj: float) -> float:
        """F_e of the step at ``laser_pj`` (the nearest step's; f_e without steps)."""
        if not self.step_fields:
            return self.f_e
        return min(self.step_fields.items(), key=lambda kv: abs(kv[0] - laser_pj))[1]


def run_fields(meta: dict, run_file) -> tuple[float | dict[float, float] | None, str]:
    """The evaporation field a run's reconstruction takes, and where it comes from:

    1. the user's: ``analysis.reconstruction.evaporation_field_v_per_nm`` set to anything but
       the default (``ReconstructionConfig``'s 28 V/nm);
    2. the run's: /meta ``evaporation_field_v_per_nm``, a number or {laser pJ: V/nm} (written
       by whatever acquired or imported the run);
    3. a simulated run's (/meta ``simulated``, written by the run engine): the field the simulated specimen settles to at
       each schedule step's laser energy, pulse rate, base temperature and target detection
       rate (:func:`apt_daq.sim.instrument.settled_field_v_per_nm`, from the run file the run
       stored), so that the ROI is the size it says at every energy;
    4. otherwise None: the configured default.
    """
    if run_file is None:
        return None, "configured"
    rc = run_file.analysis.reconstruction
    default = ReconstructionConfig.model_fields["evaporation_field_v_per_nm"].default
    if float(rc.evaporation_field_v_per_nm) != float(default):
        return float(rc.evaporation_field_v_per_nm), "the run file's"
    stored = meta.get("evaporation_field_v_per_nm")
    if isinstance(stored, dict) and stored:
        return {float(k): float(v) for k, v in stored.items()}, "the run's (/meta)"
    if isinstance(stored, int | float) and stored > 0:
        return float(stored), "the run's (/meta)"
    if meta.get("simulated"):
        try:
            return _simulated_fields(run_file.model_dump_json()), "the simulated specimen's"
        except Exception:  # a run file the simulator cannot rebuild: the default
            return None, "configured"
    return None, "configured"


@functools.lru_cache(maxsize=32)
def _simulated_fields(run_json: str) -> dict[float, float]:
    from apt_daq.config import RunFile
    from apt_daq.sim.instrument import settled_field_v_per_nm

    cfg = RunFile.model_validate_json(run_json)
    rc = cfg.run
    out: dict[float, float] = {}
    for step in rc.steps():
        if float(step.laser_pj) not in out:
            out[float(step.laser_pj)] = round(settled_field_v_per_nm(
                cfg.instrument, cfg.specimen, step.laser_pj,
                base_temperature_k=rc.base_temperature_k, pulse_rate_hz=rc.pulse_rate_hz,
                target_rate=rc.target_detection_rate, seed=rc.seed), 2)
    return out

"""A synthetic run file: ions point-projected with the Bas model onto a detector, with truth.

Independent of the simulator: species drawn with known fractions, isotopes by natural
abundance, exact Bas forward projection (so the reconstruction can be checked), a Gaussian
timing spread, and optional multiplicative voltage/bowl distortions of the flight time.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from apt_daq.config import load_run
from apt_daq.hits import HIT_DTYPE, TRUTH_DTYPE
from apt_daq.io.store import RunWriter
from apt_daq.isotopes import isotopologues, parse_ion
from apt_daq.pipeline.tof import flight_time_ns

ROOT = Path(__file__).resolve().parents[2]
RUN_YAML = ROOT / "configs" / "runs" / "nmc811-cr-5pj.yaml"
NMC_IONS = {
    "Li+": 0.25,
    "O+": 0.12,
    "O2+": 0.20,
    "Ni+": 0.08,
    "Ni2+": 0.25,
    "Co+": 0.05,
    "Mn2+": 0.05,
}


def make_run(
    path: Path, n: int = 60_000, seed: int = 0, ions: dict[str, float] | None = None,
    voltage_v: tuple[float, float] = (5000.0, 7000.0), sigma_rel: float = 2e-4,
    distort: bool = False, lost_fraction: float = 0.0, ranges: str | None = None,
    log: np.ndarray | None = None, fda_ions: list[str] | None = None,
) -> Path:  # fmt: skip
    rng = np.random.default_rng(seed)
    rf = load_run(RUN_YAML)
    if ranges is not None:
        rf.analysis.ranges = ranges
    if fda_ions is not None:
        rf.analysis.fda_ions = fda_ions
    inst = rf.instrument
    ions = ions or NMC_IONS
    names = list(ions)
    p = np.array([ions[k] for k in names])
    species = rng.choice(len(names), n, p=p / p.sum())
    mass = np.empty(n)
    for i, name in enumerate(names):
        f, z = parse_ion(name)
        pat = isotopologues(f, z, 1e-4)
        ms, ab = np.array([a for a, _ in pat]), np.array([b for _, b in pat])
        sel = species == i
        mass[sel] = rng.choice(ms, sel.sum(), p=ab / ab.sum())
    v = np.linspace(*voltage_v, n)
    k_f, xi = rf.specimen.field_factor, rf.specimen.image_compression
    rc = rf.analysis.reconstruction
    r_nm = v / (k_f * rc.evaporation_field_v_per_nm)
    det_r = 0.5 * inst.detector_diameter_mm * 0.95
    rd = det_r * np.sqrt(rng.random(n))
    phi = rng.uniform(0, 2 * np.pi, n)
    xd, yd = rd * np.cos(phi), rd * np.sin(phi)
    area = math.pi * (0.5 * inst.detector_diameter_mm) ** 2
    dz = (
        rc.atomic_volume_nm3
        * inst.flight_path_mm**2
        * (k_f * rc.evaporation_field_v_per_nm) ** 2
        / (area * inst.detection_efficiency * xi**2 * v**2)
    )
    zc = np.cumsum(dz)
    x0 = xd * xi * r_nm / inst.flight_path_mm
    y0 = yd * xi * r_nm / inst.flight_path_mm
    z0 = zc + r_nm * (1 - np.sqrt(1 - (x0**2 + y0**2) / r_nm**2))
    tof = flight_time_ns(mass, v, inst.flight_path_mm, xd, yd, inst.t0_ns)
    tof = tof * (1 + sigma_rel * rng.standard_normal(n))
    if distort:  # m ~ t^2: a factor f on m is sqrt(f) on t
        f_v = 1 + 0.01 * (v - 6000) / 1000
        f_b = 1 + 0.006 * (xd**2 + yd**2) / 38**2 - 0.002 * xd / 38
        tof = tof * np.sqrt(f_v * f_b)
    hits = np.zeros(n, HIT_DTYPE)
    hits["pulse"] = np.arange(n) * 200
    hits["tof"], hits["det_x"], hits["det_y"], hits["v_dc"] = tof, xd, yd, v
    hits["laser_pj"] = 5.0
    hits["multiplicity"] = 1
    truth = np.zeros(n, TRUTH_DTYPE)
    truth["pulse"] = hits["pulse"]
    truth["species"] = species
    truth["charge"] = [parse_ion(names[s])[1] for s in species]
    truth["mass"], truth["x0"], truth["y0"], truth["z0"] = mass, x0, y0, z0
    truth["detected"] = 1
    table = [[nm, float(isotopologues(*parse_ion(nm))[0][0]), parse_ion(nm)[1]] for nm in names]
    meta = {"config": rf.model_dump(mode="json"), "instrument": inst.model_dump(mode="json"),
            "ion_table": table, "seed": seed}  # fmt: skip
    with RunWriter(path, meta, overwrite=True) as w:
        for a in range(0, n, 25_000):
            w.append(hits=hits[a : a + 25_000], truth=truth[a : a + 25_000])
        if lost_fraction > 0:
            k = int(lost_fraction * n)
            lost = np.zeros(k, TRUTH_DTYPE)
            lost["species"] = names.index("O+") if "O+" in names else 0
            w.append(lost=lost)
        if log is not None:
            w.log(log)
        w.finish("done")
    return path

"""Small synthetic runs for the format tests, written directly with RunWriter (no simulator).

The hits obey the contract's physics: m/n = k V t^2 / L_eff^2 with k = 1.9297e-10, so a file
reader's voltage-unit heuristic sees a real flight path, exactly as with LEAP data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apt_daq.hits import DERIVED_DTYPE, HIT_DTYPE, TRUTH_DTYPE
from apt_daq.io.store import RunWriter

K_DA = 1.9297e-10
FLIGHT_MM = 100.0
IONS = [("Li+", 7.016), ("O+", 15.995), ("O2+", 31.990), ("Ni2+", 28.968), ("Ni+", 57.935),
        ("Co+", 58.933), ("Mn+", 54.938)]
RANGES = """[Ions]
Number=4
Ion1=Li
Ion2=O
Ion3=Ni
Ion4=Co
[Ranges]
Number=6
Range1=6.9000 7.1500 Vol:0.01300 Li:1 Color:9933FF
Range2=15.9000 16.1000 Vol:0.01500 O:1 Color:0066FF
Range3=28.8500 29.1000 Vol:0.01094 Ni:1 Color:00AA00
Range4=31.9000 32.1000 Vol:0.03000 O:2 Color:0066FF
Range5=57.8000 58.1000 Vol:0.01094 Ni:1 Color:00AA00
Range6=58.8000 59.1000 Vol:0.01100 Co:1 Color:FF66CC
"""


def synthetic_chunks(n: int, seed: int = 0, chunk: int = 4000):
    """(hits, derived, truth) chunks of a physically consistent synthetic laser-pulsed run."""
    rng = np.random.default_rng(seed)
    gaps = rng.geometric(0.01, n).astype(np.uint64)
    multi = rng.random(n) < 0.08
    gaps[multi] = 0
    gaps[0] = 17
    pulse = np.cumsum(gaps, dtype=np.uint64)
    first = np.r_[True, pulse[1:] != pulse[:-1]]
    gid = np.cumsum(first) - 1
    mult = np.bincount(gid)[gid]
    species = rng.integers(0, len(IONS), n)
    mass = np.array([m for _, m in IONS])[species] * (1 + rng.normal(0, 5e-4, n))
    v = np.linspace(4000.0, 6500.0, n)
    r = 38.0 * np.sqrt(rng.random(n))
    phi = rng.random(n) * 2 * np.pi
    dx, dy = r * np.cos(phi), r * np.sin(phi)
    l_eff_m = np.sqrt(FLIGHT_MM**2 + dx**2 + dy**2) / 1000.0
    tof = l_eff_m * np.sqrt(mass / (K_DA * v))
    hits = np.zeros(n, HIT_DTYPE)
    hits["pulse"], hits["tof"], hits["det_x"], hits["det_y"] = pulse, tof, dx, dy
    hits["v_dc"], hits["v_pulse"], hits["laser_pj"] = v, 0.0, 5.0
    hits["multiplicity"] = mult
    der = np.zeros(n, DERIVED_DTYPE)
    der["mass"] = mass
    der["ion"] = -1
    der["x"], der["y"] = dx * 0.6, dy * 0.6
    der["z"] = np.arange(n) * 0.01
    truth = np.zeros(n, TRUTH_DTYPE)
    truth["pulse"], truth["species"], truth["mass"], truth["detected"] = pulse, species, mass, 1
    for i in range(0, n, chunk):
        yield hits[i : i + chunk], der[i : i + chunk], truth[i : i + chunk]


def make_run(path: Path, n: int = 20000, seed: int = 0, simulated: bool = True,
             with_ranges: Path | None = None) -> Path:
    meta = {
        "simulated": simulated,
        "instrument": {"name": "LEAP 5000 XS", "flight_path_mm": FLIGHT_MM},
        "ion_table": [[name, m, 1] for name, m in IONS],
    }
    if with_ranges is not None:
        from apt_daq.io.ranges import read_ranges, table_to_meta

        meta["ranges"] = table_to_meta(read_ranges(with_ranges))
    with RunWriter(path, meta) as w:
        for hits, der, truth in synthetic_chunks(n, seed):
            w.append(hits=hits, derived=der, truth=truth if simulated else None)
        w.finish("done")
    return path

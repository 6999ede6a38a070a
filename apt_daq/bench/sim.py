"""Simulator throughput: detected ions per second of CPU, and the simpy overhead of 10^10
pulses, each beside a baseline measured in the same run.

- ``sim ions/s``: ``VirtualLeap.advance`` on Cr-coated NMC811 at 5 pJ held near 0.5 %
  (physics, detector, delay-line encoding, truth), against the same sampling written in plain
  vectorised numpy (event gaps, positions, channels, isotopes, flight times, delay lines).
- ``sim 1e10 pulses``: seconds of CPU that 10^10 pulses cost the instrument model (blocks of
  2 x 10^6 pulses with the field off, so only the block machinery runs), against one simpy
  timeout per pulse (measured on 10^6 pulses, scaled to 10^10).
CPU time (``time.process_time``) is used so that other load on the machine does not count.
"""

from __future__ import annotations

import math
import time

import numpy as np
import simpy

from apt_daq.bench import Result, result
from apt_daq.shipped import configs_dir


def _leap(spec: str = "nmc811-cr"):

    from apt_daq.config import InstrumentConfig, SpecimenConfig, load_yaml_model
    from apt_daq.sim.instrument import VirtualLeap

    root = configs_dir()
    leap = VirtualLeap(
        load_yaml_model(root / "instruments/leap5000xs.yaml", InstrumentConfig),
        load_yaml_model(root / f"specimens/{spec}.yaml", SpecimenConfig),
        seed=1,
    )
    leap.hv.slew_v_per_s = 1e6
    leap.hv.set_output(True)
    leap.laser.set_pulse_rate(100e3)
    leap.laser.set_emission(True)
    return leap


def _settle(leap, target: float = 0.005) -> float:
    lo, hi = 100.0, leap.instrument.max_voltage_v
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        leap._physics(mid)
        if leap.state.events_per_pulse * leap.instrument.detection_efficiency * 0.9 > target:
            hi = mid
        else:
            lo = mid
    return math.sqrt(lo * hi)


def _cpu(fn) -> tuple[float, object]:
    t = time.process_time()
    out = fn()
    return time.process_time() - t, out


def numpy_baseline(n_events: int, rng: np.random.Generator) -> np.ndarray:
    """The same per-ion sampling as the simulator, as plain vectorised numpy."""
    rate = 0.006
    gaps = -np.log1p(-rng.random(n_events)) / rate
    pulses = np.floor(np.cumsum(gaps)).astype(np.int64)
    rho = 30.0 * np.sqrt(rng.random(n_events))
    ph = 2 * np.pi * rng.random(n_events)
    x, y = rho * np.cos(ph), rho * np.sin(ph)
    z = 45.0 - np.sqrt(45.0**2 - rho**2)
    cdf = np.cumsum(np.full(14, 1 / 14))
    ch = np.searchsorted(cdf, rng.random(n_events))
    iso = np.searchsorted(np.array([0.68, 0.94, 0.95, 0.99, 1.0]), rng.random(n_events))
    mass = 20.0 + ch + 0.5 * iso
    t_dep = np.interp(rng.random(n_events), np.linspace(0, 1, 64), np.linspace(0, 1, 64) ** 3)
    xd = x * 1.35 + 0.15 * rng.standard_normal(n_events)
    yd = y * 1.35 + 0.15 * rng.standard_normal(n_events)
    keep = (rng.random(n_events) < 0.8) & (xd**2 + yd**2 < 1600)
    leff = np.sqrt(100.0**2 + xd**2 + yd**2) * 1e-3
    t = t_dep + leff * np.sqrt(mass / (1.9297e-10 * 3200.0)) + 0.05 * rng.standard_normal(n_events)
    t, xd, yd, pulses, z = t[keep], xd[keep], yd[keep], pulses[keep], z[keep]
    sig = np.floor(
        np.stack(
            [
                (t + 60 + xd) / 0.025,
                (t + 60 - xd) / 0.025,
                (t + 60 + yd) / 0.025,
                (t + 60 - yd) / 0.025,
                t / 0.025,
            ]
        )
        + 0.5
    ).astype(np.int32)
    return sig


def run(quick: bool = False) -> list[Result]:
    out: list[Result] = []
    leap = _leap()
    leap.laser.set_energy(5.0)
    leap.hv.set_voltage(_settle(leap))
    leap.idle(0.01)
    leap.advance(200_000)  # compile
    block = 20_000_000 if quick else 100_000_000
    best = 0.0
    for _ in range(1 if quick else 3):
        cpu, blk = _cpu(lambda: leap.advance(block))
        best = max(best, len(blk.raw) / cpu)
    n_ev = 200_000 if quick else 1_000_000
    rng = np.random.default_rng(0)
    numpy_baseline(1000, rng)
    base = 0.0
    for _ in range(1 if quick else 3):
        cpu, sig = _cpu(lambda: numpy_baseline(n_ev, rng))
        base = max(base, sig.shape[1] / cpu)
    out.append(
        result(
            "sim ions/s",
            best,
            "detected ions/s (CPU)",
            base,
            "VirtualLeap.advance vs the same sampling in plain numpy",
        )
    )

    # block machinery for 1e10 pulses (field off: no ions)
    idle = _leap()
    idle.hv.set_output(False)
    n_blocks = 500 if quick else 5000
    cpu, _ = _cpu(lambda: [idle.advance(2_000_000) for _ in range(n_blocks)])
    per_1e10 = cpu * (1e10 / (2_000_000 * n_blocks))
    env = simpy.Environment()

    def per_pulse(env: simpy.Environment, n: int):
        for _ in range(n):
            yield env.timeout(1e-5)

    n_p = 100_000 if quick else 1_000_000
    env.process(per_pulse(env, n_p))
    cpu_b, _ = _cpu(env.run)
    out.append(
        result(
            "sim 1e10 pulses",
            per_1e10,
            "s CPU",
            cpu_b * 1e10 / n_p,
            "blocks of 2e6 pulses vs one simpy event per pulse (scaled)",
        )
    )
    return out

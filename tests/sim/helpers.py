"""Test helpers for the simulator: hold the detection rate without the run engine."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from apt_daq.sim.instrument import VirtualLeap

from apt_daq.config import InstrumentConfig, SpecimenConfig, load_yaml_model

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def instrument(name: str = "leap5000xs") -> InstrumentConfig:
    return load_yaml_model(ROOT / f"configs/instruments/{name}.yaml", InstrumentConfig)


def specimen(name: str) -> SpecimenConfig:
    return load_yaml_model(ROOT / f"configs/specimens/{name}.yaml", SpecimenConfig)


def make_leap(spec: str, seed: int = 0, ins: str = "leap5000xs", **kw) -> VirtualLeap:
    leap = VirtualLeap(instrument(ins), specimen(spec), seed=seed, **kw)
    leap.hv.slew_v_per_s = 1e6  # the test controller sets V directly
    leap.hv.set_output(True)
    leap.laser.set_pulse_rate(100e3)
    leap.laser.set_emission(True)
    return leap


@dataclass
class Held:
    """What a rate-held run produced (blocks after settling)."""

    raw: list = field(default_factory=list)
    truth: list = field(default_factory=list)
    lost: list = field(default_factory=list)
    fields: list = field(default_factory=list)
    volts: list = field(default_factory=list)
    rates: list = field(default_factory=list)

    def cat(self, name: str) -> np.ndarray:
        parts = getattr(self, name)
        return np.concatenate(parts) if parts else np.zeros(0)


def settle_voltage(leap: VirtualLeap, target: float = 0.005) -> float:
    """Find V giving ``target`` detected ions per pulse by bisection on the expected rate.

    Uses the simulator's own physics state (expected events per pulse times the share that is
    detected), so tests start from the steady state rather than ramping through it."""
    lo, hi = 100.0, leap.instrument.max_voltage_v
    eff = leap.instrument.detection_efficiency * 0.9
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        leap._physics(mid)
        if leap.state.events_per_pulse * eff > target:
            hi = mid
        else:
            lo = mid
    return math.sqrt(lo * hi)


def hold_rate(leap: VirtualLeap, energy_pj: float, ions: int, target: float = 0.005,
              block_pulses: int = 1_000_000, gain: float = 0.5, settle_blocks: int = 2,
              max_blocks: int = 10_000) -> Held:
    """Proportional control of V on the detected rate (records per pulse), block by block."""
    leap.laser.set_energy(energy_pj)
    v = settle_voltage(leap, target)
    leap.hv.set_voltage(v)
    leap.idle(0.01)
    out = Held()
    got = 0
    corr = 0.0  # integral of ln(target / rate): corrects the expected-rate model
    for i in range(max_blocks):
        blk = leap.advance(block_pulses)
        rate = len(blk.raw) / block_pulses
        if i >= settle_blocks:
            out.raw.append(blk.raw)
            out.truth.append(blk.truth)
            out.lost.append(blk.lost)
            out.fields.append(leap.state.field_v_per_nm)
            out.volts.append(leap.hv.output_v)
            out.rates.append(rate)
            got += len(blk.raw)
        if leap.fractured or got >= ions:
            break
        corr += gain * math.log(target / max(rate, 0.1 * target))
        v = min(leap.hv.limit_v, settle_voltage(leap, target * math.exp(corr)))
        leap.hv.set_voltage(v)
    return out


_CACHE: dict = {}


def held_run(spec: str, energy_pj: float, ions: int = 30_000, seed: int = 1,
             ins: str = "leap5000xs") -> tuple[VirtualLeap, Held]:
    """A rate-held run, cached for the session (several tests read the same run)."""
    key = (spec, energy_pj, ions, seed, ins)
    if key not in _CACHE:
        leap = make_leap(spec, seed=seed, ins=ins)
        _CACHE[key] = (leap, hold_rate(leap, energy_pj, ions))
    return _CACHE[key]


def counts(leap: VirtualLeap, truth: np.ndarray) -> dict[str, int]:
    names = [n for n, _, _ in leap.ion_table]
    sp = truth["species"]
    c = np.bincount(sp[sp >= 0], minlength=len(names))
    return {n: int(c[i]) for i, n in enumerate(names)}


def element_counts(leap: VirtualLeap, truth: np.ndarray) -> dict[str, int]:
    from apt_daq.isotopes import parse_ion

    out: dict[str, int] = {}
    for name, k in counts(leap, truth).items():
        formula, _ = parse_ion(name)
        for el, n in formula.items():
            out[el] = out.get(el, 0) + n * k
    return out


def li_cation_ratio(leap: VirtualLeap, truth: np.ndarray) -> tuple[float, float]:
    """Li / (Li + Ni + Co + Mn) and its binomial standard error."""
    e = element_counts(leap, truth)
    li = e.get("Li", 0)
    tot = li + e.get("Ni", 0) + e.get("Co", 0) + e.get("Mn", 0)
    p = li / tot
    return p, math.sqrt(p * (1 - p) / tot)

"""The simulator reads a phase's chemistry and Li mobility from its properties in the specimen
YAML, never from its name: renaming the phases changes nothing, changing a property does."""

from __future__ import annotations

import numpy as np
import pytest
from apt_daq.sim.instrument import VirtualLeap

from apt_daq.config import PhaseChemistryConfig, SpecimenConfig
from tests.sim.helpers import instrument, settle_voltage, specimen

RENAME = {"NMC811": "layered oxide A", "LMO": "spinel B"}


def renamed(cfg: SpecimenConfig) -> SpecimenConfig:
    d = cfg.model_dump()
    for p in d["phases"]:
        p["name"] = RENAME[p["name"]]
    d["matrix"] = RENAME[d["matrix"]]
    for g in d["grains"]:
        g["phase"] = RENAME[g["phase"]]
    return SpecimenConfig.model_validate(d)


def stream(cfg: SpecimenConfig, energy_pj: float = 20.0, pulses: int = 2_000_000):
    leap = VirtualLeap(instrument(), cfg, seed=5)
    leap.hv.slew_v_per_s = 1e6
    leap.hv.set_output(True)
    leap.laser.set_pulse_rate(100e3)
    leap.laser.set_emission(True)
    leap.laser.set_energy(energy_pj)
    leap.hv.set_voltage(settle_voltage(leap))
    leap.idle(0.01)
    blk = leap.advance(pulses)
    return blk.raw, blk.truth


@pytest.mark.parametrize("name", ["nmc811-lmo-grain", "lmo-cr"])
def test_renaming_the_phases_changes_nothing(name: str) -> None:
    cfg = specimen(name)
    raw, truth = stream(cfg)
    raw2, truth2 = stream(renamed(cfg))
    assert len(raw) > 5_000
    assert raw.tobytes() == raw2.tobytes()
    assert truth.tobytes() == truth2.tobytes()


def test_the_phase_properties_set_the_physics() -> None:
    cfg = specimen("lmo-cr")
    _, truth = stream(cfg)
    d = cfg.model_dump()
    # the NMC811 defaults instead of the spinel's own chemistry: O2+/O+ and Mn change
    d["phases"][0]["chemistry"] = PhaseChemistryConfig().model_dump()
    _, truth2 = stream(SpecimenConfig.model_validate(d))
    assert truth.tobytes() != truth2.tobytes()
    # ... and the LiMn2O4 under-count of Mn goes with its chemistry, not with the name "LMO"
    def mn_over_li_mn(t: np.ndarray, leap_cfg: SpecimenConfig) -> float:
        leap = VirtualLeap(instrument(), leap_cfg, seed=5)
        names = [n for n, _, _ in leap.ion_table]
        sp = t["species"][t["species"] >= 0]
        c = {n: int(np.sum(sp == i)) for i, n in enumerate(names)}
        mn = sum(v for k, v in c.items() if k.startswith("Mn"))
        return mn / (mn + c.get("Li+", 0) + c.get("LiO+", 0))

    assert mn_over_li_mn(truth, cfg) < 0.62 < mn_over_li_mn(truth2, cfg)

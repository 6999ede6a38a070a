"""Field-driven Li migration in oxides (docs/physics.md, "lithium"): the share of the Li
ahead of the surface that migrates away, and the Li released in bursts per matrix event."""

from __future__ import annotations

import math
from dataclasses import dataclass

from apt_daq.sim.thermal import K_B_EV_PER_K


@dataclass(frozen=True)
class LiMigrationParams:
    """Phenomenological field-driven Li migration in oxides (docs/physics.md, "lithium")."""

    depletion_field_v_per_nm: float = 20.4  # field at which half the Li migrates away
    depletion_scale_v_per_nm: float = 0.45
    depletion_max: float = 0.92
    burst_prefactor: float = 630.0  # Li released in bursts per matrix event, T -> infinity
    burst_barrier_ev: float = 0.147  # thermal activation of the Li supply
    burst_field_ref_v_per_nm: float = 20.0  # supply scales with F / F_ref (drift ~ field)
    burst_max: float = 30.0  # saturation of the burst ratio (finite supply rate)
    burst_mean_events: float = 1500.0  # mean burst length, evaporation events
    burst_spot_fraction: float = 0.35  # burst spot rms radius / core radius
    modulation_uncoated: float = 0.6  # amplitude of Li-rich/Li-poor episodes
    # under a shell the residual Li agglomeration is the phase's own property (the specimen
    # YAML's li_episode_amplitude_coated: layered NMC811 0.167, Li mu ~0.5, paper Fig 4c;
    # spinel LiMn2O4 0.215, mu 0.4-0.6, Table S1)
    # Li-rich/Li-poor episodes shift the local surface field; the O pairing follows it:
    # intrinsic O2+/O+ x exp(-/+ c a) in Li-rich/poor episodes (a: the episode amplitude)
    o2_episode_coupling: float = 0.5
    modulation_mean_events: float = 2500.0  # mean episode length, events
    coating_screening: float = 1e-5  # factor on depletion and burst supply under a shell

    def modulation(self, amplitude_coated: float, coated: bool) -> float:
        """Amplitude a of the Li-rich/Li-poor episodes of a phase whose amplitude under a
        shell is ``amplitude_coated`` (PhaseConfig.li_episode_amplitude_coated)."""
        return amplitude_coated if coated else self.modulation_uncoated


LI_MIGRATION = LiMigrationParams()


def li_depletion(field: float, coated: bool, p: LiMigrationParams = LI_MIGRATION) -> float:
    """Share of the Li ahead of the surface that field-driven migration carries away."""
    x = (field - p.depletion_field_v_per_nm) / p.depletion_scale_v_per_nm
    d = p.depletion_max / (1.0 + math.exp(-max(-60.0, min(60.0, x))))
    return d * (p.coating_screening if coated else 1.0)


def li_burst_ratio(field: float, peak_k: float, coated: bool,
                   p: LiMigrationParams = LI_MIGRATION) -> float:
    """Li ions released in bursts per matrix evaporation event.

    b = A (F / F_ref) exp(-E_b / k T_peak): a thermally activated, field-driven supply of Li to
    the apex from the specimen's volume (the shank is an unlimited reservoir here).
    """
    if field <= 0:
        return 0.0
    b = p.burst_prefactor * (field / p.burst_field_ref_v_per_nm) * math.exp(
        -p.burst_barrier_ev / (K_B_EV_PER_K * peak_k))
    b *= p.coating_screening if coated else 1.0
    return b / (1.0 + b / p.burst_max)

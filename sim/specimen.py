"""The specimen: tip geometry, phases and grains, the Cr/Ga shell, and its evolving state.

Geometry (docs/physics.md, "geometry"): a cone of shank half-angle ``a`` capped by a
hemisphere of radius R(z) = R0 + z sin(a) / (1 - sin(a)), z the depth evaporated so far. A
coating is a shell of normal thickness t around the cone (t_apex over the very apex); the oxide
core's cross-section on the evaporating surface ends at the lateral radius rho_b(z)
(:func:`apt_daq.sim.physics.core_boundary_nm`), so the shell shows up as a ring at the detector's rim.
Grains (e.g. Li-Mn-O inside NMC811) are spheres of another phase, found by the origin of each
ion. ``composition_spread`` draws a particle-to-particle variation of the cation amounts per seed.
"""

from __future__ import annotations

import math

import numpy as np
from apt_daq.sim import physics
from apt_daq.sim.species import ELEMENTS, SHELL_CHEMISTRY, Chemistry, SpeciesTable

from apt_daq.config import SpecimenConfig


class Specimen:
    """A needle specimen and its state (depth evaporated, strength)."""

    def __init__(self, cfg: SpecimenConfig, rng: np.random.Generator):
        self.cfg = cfg
        self.coated = cfg.coating is not None
        self.depth_nm = 0.0
        self.phase_names = [p.name for p in cfg.phases]
        self.compositions: list[dict[str, float]] = []
        for p in cfg.phases:
            comp = dict(p.composition)
            if cfg.composition_spread > 0 and p.name == cfg.matrix:
                for el in comp:
                    if el not in ("O", "Li"):
                        comp[el] = max(0.0, comp[el] * (1 + cfg.composition_spread
                                                        * float(rng.standard_normal())))
            self.compositions.append(comp)
        self.densities = [p.atomic_density_per_nm3 for p in cfg.phases]
        # the phase's chemistry and Li mobility come from its config, never from its name
        self.chemistries = [Chemistry.from_config(p.chemistry) for p in cfg.phases]
        self.li_amplitudes_coated = [p.li_episode_amplitude_coated for p in cfg.phases]
        self.correlated_shares = [p.correlated_share for p in cfg.phases]
        self.matrix_phase = self.phase_names.index(cfg.matrix)
        self.shell_phase = -1
        if cfg.coating is not None:
            c = cfg.coating
            self.shell_phase = len(self.phase_names)
            self.phase_names.append("shell")
            self.compositions.append({c.material: 1.0 - c.ga_fraction, "Ga": c.ga_fraction})
            self.densities.append(c.atomic_density_per_nm3)
            self.chemistries.append(SHELL_CHEMISTRY)
            self.li_amplitudes_coated.append(0.0)
            self.correlated_shares.append(c.correlated_share)
        elements: set[str] = set()
        for comp in self.compositions:
            elements |= {el for el, n in comp.items() if n > 0}
        if self.coated:
            elements.add("O")  # CrO from the shell
        self.species = SpeciesTable.for_elements(elements)
        self.grain_c = np.array([g.center_nm for g in cfg.grains], np.float64).reshape(-1, 3)
        self.grain_r = np.array([g.radius_nm for g in cfg.grains], np.float64)
        self.grain_phase = np.array([self.phase_names.index(g.phase) for g in cfg.grains],
                                    np.int64)
        self.strength_gpa = physics.draw_strength_gpa(rng, self.coated)
        # mean lifetime (ps) of the parent of each dissociation channel, by phase and the
        # species of its metal fragment (M+ of (MO)2+ -> M+ + O+)
        self.dissociation_lifetime_ps = np.zeros((len(self.compositions),
                                                  len(self.species.ions)))
        for ph, chem in enumerate(self.chemistries):
            for el, *_, life in chem.dissociation:
                s = self.species.index(f"{el}+")
                if s >= 0:
                    self.dissociation_lifetime_ps[ph, s] = life

    # -- geometry
    @property
    def sin_shank(self) -> float:
        return math.sin(math.radians(self.cfg.shank_half_angle_deg))

    def radius_nm(self, depth_nm: float | None = None) -> float:
        d = self.depth_nm if depth_nm is None else depth_nm
        return physics.apex_radius_nm(self.cfg.apex_radius_nm, d, self.cfg.shank_half_angle_deg)

    @property
    def shell_nm(self) -> float:
        return self.cfg.coating.thickness_nm if self.cfg.coating else 0.0

    @property
    def apex_shell_nm(self) -> float:
        c = self.cfg.coating
        return c.apex_thickness_nm if c is not None else 0.0

    @property
    def core_cap_nm(self) -> float:
        """Radius of the core's own apex cap under the shell."""
        return max(self.cfg.apex_radius_nm - self.shell_nm, 5.0)

    def core_boundary_nm(self, depth_nm: float | None = None) -> float:
        d = self.depth_nm if depth_nm is None else depth_nm
        r = self.radius_nm(d)
        cos_a = math.cos(math.radians(self.cfg.shank_half_angle_deg))
        if not self.coated:
            return r * cos_a
        return physics.core_boundary_nm(d, r, cos_a, self.shell_nm, self.apex_shell_nm,
                                        self.core_cap_nm)

    def cooling(self, peak_k: float, energy_pj: float | None = None) -> physics.Cooling:
        """How the apex cools after a pulse of ``energy_pj`` that heated it to ``peak_k`` (the
        matrix oxide's cross-section at today's radius, with the shell in parallel if coated;
        the heated length grows with the energy: :func:`thermal.heated_length_nm`)."""
        c = self.cfg.coating
        return physics.cooling(peak_k, self.radius_nm(), self.cfg.shank_half_angle_deg,
                               self.densities[self.matrix_phase], self.shell_nm,
                               c.atomic_density_per_nm3 if c is not None else 83.3,
                               energy_pj=energy_pj)

    # -- evaporation parameters of a phase
    def barrier_arrays(self, phase: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(q0 eV, F_e V/nm, atom fractions) of the phase's elements."""
        comp = self.compositions[phase]
        els = [el for el, n in comp.items() if n > 0]
        tot = sum(comp[el] for el in els)
        return (np.array([ELEMENTS[el].q0_ev for el in els]),
                np.array([ELEMENTS[el].fe_v_per_nm for el in els]),
                np.array([comp[el] / tot for el in els]))

    def mean_atoms_density(self, phase: int) -> float:
        return self.densities[phase]

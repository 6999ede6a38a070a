"""Fracture of the specimen under the Maxwell stress of the field (docs/physics.md,
"fracture"): sigma = eps0 F^2 / 2; hazard h = h0 (sigma / sigma_c)^n, sigma_c Weibull
distributed per specimen."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS0_F_PER_M = 8.8541878128e-12


@dataclass(frozen=True)
class FractureParams:
    """Subcritical-crack-growth fracture under Maxwell stress (docs/physics.md, "fracture")."""

    strength_uncoated_gpa: float = 1.9  # Weibull scale of the flaw-limited strength
    strength_coated_gpa: float = 4.5  # the Cr shell carries load and closes surface flaws
    weibull_modulus: float = 4.0
    hazard_at_strength_per_s: float = 2e-3  # h0
    stress_exponent: float = 20.0  # n of the slow-crack-growth law


FRACTURE = FractureParams()


def maxwell_stress_gpa(field: float) -> float:
    """sigma = eps0 F^2 / 2, GPa (F in V/nm)."""
    return 0.5 * EPS0_F_PER_M * (field * 1e9) ** 2 / 1e9


def fracture_hazard_per_s(field: float, strength_gpa: float,
                          p: FractureParams = FRACTURE) -> float:
    """h = h0 (sigma / sigma_c)^n: slow crack growth from a flaw under the Maxwell stress."""
    s = maxwell_stress_gpa(field) / strength_gpa
    return p.hazard_at_strength_per_s * s ** p.stress_exponent


def draw_strength_gpa(rng: np.random.Generator, coated: bool,
                      p: FractureParams = FRACTURE) -> float:
    """The specimen's flaw-limited strength, Weibull distributed (one draw per specimen)."""
    scale = p.strength_coated_gpa if coated else p.strength_uncoated_gpa
    return float(scale * rng.weibull(p.weibull_modulus))

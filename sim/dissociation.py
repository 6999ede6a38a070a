"""Molecular ions that dissociate in flight (docs/physics.md, "dissociation"): where along
the acceleration a parent breaks, and the apparent m/n of its fragments (the dissociation
track of a correlation plot). numba, called from the event kernel."""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def dissociation_potential_share(t_ps: float, mass_da: float, charge: int, field_v_per_nm: float,
                                 radius_nm: float) -> float:
    """Share phi of the accelerating potential a parent ion has crossed when it dissociates
    ``t_ps`` after leaving the apex: radial flight from rest out of a sphere of radius R whose
    surface field is F (potential F R^2 / r), so t = tau0 (sqrt(x (x - 1)) + acosh(sqrt(x))),
    x = r / R, tau0 = sqrt(m R / (2 n e F)); phi = 1 - 1 / x. Solved for x by bisection
    (d = n e F t^2 / 2m for t << tau0)."""
    if t_ps <= 0.0:
        return 0.0
    tau0 = math.sqrt(mass_da * 1.66053906660e-27 * radius_nm * 1e-9
                     / (2.0 * charge * 1.602176634e-19 * field_v_per_nm * 1e9))
    g = t_ps * 1e-12 / tau0
    lo, hi = 0.0, 1.0  # y = x - 1 on a doubling bracket
    while math.sqrt((1.0 + hi) * hi) + math.acosh(math.sqrt(1.0 + hi)) < g:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if math.sqrt((1.0 + mid) * mid) + math.acosh(math.sqrt(1.0 + mid)) < g:
            lo = mid
        else:
            hi = mid
    y = 0.5 * (lo + hi)
    return y / (1.0 + y)


@njit(cache=True, inline="always")
def track_mass(m_frag_da: float, n_frag: int, m_parent_da: float, n_parent: int,
               phi: float) -> float:
    """Apparent m/n of a fragment (mass m_f, charge n_f) of a parent (m_p, n_p) that broke
    after crossing the share phi of the potential: its energy is n_p e V phi m_f / m_p +
    n_f e V (1 - phi), so m/n = m_f / (n_f (1 - phi) + n_p phi m_f / m_p): the fragment's own
    m/n at phi = 0, the parent's at phi = 1 (the dissociation track; Saxey, Ultramicroscopy
    111, 473, 2011)."""
    return m_frag_da / (n_frag * (1.0 - phi) + n_parent * phi * m_frag_da / m_parent_da)


@njit(cache=True)
def on_track(k: int, u: float, life_ps: float, charges: np.ndarray, field_v_per_nm: float,
             r_nm: float, o_sp: np.ndarray, o_mass: np.ndarray, o_tof: np.ndarray) -> None:
    """Rows ``k``, ``k + 1``: the fragments M+ and O+ of one (MO)2+ of mean lifetime
    ``life_ps`` that breaks after an exponential time (draw ``u``): each one's apparent m/n
    on the dissociation track (:func:`track_mass`)."""
    a = o_sp[k]
    b = o_sp[k + 1]
    m_p = o_mass[k] * charges[a] + o_mass[k + 1] * charges[b]
    n_p = charges[a] + charges[b]
    phi = dissociation_potential_share(-math.log(1.0 - u) * life_ps, m_p, n_p,
                                       field_v_per_nm, r_nm)
    o_tof[k] = track_mass(o_mass[k] * charges[a], charges[a], m_p, n_p, phi)
    o_tof[k + 1] = track_mass(o_mass[k + 1] * charges[b], charges[b], m_p, n_p, phi)

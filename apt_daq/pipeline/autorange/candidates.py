"""Candidate ions and their prior costs.

A candidate is a formula of up to ``max_atoms`` atoms with a charge. Without an element list
the formulas are every element alone, as a homonuclear dimer or trimer, or bound to one or two
of the light ligands H, C, N, O (XO, XO2, X2O, XOH, XN...; the molecular ions atom probes see);
with an element list, every formula of up to ``max_atoms`` atoms of those elements.

Noble gases are candidates only as atomic ions. Atomic 4+ ions are candidates only for the
refractory metals that reach 4+ at atom-probe fields (``FOUR_PLUS``); molecular ions only up
to 2+.

Prior costs are in chi-square units (-2 ln prior): an ion costs ``ION_COST`` plus terms for
a high charge and for being molecular; an element costs by how commonly it turns up in atom
probe data (``ELEMENT_TIERS``), paid once for all its ions. A lone peak that a common element
explains at about the same chi-square is never given to Sr2+ or Pr3+.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

import numpy as np

from apt_daq.isotopes import elements as all_elements
from apt_daq.isotopes import ion_name, isotopes, mass_numbers
from apt_daq.rangetable import canonical_formula

LIGANDS = ("H", "C", "N", "O")
ION_COST = 8.0
# elements by how often they occur in atom probe data (matrix, dopant, contamination, FIB Ga,
# residual gas H/C/N/O): tier 0 common, 1 occasional, 2 rare (rare earths, heavy exotics)
_TIER0 = ("H C N O Li B Na Mg Al Si P S Cl K Ca Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge Zr Nb Mo Ag "
          "Sn Hf Ta W Pt Au").split()
_TIER1 = ("He Be F Ne Ar Sc As Se Br Kr Rb Sr Y Ru Rh Pd Cd In Sb Te I Xe Cs Ba La Ce Nd Re Os "
          "Ir Hg Tl Pb Bi Gd Er Yb").split()
TIER_COST = (10.0, 28.0, 50.0)
# noble gases leave a specimen as atomic ions (implanted He, Ar from sputtering, imaging-gas
# residue); their molecular ions are no candidates (calcite: 4He12C16O+ named the O2+ peak at
# 32 Da and 4He16O+ the 40Ca2+ peak, He paid once for several such "molecules")
NOBLE_GASES = frozenset("He Ne Ar Kr Xe Rn".split())


def element_cost(el: str) -> float:
    if el in _TIER0:
        return TIER_COST[0]
    if el in _TIER1:
        return TIER_COST[1]
    return TIER_COST[2]


MAX_MOLECULAR_CHARGE = 2
# elements whose atoms reach 4+ at atom-probe fields (Kingham's post-ionisation curves: the
# refractory metals); any other element's 4+ is not a candidate (apav's Si run: Ni4+, which
# no atom probe sees, took the dead-time excess of 29Si2+/30Si2+)
FOUR_PLUS = ("Zr Nb Mo Hf Ta W Re Os Ir").split()


def ion_cost(formula: dict[str, int], charge: int) -> float:
    atoms = sum(formula.values())
    cost = ION_COST
    if atoms == 1:
        cost += (0.0, 0.0, 0.0, 8.0, 16.0)[min(charge, 4)]
    else:
        cost += 6.0 * (atoms - 1)
        cost += (0.0, 0.0, 10.0, 22.0, 32.0)[min(charge, 4)]
        if any(n > 1 for el, n in formula.items() if el not in LIGANDS):
            cost += 6.0  # metal dimers, trimers, M2O
    return cost


@dataclass(frozen=True)
class Candidate:
    formula: tuple[tuple[str, int], ...]  # canonical order
    charge: int
    peaks_da: np.ndarray  # isotopologue m/n
    abundance: np.ndarray  # their abundances (sum ~1)
    cost: float  # ion part of the prior
    elements: tuple[str, ...]

    @property
    def formula_dict(self) -> dict[str, int]:
        return dict(self.formula)

    @property
    def name(self) -> str:
        return ion_name(self.formula_dict, self.charge)


def template_formulas(els: list[str], max_atoms: int = 3) -> list[dict[str, int]]:
    """Formulas without an element list (see module doc): clusters (X2, X3, X2L) only of the
    common elements."""
    out: list[dict[str, int]] = []
    for x in els:
        if x in NOBLE_GASES:
            out.append({x: 1})
            continue
        common = x in _TIER0
        for n in range(1, (max_atoms if common else 1) + 1):
            out.append({x: n})
        for lig in LIGANDS:
            if lig == x or lig not in els:
                continue
            for nx, nl in ((1, 1), (1, 2), (2, 1)):
                if nx + nl <= max_atoms and (nx == 1 or common):
                    out.append({x: nx, lig: nl})
        if max_atoms >= 3:
            for l1, l2 in itertools.combinations(LIGANDS, 2):
                if x not in (l1, l2) and l1 in els and l2 in els:
                    out.append({x: 1, l1: 1, l2: 1})
    return _unique(out)


def all_formulas(els: list[str], max_atoms: int = 3) -> list[dict[str, int]]:
    """Every formula of 1..max_atoms atoms of ``els``."""
    out = []
    for n in range(1, max_atoms + 1):
        for combo in itertools.combinations_with_replacement(els, n):
            if n > 1 and NOBLE_GASES.intersection(combo):
                continue
            f: dict[str, int] = {}
            for el in combo:
                f[el] = f.get(el, 0) + 1
            out.append(f)
    return _unique(out)


def _unique(formulas: list[dict[str, int]]) -> list[dict[str, int]]:
    seen, out = set(), []
    for f in formulas:
        key = tuple(sorted(f.items()))
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


@cache
def _element(el: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    iso = isotopes(el)
    return (np.array(mass_numbers(el)), np.array([m for m, _ in iso]),
            np.array([a for _, a in iso]))


def pattern(formula: dict[str, int], min_abundance: float = 2e-4) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """(m Da, abundance) of a neutral formula, isotopologues of one mass number merged at
    their mean mass: :func:`apt_daq.isotopes.isotopologues` by outer products (a few atoms)."""
    a_sum, m_sum, p = np.zeros(1, np.int64), np.zeros(1), np.ones(1)
    for el, n in formula.items():
        a_el, m_el, p_el = _element(el)
        for _ in range(n):
            a_sum = (a_sum[:, None] + a_el[None, :]).ravel()
            m_sum = (m_sum[:, None] + m_el[None, :]).ravel()
            p = (p[:, None] * p_el[None, :]).ravel()
            keep = p >= min_abundance * 1e-3
            a_sum, m_sum, p = a_sum[keep], m_sum[keep], p[keep]
    uniq, inv = np.unique(a_sum, return_inverse=True)
    p_tot = np.bincount(inv, p, len(uniq))
    m_tot = np.bincount(inv, p * m_sum, len(uniq)) / p_tot
    ok = p_tot >= min_abundance
    return m_tot[ok], p_tot[ok]


def candidates(elements: list[str] | None = None, charges: tuple[int, ...] = (1, 2, 3, 4),
               max_atoms: int = 3) -> list[Candidate]:
    """Every candidate ion (no filtering by the spectrum)."""
    if elements:
        formulas = all_formulas(list(elements), max_atoms)
    else:
        formulas = template_formulas(all_elements(), max_atoms)
    out = []
    for f in formulas:
        cf = canonical_formula(f)
        key = tuple(cf.items())
        m, a = pattern(cf)
        molecular = sum(cf.values()) > 1
        for z in charges:
            if molecular and z > MAX_MOLECULAR_CHARGE:
                continue  # molecular ions of 3+ and 4+ are not seen (Coulomb explosion)
            if z >= 4 and not (set(cf) <= set(FOUR_PLUS)):
                continue
            out.append(Candidate(key, z, m / z, a, ion_cost(cf, z), tuple(cf)))
    return out


@cache
def _cached_candidates(elements: tuple[str, ...] | None, charges: tuple[int, ...],
                       max_atoms: int) -> tuple[list[Candidate], np.ndarray, np.ndarray,
                                                np.ndarray]:
    cands = candidates(list(elements) if elements else None, charges, max_atoms)
    owner, mass, rel = [], [], []
    for k, c in enumerate(cands):
        top = c.abundance.max()
        owner.append(np.full(len(c.peaks_da), k))
        mass.append(c.peaks_da)
        rel.append(c.abundance / top)
    return cands, np.concatenate(owner), np.concatenate(mass), np.concatenate(rel)


def matching_candidates(peak_da: np.ndarray, tol_rel: np.ndarray,
                        elements: list[str] | None = None,
                        charges: tuple[int, ...] = (1, 2, 3, 4), max_atoms: int = 3,
                        min_rel: float = 0.1) -> list[Candidate]:
    """Candidates with a strong isotopologue (>= ``min_rel`` of their main one) within
    ``tol_rel`` (relative) of a detected peak."""
    key = tuple(sorted(elements)) if elements else None
    cands, owner, mass, rel = _cached_candidates(key, tuple(sorted(charges)), max_atoms)
    order = np.argsort(peak_da)
    p = np.asarray(peak_da)[order]
    t = np.asarray(tol_rel)[order]
    strong = rel >= min_rel
    m = mass[strong]
    j = np.searchsorted(p, m)
    hit = np.zeros(len(m), bool)
    for d in (-1, 0):
        jj = np.clip(j + d, 0, len(p) - 1)
        hit |= np.abs(m / p[jj] - 1.0) <= t[jj]
    keep = np.unique(owner[strong][hit])
    return [cands[k] for k in keep]

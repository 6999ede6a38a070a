"""Natural isotopes, isotopologue patterns and the ion naming convention.

The table (``apt_daq/data/isotopes.json``, generated once by ``tools/make_isotope_data.py``)
covers every element H..U with a natural isotopic composition: all but Tc, Pm and Po..Ac; Th, Pa
and U with their natural compositions. Masses are atomic (neutral-atom) masses in Da from the
Atomic Mass Evaluation AME2020 (Wang et al., Chinese Phys. C 45 (2021) 030003); abundances are
amount fractions from the CIAAW isotopic compositions of the elements 2021, both as shipped by
the ``periodictable`` package 2.1.0. For the 11 elements whose CIAAW composition is only an
interval (H, Li, B, C, O, Mg, Si, S, Cl, Br, Tl) the IUPAC 2009 representative composition
(Berglund & Wieser, Pure Appl. Chem. 83 (2011) 397; NIST's table, via ``molmass`` 2026.1.8) is
used instead of the interval mid-point. As in AP Suite and IVAS, the mass-to-charge of an ion is
the atomic mass of its formula divided by the charge: the electron mass (0.00055 Da per charge)
is neglected, far below the instrument's resolution.

Ion names follow the one convention of the project (see the shared contract):

- atomic ions: element + charge digit if > 1 + ``+``: ``"Li+"``, ``"Ni2+"``, ``"Mn2+"``;
- molecular ions, singly charged: formula + ``+``: ``"O2+"`` (the O2 molecule, 32 Da),
  ``"NiO+"``, ``"LiO+"``;
- molecular ions with charge > 1: formula in parentheses: ``"(O2)2+"``, ``"(NiO)2+"``;
- water and its kin (H and O alone, two H or more) H first: ``"H2O+"``, ``"H3O+"``, but
  ``"OH+"``.

A single element followed by a digit is ambiguous (``"Ni2+"`` is Ni++ but ``"O2+"`` is O2+).
The rule: for the elements that form homonuclear diatomic molecules in the gas phase (H, N, O,
F, Cl) the digit is an atom count, for all others it is the charge. Names that this rule would
misread (O++ , a Ni2 dimer) are written in parentheses: ``"(O)2+"``, ``"(Ni2)+"``;
:func:`ion_name` always produces a name that :func:`parse_ion` reads back to the same ion.
"""

from __future__ import annotations

import json
import os
import re
from functools import cache

# a plain file path: importlib.resources/pathlib would double the import time of this module
_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "isotopes.json")


def _load() -> dict[str, tuple[tuple[int, float, float], ...]]:
    with open(_DATA, encoding="utf-8") as f:
        raw = json.load(f)
    return {
        el: tuple((int(a), float(m), float(x)) for a, m, x in rows)
        for el, rows in raw["elements"].items()
    }


# element -> ((mass number, atomic mass Da, abundance), ...) by increasing mass, elements by Z
_TABLE: dict[str, tuple[tuple[int, float, float], ...]] = _load()

DIATOMIC = frozenset({"H", "N", "O", "F", "Cl"})
"""Elements whose single-element names read a trailing digit as an atom count ("O2+" = O2)."""


def elements() -> list[str]:
    """Symbols of all elements in the table."""
    return list(_TABLE)


def _entries(element: str) -> tuple[tuple[int, float, float], ...]:
    try:
        return _TABLE[element]
    except KeyError:
        raise KeyError(f"unknown element {element!r}; known: {', '.join(_TABLE)}") from None


def isotopes(element: str) -> list[tuple[float, float]]:
    """Natural isotopes of ``element`` as (atomic mass Da, abundance), by increasing mass."""
    return [(m, a) for _, m, a in _entries(element)]


def mass_numbers(element: str) -> list[int]:
    """Mass numbers A of the natural isotopes of ``element``, aligned with :func:`isotopes`."""
    return [a for a, _, _ in _entries(element)]


def average_mass(element: str) -> float:
    """Abundance-weighted atomic mass of ``element`` (the standard atomic weight), Da."""
    ent = _entries(element)
    return sum(m * a for _, m, a in ent) / sum(a for _, _, a in ent)


def monoisotopic_mass(formula: dict[str, int]) -> float:
    """Mass of the formula made of each element's most abundant isotope, Da."""
    return sum(max(_entries(el), key=lambda e: e[2])[1] * n for el, n in formula.items())


@cache
def _pattern(items: tuple[tuple[str, int], ...], prune: float) -> tuple[tuple[float, float], ...]:
    # distribution over total mass number A: A -> (sum of abundance*mass, abundance)
    dist: dict[int, tuple[float, float]] = {0: (0.0, 1.0)}
    for el, count in items:
        ent = _entries(el)
        for _ in range(count):
            new: dict[int, tuple[float, float]] = {}
            for a0, (wm0, p0) in dist.items():
                m0 = wm0 / p0 if p0 > 0 else 0.0
                for a1, m1, p1 in ent:
                    p = p0 * p1
                    if p < prune:
                        continue
                    wm, pp = new.get(a0 + a1, (0.0, 0.0))
                    new[a0 + a1] = (wm + p * (m0 + m1), pp + p)
            dist = new
    return tuple((wm / p, p) for _, (wm, p) in sorted(dist.items()))


def isotopologues(
    formula: dict[str, int], charge: int, min_abundance: float = 1e-4
) -> list[tuple[float, float]]:
    """Isotope pattern of an ion: (m/n Da, abundance) by increasing m/n.

    The element isotope distributions are convolved atom by atom. Isotopologues with the same
    total mass number (e.g. 16O18O and 17O17O) are merged at their abundance-weighted mean mass:
    they differ by < 0.01 Da, far below atom-probe resolution. Peaks with abundance below
    ``min_abundance`` (fraction of all molecules of the formula) are dropped.
    """
    if charge < 1:
        raise ValueError(f"charge must be >= 1, got {charge}")
    if not formula or any(n < 1 for n in formula.values()):
        raise ValueError(f"formula needs positive atom counts, got {formula}")
    items = tuple(sorted(formula.items()))
    peaks = _pattern(items, min(min_abundance, 1e-4) * 1e-3)
    return [(m / charge, p) for m, p in peaks if p >= min_abundance]


_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*)")


def _formula(text: str, name: str) -> dict[str, int]:
    pos = 0
    out: dict[str, int] = {}
    for m in _TOKEN.finditer(text):
        if m.start() != pos:
            break
        el, n = m.group(1), m.group(2)
        if el not in _TABLE:
            raise ValueError(f"ion name {name!r}: unknown element {el!r}")
        out[el] = out.get(el, 0) + (int(n) if n else 1)
        pos = m.end()
    if pos != len(text) or not out or any(v < 1 for v in out.values()):
        raise ValueError(f"ion name {name!r}: cannot read formula {text!r}")
    return out


def parse_ion(name: str) -> tuple[dict[str, int], int]:
    """Read an ion name into (formula {element: count}, charge).

    ``"Ni2+"`` -> ({"Ni": 1}, 2); ``"O2+"`` -> ({"O": 2}, 1); ``"NiO+"`` -> ({"Ni": 1, "O": 1}, 1);
    ``"(O2)2+"`` -> ({"O": 2}, 2). ``"Ni++"`` is accepted for Ni2+. Raises ValueError.
    """
    s = name.strip()
    if not s.endswith("+"):
        raise ValueError(f"ion name {name!r}: must end with '+' (e.g. 'Ni2+', 'O2+', '(O2)2+')")
    body = s.rstrip("+")
    pluses = len(s) - len(body)
    if body.startswith("("):
        close = body.find(")")
        if close < 0:
            raise ValueError(f"ion name {name!r}: unbalanced parenthesis")
        inner, rest = body[1:close], body[close + 1 :]
        if rest and not rest.isdigit():
            raise ValueError(f"ion name {name!r}: expected a charge digit after ')'")
        formula = _formula(inner, name)
        charge = int(rest) if rest else pluses
        if rest and pluses != 1:
            raise ValueError(f"ion name {name!r}: give the charge once")
        return formula, charge
    m = re.fullmatch(r"([A-Z][a-z]?)(\d+)", body)
    if m and m.group(1) not in DIATOMIC and pluses == 1:
        el = m.group(1)
        if el not in _TABLE:
            raise ValueError(f"ion name {name!r}: unknown element {el!r}")
        return {el: 1}, int(m.group(2))
    return _formula(body, name), pluses


def _formula_text(formula: dict[str, int]) -> str:
    return "".join(f"{el}{n if n > 1 else ''}" for el, n in formula.items())


def water_order(formula: dict[str, int]) -> dict[str, int]:
    """H first in a molecule of H and O alone with two H or more, as atom probe users write
    water and its kin (H2O+, H3O+, H2O2+, not OH2+, OH3+); any other formula as given (OH+,
    NiOH+)."""
    if formula.keys() == {"H", "O"} and formula["H"] >= 2:
        return {"H": formula["H"], "O": formula["O"]}
    return formula


def ion_name(formula: dict[str, int], charge: int) -> str:
    """The conventional name of an ion (inverse of :func:`parse_ion`).

    Element order is kept as given (write metals first: {"Ni": 1, "O": 1} -> "NiO+"), but for
    water and its kin (:func:`water_order`: {"O": 1, "H": 2} -> "H2O+").
    """
    if charge < 1:
        raise ValueError(f"charge must be >= 1, got {charge}")
    formula = water_order(formula)
    text = _formula_text(formula)
    atoms = sum(formula.values())
    if atoms == 1:
        name = f"{text}{charge if charge > 1 else ''}+"
    elif charge == 1:
        name = f"{text}+"
    else:
        name = f"({text}){charge}+"
    try:
        if parse_ion(name) == (dict(formula), charge):
            return name
    except ValueError:
        pass
    return f"({text}){charge if charge > 1 else ''}+"


def ion_mass(name: str) -> float:
    """m/n of the most abundant isotopologue of the named ion, Da."""
    formula, charge = parse_ion(name)
    peaks = isotopologues(formula, charge, min_abundance=0.0)
    return max(peaks, key=lambda p: p[1])[0]

"""Natural isotopes, isotopologue patterns and the ion naming convention.

Masses are atomic (neutral-atom) masses in Da from the Atomic Mass Evaluation (AME 2016/2020),
abundances are the IUPAC representative isotopic compositions (amount fractions). As in AP Suite
and IVAS, the mass-to-charge of an ion is the atomic mass of its formula divided by the charge:
the electron mass (0.00055 Da per charge) is neglected, far below the instrument's resolution.

Ion names follow the one convention of the project (see the shared contract):

- atomic ions: element + charge digit if > 1 + ``+``: ``"Li+"``, ``"Ni2+"``, ``"Mn2+"``;
- molecular ions, singly charged: formula + ``+``: ``"O2+"`` (the O2 molecule, 32 Da),
  ``"NiO+"``, ``"LiO+"``;
- molecular ions with charge > 1: formula in parentheses: ``"(O2)2+"``, ``"(NiO)2+"``.

A single element followed by a digit is ambiguous (``"Ni2+"`` is Ni++ but ``"O2+"`` is O2+).
The rule: for the elements that form homonuclear diatomic molecules in the gas phase (H, N, O,
F, Cl) the digit is an atom count, for all others it is the charge. Names that this rule would
misread (O++ , a Ni2 dimer) are written in parentheses: ``"(O)2+"``, ``"(Ni2)+"``;
:func:`ion_name` always produces a name that :func:`parse_ion` reads back to the same ion.
"""

from __future__ import annotations

import re
from functools import cache

# element -> ((mass number, atomic mass Da, abundance), ...)
_TABLE: dict[str, tuple[tuple[int, float, float], ...]] = {
    "H": ((1, 1.00782503223, 0.999885), (2, 2.01410177812, 0.000115)),
    "He": ((3, 3.0160293201, 0.00000134), (4, 4.00260325413, 0.99999866)),
    "Li": ((6, 6.0151228874, 0.0759), (7, 7.0160034366, 0.9241)),
    "Be": ((9, 9.012183065, 1.0),),
    "B": ((10, 10.01293695, 0.199), (11, 11.00930536, 0.801)),
    "C": ((12, 12.0, 0.9893), (13, 13.00335483507, 0.0107)),
    "N": ((14, 14.00307400443, 0.99636), (15, 15.00010889888, 0.00364)),
    "O": (
        (16, 15.99491461957, 0.99757),
        (17, 16.99913175650, 0.00038),
        (18, 17.99915961286, 0.00205),
    ),
    "F": ((19, 18.99840316273, 1.0),),
    "Ne": ((20, 19.9924401762, 0.9048), (21, 20.993846685, 0.0027), (22, 21.991385114, 0.0925)),
    "Na": ((23, 22.9897692820, 1.0),),
    "Mg": ((24, 23.985041697, 0.7899), (25, 24.985836976, 0.1000), (26, 25.982592968, 0.1101)),
    "Al": ((27, 26.98153853, 1.0),),
    "Si": (
        (28, 27.97692653465, 0.92223),
        (29, 28.97649466490, 0.04685),
        (30, 29.973770136, 0.03092),
    ),
    "P": ((31, 30.97376199842, 1.0),),
    "S": (
        (32, 31.9720711744, 0.9499),
        (33, 32.9714589098, 0.0075),
        (34, 33.967867004, 0.0425),
        (36, 35.96708071, 0.0001),
    ),
    "Cl": ((35, 34.968852682, 0.7576), (37, 36.965902602, 0.2424)),
    "Ar": (
        (36, 35.967545105, 0.003336),
        (38, 37.96273211, 0.000629),
        (40, 39.9623831237, 0.996035),
    ),
    "K": (
        (39, 38.9637064864, 0.932581),
        (40, 39.963998166, 0.000117),
        (41, 40.9618252579, 0.067302),
    ),
    "Ca": (
        (40, 39.962590863, 0.96941),
        (42, 41.95861783, 0.00647),
        (43, 42.95876644, 0.00135),
        (44, 43.9554816, 0.02086),
        (46, 45.953689, 0.00004),
        (48, 47.95252276, 0.00187),
    ),
    "Sc": ((45, 44.95590828, 1.0),),
    "Ti": (
        (46, 45.95262772, 0.0825),
        (47, 46.95175879, 0.0744),
        (48, 47.94794198, 0.7372),
        (49, 48.94786568, 0.0541),
        (50, 49.94478689, 0.0518),
    ),
    "V": ((50, 49.94715601, 0.00250), (51, 50.94395704, 0.99750)),
    "Cr": (
        (50, 49.94604183, 0.04345),
        (52, 51.94050623, 0.83789),
        (53, 52.94064815, 0.09501),
        (54, 53.93887916, 0.02365),
    ),
    "Mn": ((55, 54.93804391, 1.0),),
    "Fe": (
        (54, 53.93960899, 0.05845),
        (56, 55.93493633, 0.91754),
        (57, 56.93539284, 0.02119),
        (58, 57.93327443, 0.00282),
    ),
    "Co": ((59, 58.93319429, 1.0),),
    "Ni": (
        (58, 57.93534241, 0.68077),
        (60, 59.93078588, 0.26223),
        (61, 60.93105557, 0.011399),
        (62, 61.92834537, 0.036346),
        (64, 63.92796682, 0.009255),
    ),
    "Cu": ((63, 62.92959772, 0.6915), (65, 64.92778970, 0.3085)),
    "Zn": (
        (64, 63.92914201, 0.4917),
        (66, 65.92603381, 0.2773),
        (67, 66.92712775, 0.0404),
        (68, 67.92484455, 0.1845),
        (70, 69.9253192, 0.0061),
    ),
    "Ga": ((69, 68.9255735, 0.60108), (71, 70.92470258, 0.39892)),
    "Ge": (
        (70, 69.92424875, 0.2057),
        (72, 71.922075826, 0.2745),
        (73, 72.923458956, 0.0775),
        (74, 73.921177761, 0.3650),
        (76, 75.921402726, 0.0773),
    ),
    "Zr": (
        (90, 89.9046977, 0.5145),
        (91, 90.9056396, 0.1122),
        (92, 91.9050347, 0.1715),
        (94, 93.9063108, 0.1738),
        (96, 95.9082714, 0.0280),
    ),
    "Nb": ((93, 92.9063730, 1.0),),
    "Mo": (
        (92, 91.90680796, 0.1453),
        (94, 93.90508490, 0.0915),
        (95, 94.90583877, 0.1584),
        (96, 95.90467612, 0.1667),
        (97, 96.90601812, 0.0960),
        (98, 97.90540482, 0.2439),
        (100, 99.9074718, 0.0982),
    ),
    "Ag": ((107, 106.9050916, 0.51839), (109, 108.9047553, 0.48161)),
    "W": (
        (180, 179.9467108, 0.0012),
        (182, 181.94820394, 0.2650),
        (183, 182.95022275, 0.1431),
        (184, 183.95093092, 0.3064),
        (186, 185.9543628, 0.2843),
    ),
    "Pt": (
        (190, 189.9599297, 0.00012),
        (192, 191.9610387, 0.00782),
        (194, 193.9626809, 0.3286),
        (195, 194.9647917, 0.3378),
        (196, 195.96495209, 0.2521),
        (198, 197.9678949, 0.07356),
    ),
    "Au": ((197, 196.96656879, 1.0),),
}

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


def ion_name(formula: dict[str, int], charge: int) -> str:
    """The conventional name of an ion (inverse of :func:`parse_ion`).

    Element order is kept as given (write metals first: {"Ni": 1, "O": 1} -> "NiO+").
    """
    if charge < 1:
        raise ValueError(f"charge must be >= 1, got {charge}")
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

"""The range model: disjoint mass-to-charge ranges, each naming one ion.

A range assigns every hit with ``lo_da <= m/n < hi_da`` to one ion. Ranges never overlap; the
table keeps them sorted by ``lo_da`` so ranging is a binary search over the edges
(:mod:`apt_daq.pipeline.ranging`). The ``ion`` field of /derived holds the range index.

A foundation module: the pipeline, the analysis and the plots take the model from here; the
file formats that read and write it (RRNG, RNG) are :mod:`apt_daq.io.ranges`, which
re-exports these names.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from apt_daq.isotopes import ion_name, parse_ion, water_order

MAX_RANGES = 10_000
"""The most ranges a range table may hold: a real range file holds a few hundred; each range
costs ``analyze`` its own background and peak fits (~1 ms), so 10k ranges take ~10 s."""

# default colours per element (hex RRGGBB), loosely the AP Suite palette
ELEMENT_COLOURS = {
    "H": "C8C8C8",
    "Li": "9933FF",
    "O": "0066FF",
    "Ni": "00AA00",
    "Co": "FF66CC",
    "Mn": "FF9900",
    "Cr": "996633",
    "Ga": "FF0000",
    "C": "404040",
    "Al": "33CCCC",
    "Fe": "CC0000",
    "Si": "888800",
}


def default_colour(formula: dict[str, int]) -> str:
    """A stable colour for an ion: its heaviest element's colour, else a hash of the formula."""
    for el in sorted(formula, key=lambda e: -formula[e]):
        if el in ELEMENT_COLOURS:
            return ELEMENT_COLOURS[el]
    # crc32, not hash(): Python salts str hashes per process, and a range file written twice
    # from the same spectrum differed in its colours
    key = ",".join(f"{el}:{n}" for el, n in sorted(formula.items()))
    return f"{zlib.crc32(key.encode()) & 0xFFFFFF:06X}"


@dataclass
class RangeTable:
    """Disjoint mass-to-charge ranges sorted by lower edge, each naming one ion.

    ``names[i]`` is the ion name (``"Ni2+"``), ``composition[i]`` its atoms ({"Ni": 1}),
    ``charge[i]`` its charge, ``colour[i]`` hex RRGGBB, ``volume_nm3[i]`` the RRNG ``Vol``.
    Several ranges may name the same ion (its isotopes).
    """

    names: list[str]
    lo_da: np.ndarray
    hi_da: np.ndarray
    composition: list[dict[str, int]]
    charge: list[int]
    colour: list[str] = field(default_factory=list)
    volume_nm3: list[float] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.names)
        self.lo_da = np.asarray(self.lo_da, dtype=np.float64)
        self.hi_da = np.asarray(self.hi_da, dtype=np.float64)
        if not self.colour:
            self.colour = [default_colour(c) for c in self.composition]
        if not self.volume_nm3:
            self.volume_nm3 = [0.0] * n
        sizes = {
            len(self.lo_da),
            len(self.hi_da),
            len(self.composition),
            len(self.charge),
            len(self.colour),
            len(self.volume_nm3),
        }
        if sizes != {n}:
            raise ValueError("RangeTable: all per-range lists must have the same length")
        order = np.argsort(self.lo_da, kind="stable")
        if np.any(order != np.arange(n)):
            self.lo_da = self.lo_da[order]
            self.hi_da = self.hi_da[order]
            for attr in ("names", "composition", "charge", "colour", "volume_nm3"):
                setattr(self, attr, [getattr(self, attr)[i] for i in order])
        self.validate()

    @classmethod
    def merging_same_ion(cls, names: list[str], lo_da, hi_da, composition: list[dict[str, int]],
                         charge: list[int], source: str = "") -> RangeTable:
        """A table from ranges that may overlap when they name the same ion (a range file's
        repeated line, two windows drawn on one peak: ifes's ErMnO.env, VAlN_film_plan-view
        .rrng): those are merged into one range, with a warning. Ranges of different ions
        that overlap still raise (which ion a hit is would be a guess)."""
        import logging

        order = np.argsort(np.asarray(lo_da, float), kind="stable")
        out: list[list] = []
        merged: list[str] = []
        for i in order:
            a, b = float(lo_da[i]), float(hi_da[i])
            if out and out[-1][0] == names[i] and out[-1][2] > a:
                merged.append(f"{names[i]} [{a:g}, {b:g})")
                out[-1][2] = max(out[-1][2], b)
                continue
            out.append([names[i], a, b, composition[i], charge[i]])
        if merged:
            logging.getLogger("apt_daq.ranges").warning(
                "%s: %d range%s overlapping another of the same ion merged with it: %s", source,
                len(merged), "s" if len(merged) > 1 else "", ", ".join(merged[:8])
                + (", ..." if len(merged) > 8 else ""))
        return cls([o[0] for o in out], np.array([o[1] for o in out]),
                   np.array([o[2] for o in out]), [o[3] for o in out], [o[4] for o in out],
                   source=source)

    def validate(self) -> None:
        """Raise ValueError if a range is empty/inverted or two ranges overlap."""
        where = f"{self.source}: " if self.source else ""
        for i in range(len(self)):
            if not (np.isfinite(self.lo_da[i]) and np.isfinite(self.hi_da[i])):
                raise ValueError(f"{where}range {self.names[i]} has a non-finite edge")
            if not self.hi_da[i] > self.lo_da[i]:
                raise ValueError(
                    f"{where}range {self.names[i]} [{self.lo_da[i]}, "
                    f"{self.hi_da[i]}) is empty or inverted"
                )
            if self.lo_da[i] < 0:
                raise ValueError(f"{where}range {self.names[i]} starts below 0 Da")
        for i in range(len(self) - 1):
            if self.hi_da[i] > self.lo_da[i + 1]:
                raise ValueError(
                    f"{where}ranges {self.names[i]} [{self.lo_da[i]:.4f}, {self.hi_da[i]:.4f}) "
                    f"and {self.names[i + 1]} [{self.lo_da[i + 1]:.4f}, {self.hi_da[i + 1]:.4f})"
                    " overlap"
                )

    def __len__(self) -> int:
        return len(self.names)

    @property
    def ions(self) -> list[str]:
        """Distinct ion names in order of first appearance."""
        return list(dict.fromkeys(self.names))

    def ion_index(self) -> np.ndarray:
        """For each range, the index of its ion in :attr:`ions` (int16)."""
        lookup = {n: i for i, n in enumerate(self.ions)}
        return np.array([lookup[n] for n in self.names], dtype=np.int16)

    def ranges_of(self, name: str) -> list[int]:
        return [i for i, n in enumerate(self.names) if n == name]

    def ion_composition(self, name: str) -> dict[str, int]:
        return self.composition[self.names.index(name)]

    @property
    def elements(self) -> list[str]:
        out: dict[str, None] = {}
        for c in self.composition:
            for el in c:
                out[el] = None
        return list(out)

    @classmethod
    def from_list(cls, rows: list[tuple[str, float, float]], source: str = "") -> RangeTable:
        """Build from (ion name, lo Da, hi Da) rows."""
        names, lo, hi, comp, charge = [], [], [], [], []
        for name, a, b in rows:
            formula, z = parse_ion(name)
            names.append(ion_name(formula, z))
            lo.append(a)
            hi.append(b)
            comp.append(formula)
            charge.append(z)
        return cls(names, np.array(lo), np.array(hi), comp, charge, source=source)


_ANIONS = ("C", "N", "O", "F", "S", "Cl", "H")


def canonical_formula(formula: dict[str, int]) -> dict[str, int]:
    """Metals first (in the given order), then C, N, O, F, S, Cl, H: "NiO", never "ONi"; but
    water and its kin H first, as atom probe users write them: "H2O", "H3O" (but "OH")."""
    metals = {el: n for el, n in formula.items() if el not in _ANIONS}
    rest = {el: formula[el] for el in _ANIONS if el in formula}
    return water_order({**metals, **rest})


# --------------------------------------------------------------------------- in a run file
def table_to_meta(table: RangeTable) -> dict:
    """A range table as JSON for a run file's /meta "ranges", so the run carries its ranges."""
    rows = [{"name": table.names[i], "lo_da": float(table.lo_da[i]),
             "hi_da": float(table.hi_da[i]), "composition": table.composition[i],
             "charge": int(table.charge[i]), "colour": table.colour[i],
             "volume_nm3": float(table.volume_nm3[i])} for i in range(len(table))]
    return {"source": str(table.source), "rows": rows}


def table_from_meta(stored: dict) -> RangeTable:
    """The inverse of :func:`table_to_meta`."""
    rows = stored["rows"]
    return RangeTable(
        names=[r["name"] for r in rows], lo_da=np.array([r["lo_da"] for r in rows], float),
        hi_da=np.array([r["hi_da"] for r in rows], float), composition=[dict(r["composition"]) for r in rows],
        charge=[int(r["charge"]) for r in rows], colour=[r["colour"] for r in rows],
        volume_nm3=[float(r["volume_nm3"]) for r in rows], source=stored.get("source", ""))

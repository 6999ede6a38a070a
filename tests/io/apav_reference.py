"""The reference the real-data and one-stream tests judge composition against, independent
of apt-daq: apav parses the RRNG, numpy counts lower <= m < upper per range (apav's
Range.contains_mass)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def rrng_atoms(mass: np.ndarray, rrng: Path) -> dict[str, float]:
    """Atoms per element of ``mass`` ranged by ``rrng``."""
    import apav

    m = np.asarray(mass, np.float64)
    atoms: dict[str, float] = {}
    for rg in apav.RangeCollection.from_rrng(str(rrng)):
        inside = int(np.count_nonzero((m >= rg.lower) & (m < rg.upper)))
        for el, k in rg.ion.comp_dict.items():
            sym = getattr(el, "symbol", str(el))
            atoms[sym] = atoms.get(sym, 0.0) + inside * int(k)
    return atoms


def rrng_composition(mass: np.ndarray, rrng: Path) -> dict[str, float]:
    """Atomic fractions of ``mass`` ranged by ``rrng``."""
    atoms = rrng_atoms(mass, rrng)
    total = sum(atoms.values())
    return {el: n / total for el, n in atoms.items()}

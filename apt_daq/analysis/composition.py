"""Composition from ranged ion counts: ions decomposed to elements, with counting errors.

Each ranged ion contributes its atoms (an O2+ ion counts two O, NiO+ one Ni and one O). The
atomic fraction of element i is c_i = N_i / N with N the total atoms; its counting (binomial)
error is sqrt(c_i (1 - c_i) / N) (Danoix et al.; the AP Suite convention).

Optional local background subtraction: for each range the background level per Da is taken
from the unranged part of a window just below the range (``bg_window_da``), where the spectrum
of a laser-pulsed run is flat between peaks; counts_net = counts - level * width, >= 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apt_daq.rangetable import RangeTable


@dataclass
class Composition:
    atoms: dict[str, float]  # element -> atom count (background-corrected if asked)
    total: float

    def fraction(self, el: str) -> float:
        return self.atoms.get(el, 0.0) / self.total if self.total > 0 else float("nan")

    def error(self, el: str) -> float:
        c = self.fraction(el)
        return float(np.sqrt(c * (1 - c) / self.total)) if self.total > 0 else float("nan")

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {el: {"fraction": self.fraction(el), "error": self.error(el), "atoms": n}
                for el, n in self.atoms.items()}  # fmt: skip


def ion_counts(range_counts: np.ndarray, ranges: RangeTable) -> dict[str, float]:
    """Counts per ion name (summed over its isotope ranges)."""
    out: dict[str, float] = {}
    for i, name in enumerate(ranges.names):
        out[name] = out.get(name, 0) + float(range_counts[i])
    return out


def decompose(counts_by_ion: dict[str, float], ranges: RangeTable) -> Composition:
    """Element atom counts from ion counts (molecular ions counted per atom)."""
    atoms: dict[str, float] = {}
    for name, c in counts_by_ion.items():
        for el, n in ranges.ion_composition(name).items():
            atoms[el] = atoms.get(el, 0.0) + n * c
    return Composition(atoms, float(sum(atoms.values())))


def range_counts_from_ions(ion: np.ndarray, n_ranges: int) -> np.ndarray:
    """Counts per range index from the /derived ``ion`` column (-1 ignored)."""
    ion = np.asarray(ion)
    return np.bincount(ion[ion >= 0].astype(np.int64), minlength=n_ranges)[:n_ranges]


def background_counts(
    counts: np.ndarray, edges: np.ndarray, ranges: RangeTable, bg_window_da: float = 1.0
) -> np.ndarray:
    """Estimated background counts inside each range (local, flat, from below the range)."""
    centres = 0.5 * (edges[1:] + edges[:-1])
    width = edges[1] - edges[0]
    ranged = np.zeros(len(centres), dtype=bool)
    for lo, hi in zip(ranges.lo_da, ranges.hi_da, strict=True):
        ranged |= (centres >= lo) & (centres < hi)
    out = np.zeros(len(ranges))
    for i, (lo, hi) in enumerate(zip(ranges.lo_da, ranges.hi_da, strict=True)):
        sel = (centres >= lo - bg_window_da) & (centres < lo) & ~ranged
        if sel.sum() < 3:
            continue
        level = counts[sel].sum() / (sel.sum() * width)  # counts per Da
        out[i] = level * (hi - lo)
    return out


def composition(
    range_counts: np.ndarray,
    ranges: RangeTable,
    spectrum: tuple[np.ndarray, np.ndarray] | None = None,
    subtract_background: bool = False,
    bg_window_da: float = 1.0,
) -> tuple[Composition, dict[str, float]]:
    """(element composition, counts per ion) from counts per range."""
    rc = np.asarray(range_counts, dtype=np.float64)
    if subtract_background:
        if spectrum is None:
            raise ValueError("background subtraction needs the mass spectrum (counts, edges)")
        rc = np.maximum(rc - background_counts(*spectrum, ranges, bg_window_da), 0.0)
    counts = ion_counts(rc, ranges)
    return decompose(counts, ranges), counts

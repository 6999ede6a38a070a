"""1-D concentration profiles along the ROI axis (z), streaming, with counting errors.

Ions are binned by depth (``bin_nm``); in each bin the ranged ions are decomposed to elements
and c = n_el / n_atoms with error sqrt(c (1 - c) / n_atoms).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from apt_daq.rangetable import RangeTable


@njit(cache=True, nogil=True)
def _add_atoms(counts, row, ion, atoms):
    """``counts[row[i]] += atoms[ion[i]]`` in order (np.add.at's sums, without its cost)."""
    for i in range(row.shape[0]):
        r = row[i]
        a = ion[i]
        for j in range(atoms.shape[1]):
            counts[r, j] += atoms[a, j]


class ProfileAccumulator:
    """Accumulate element atom counts per z bin chunk by chunk."""

    def __init__(self, ranges: RangeTable, bin_nm: float = 1.0):
        self.bin_nm = float(bin_nm)
        self.elements = ranges.elements
        # atoms of each element per range: (n_ranges, n_elements)
        self.atoms = np.array(
            [[c.get(el, 0) for el in self.elements] for c in ranges.composition], dtype=np.float64
        ).reshape(len(ranges), len(self.elements))
        self.counts = np.zeros((0, len(self.elements)))
        self.z_min_bin = 0

    def add(self, z_nm: np.ndarray, ion: np.ndarray) -> None:
        ok = (ion >= 0) & np.isfinite(z_nm)
        if not ok.any():
            return
        b = np.floor(z_nm[ok] / self.bin_nm).astype(np.int64)
        lo = min(int(b.min()), self.z_min_bin if len(self.counts) else int(b.min()))
        hi = max(int(b.max()) + 1, self.z_min_bin + len(self.counts))
        grown = np.zeros((hi - lo, len(self.elements)))
        if len(self.counts):
            s = self.z_min_bin - lo
            grown[s : s + len(self.counts)] = self.counts
        self.counts, self.z_min_bin = grown, lo
        _add_atoms(self.counts, b - lo, ion[ok], self.atoms)

    def result(self, min_atoms: float = 1.0) -> dict:
        """{"z_nm": centres, "fraction": {el: [...]}, "error": {el: [...]}, "atoms": [...]}."""
        total = self.counts.sum(axis=1)
        keep = total >= min_atoms
        z = (self.z_min_bin + np.arange(len(total)) + 0.5) * self.bin_nm
        frac = {}
        err = {}
        for j, el in enumerate(self.elements):
            c = np.where(total > 0, self.counts[:, j] / np.maximum(total, 1), np.nan)
            frac[el] = c[keep]
            err[el] = np.sqrt(c * (1 - c) / np.maximum(total, 1))[keep]
        return {"z_nm": z[keep], "fraction": frac, "error": err, "atoms": total[keep]}

"""1-D concentration profiles along the ROI axis (z), streaming, with counting errors.

Ions are binned by depth (``bin_nm``); in each bin the ranged ions are decomposed to elements
and c = n_el / n_atoms with error sqrt(c (1 - c) / n_atoms).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from apt_daq.rangetable import RangeTable

PROFILE_MIN_POINTS = 30  # points of a profile when the data allow
PROFILE_ATOMS_PER_BIN = 500  # aimed at: 2.2 % counting error at c = 50 %
PROFILE_MIN_ATOMS_PER_BIN = 100
PROFILE_MIN_BIN_NM = 0.1  # finer than this is below the depth resolution of the method


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


def profile_bins(n_atoms: float, depth_nm: float) -> int:
    """Bins of a depth profile for ``n_atoms`` ranged atoms over ``depth_nm``: about
    :data:`PROFILE_ATOMS_PER_BIN` atoms a bin, at least :data:`PROFILE_MIN_POINTS` bins when
    that leaves :data:`PROFILE_MIN_ATOMS_PER_BIN` atoms in each, never thinner than
    :data:`PROFILE_MIN_BIN_NM`, at most 200."""
    n = max(int(n_atoms // PROFILE_ATOMS_PER_BIN), PROFILE_MIN_POINTS)
    n = min(n, int(n_atoms // PROFILE_MIN_ATOMS_PER_BIN), int(depth_nm / PROFILE_MIN_BIN_NM), 200)
    return max(n, 1)


def depth_profile(z: np.ndarray, ion: np.ndarray, ranges: RangeTable,
                  inside: np.ndarray | None = None, n_bins: int | None = None) -> dict:  # fmt: skip
    """Concentration profile along z from per-ion depths and range indices (e.g. the slice
    sample of a run), bins chosen by :func:`profile_bins` unless given. Same dict as
    :meth:`apt_daq.analysis.profile.ProfileAccumulator.result`, plus ``bin_nm``; errors are
    the binomial counting errors sqrt(c (1 - c) / n) of each bin's n atoms."""
    ok = (ion >= 0) & np.isfinite(z)
    if inside is not None:
        ok &= inside
    z, ion = z[ok].astype(np.float64), ion[ok].astype(np.int64)
    acc = ProfileAccumulator(ranges, 1.0)
    n_atoms = float(acc.atoms[ion].sum()) if len(ion) else 0.0
    if n_atoms == 0:
        return {"z_nm": np.zeros(0), "fraction": {}, "error": {}, "atoms": np.zeros(0),
                "bin_nm": 1.0}  # fmt: skip
    depth = float(z.max() - z.min())
    n = n_bins or profile_bins(n_atoms, depth)
    bin_nm = max(depth, 1e-3) / n
    acc = ProfileAccumulator(ranges, bin_nm)
    acc.add(z - z.min(), ion)  # bins start at the first ion
    out = acc.result(min_atoms=min(20.0, n_atoms / n / 4))
    out["z_nm"] = out["z_nm"] + z.min()
    out["bin_nm"] = bin_nm
    return out

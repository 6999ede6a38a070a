"""Truth scoring: what the measurement misses, judged against the simulator's truth.

- ranging: the fraction of detected ions (with a true species) ranged as their true ion
  (isotopes of one ion count as the same ion), and the fraction of background hits ranged;
- composition: the composition of the true species of the detected hits (what perfect ranging
  would give) and of all evaporated ions (detected + lost, what the specimen gave up), and the
  measured composition's error against the latter;
- reconstruction: rms and median distance between reconstructed and true origins.
"""

from __future__ import annotations

import numpy as np

from apt_daq.isotopes import ion_name, parse_ion
from apt_daq.rangetable import RangeTable

DISTANCE_SAMPLE = 1_000_000
"""Most position errors kept for the median (8 MB): past it the sample is halved and later
chunks give half as many, so memory stays bounded on any run."""


class TruthScorer:
    def __init__(self, ion_table: list, ranges: RangeTable):
        names = [str(row[0]) for row in ion_table]
        self.species_names = names
        canon = []
        for n in names:
            try:
                f, z = parse_ion(n)
                canon.append(ion_name(f, z))
            except ValueError:
                canon.append(n)
        ions = ranges.ions
        lookup = {n: i for i, n in enumerate(ions)}
        self.species_to_ion = np.array([lookup.get(n, -2) for n in canon] or [-2], dtype=np.int64)
        self.range_to_ion = ranges.ion_index().astype(np.int64)
        self.species_atoms = []
        for n in canon:
            try:
                self.species_atoms.append(parse_ion(n)[0])
            except ValueError:
                self.species_atoms.append({})
        self.n_species = len(names)
        self.detected = np.zeros(self.n_species + 1, dtype=np.int64)  # last: background
        self.lost = np.zeros(self.n_species + 1, dtype=np.int64)
        self.correct = 0
        self.with_species = 0
        self.bg_ranged = 0
        self.bg = 0
        self.d2: list[np.ndarray] = []
        self._d_step = 1  # doubles each time the sample is halved
        self.dxy2 = 0.0
        self.dz2 = 0.0
        self.n_pos = 0

    def add(self, truth: np.ndarray, ion: np.ndarray, x=None, y=None, z=None) -> None:
        sp = truth["species"].astype(np.int64)
        real = (sp >= 0) & (sp < self.n_species)
        self.detected += np.bincount(
            np.where(real, sp, self.n_species), minlength=self.n_species + 1
        )
        self.with_species += int(real.sum())
        ion = ion.astype(np.int64)
        ranged_ion = np.where(ion >= 0, self.range_to_ion[np.clip(ion, 0, None)], -1)
        true_ion = np.where(real, self.species_to_ion[np.clip(sp, 0, self.n_species - 1)], -3)
        self.correct += int(np.count_nonzero(real & (ranged_ion == true_ion)))
        self.bg += int((~real).sum())
        self.bg_ranged += int(np.count_nonzero(~real & (ion >= 0)))
        if x is not None:
            # float64: a corrupt /truth (3e38 nm) squares past float32's range
            ok = real & np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
            for k in ("x0", "y0", "z0"):
                ok &= np.isfinite(truth[k])
            dx = np.asarray(x[ok], np.float64) - truth["x0"][ok]
            dy = np.asarray(y[ok], np.float64) - truth["y0"][ok]
            dz = np.asarray(z[ok], np.float64) - truth["z0"][ok]
            self.dxy2 += float(np.sum(dx * dx + dy * dy))
            self.dz2 += float(np.sum(dz * dz))
            self.n_pos += int(ok.sum())
            d = np.sqrt(dx * dx + dy * dy + dz * dz)
            if len(d):
                self.d2.append(d[:: max(1, len(d) // 20000) * self._d_step].copy())
                if sum(len(a) for a in self.d2) > DISTANCE_SAMPLE:
                    self.d2 = [np.concatenate(self.d2)[::2]]
                    self._d_step *= 2

    def add_lost(self, lost: np.ndarray) -> None:
        sp = lost["species"].astype(np.int64)
        real = (sp >= 0) & (sp < self.n_species)
        self.lost += np.bincount(np.where(real, sp, self.n_species), minlength=self.n_species + 1)

    def _composition(self, counts: np.ndarray) -> dict[str, float]:
        atoms: dict[str, float] = {}
        for i in range(self.n_species):
            for el, n in self.species_atoms[i].items():
                atoms[el] = atoms.get(el, 0.0) + n * float(counts[i])
        tot = sum(atoms.values())
        return {el: v / tot for el, v in atoms.items()} if tot > 0 else {}

    def result(self, measured: dict[str, float] | None = None) -> dict:
        detected = self._composition(self.detected)
        evaporated = self._composition(self.detected + self.lost)
        out = {
            "ranged_as_true": self.correct / self.with_species if self.with_species else None,
            "true_ions": int(self.with_species),
            "background_hits": int(self.bg),
            "background_ranged": self.bg_ranged / self.bg if self.bg else None,
            "composition_detected": detected,
            "composition_evaporated": evaporated,
            "lost_ions": int(self.lost.sum()),
        }
        if measured is not None:
            els = sorted(set(measured) | set(evaporated))
            out["composition_error"] = {
                el: measured.get(el, 0.0) - evaporated.get(el, 0.0) for el in els
            }
            out["composition_error_vs_detected"] = {
                el: measured.get(el, 0.0) - detected.get(el, 0.0) for el in els
            }
        if self.n_pos:
            d = np.concatenate(self.d2) if self.d2 else np.zeros(0)
            out["position_error"] = {
                "rms_xy_nm": float(np.sqrt(self.dxy2 / self.n_pos)),
                "rms_z_nm": float(np.sqrt(self.dz2 / self.n_pos)),
                "median_3d_nm": float(np.median(d)) if len(d) else None,
                "ions": int(self.n_pos),
            }
        return out

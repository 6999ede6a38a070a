"""Composition from ranged ion counts: ions decomposed to elements, with counting errors.

Each ranged ion contributes its atoms (an O2+ ion counts two O, NiO+ one Ni and one O). The
atomic fraction of element i is c_i = N_i / N with N the total atoms; its counting (binomial)
error is sqrt(c_i (1 - c_i) / N) (Danoix et al.; the AP Suite convention).

Optional background subtraction: for each range the flat background under it is that of the
per-peak table of ``analyze`` (:func:`range_background`: the one estimator,
:func:`apt_daq.pipeline.peaks.local_background` on the unranged bins of both its flanks, the
bins of peaks left out); counts_net = counts - background, per range, summed per ion with their
signs (a noisy negative net is no bias), so the ion counts are the per-peak table's nets. An
ion whose net is negative counts as no atom. A net count varies by more than its Poisson
error (the gross counts' and the background estimate's), so the error of a background-
subtracted fraction is propagated from the ranges (:func:`net_fraction_errors`), not the
binomial of the net atoms, which would understate it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from apt_daq.rangetable import RangeTable

if TYPE_CHECKING:
    from apt_daq.pipeline.histogram import MassHistogram
    from apt_daq.pipeline.ions import IonStream


@dataclass
class Composition:
    atoms: dict[str, float]  # element -> atom count (background-corrected if asked)
    total: float
    #: element -> standard error of its fraction where it is not the binomial one (a
    #: background-subtracted composition: :func:`net_fraction_errors`)
    errors: dict[str, float] | None = None

    def fraction(self, el: str) -> float:
        return self.atoms.get(el, 0.0) / self.total if self.total > 0 else float("nan")

    def error(self, el: str) -> float:
        if self.errors is not None and el in self.errors:
            return self.errors[el]
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


def net_fraction_errors(comp: Composition, counts_by_ion: dict[str, float],
                        variance: np.ndarray, ranges: RangeTable) -> dict[str, float]:
    """Standard error of each element's fraction c_i = A_i / T from the ranges' net counts
    x_r, each with ``variance[r]`` (gross counts + the background estimate's variance), by
    first-order propagation: var(c_i) = sum_r ((a_ir - c_i t_r) / T)^2 var(x_r), a_ir the
    atoms of element i in range r's ion, t_r all its atoms. Ranges of an ion counted as no
    atom (a negative net) take no part. With var(x_r) = x_r and one-atom ions this is the
    binomial sqrt(c_i (1 - c_i) / T) exactly."""
    if comp.total <= 0:
        return {el: float("nan") for el in comp.atoms}
    out = {}
    for el in comp.atoms:
        c = comp.fraction(el)
        v = 0.0
        for r, name in enumerate(ranges.names):
            if counts_by_ion.get(name, 0.0) <= 0:
                continue
            atoms = ranges.ion_composition(name)
            d = (atoms.get(el, 0) - c * sum(atoms.values())) / comp.total
            v += d * d * float(variance[r])
        out[el] = float(np.sqrt(v))
    return out


def range_counts_from_ions(ion: np.ndarray, n_ranges: int) -> np.ndarray:
    """Counts per range index from the /derived ``ion`` column (-1 ignored)."""
    ion = np.asarray(ion)
    return np.bincount(ion[ion >= 0].astype(np.int64), minlength=n_ranges)[:n_ranges]


def range_background(counts: np.ndarray, edges: np.ndarray, ranges: RangeTable
                     ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(background ions in each range, their standard errors) on the spectrum
    ``counts``/``edges``: the flat level of :func:`~apt_daq.pipeline.peaks.local_background`
    from the bins outside every range on both flanks (flanks of the range's width, >= 0.05 Da,
    widened while they hold too few ions) times the range's bins: the estimate of the per-peak
    table (:func:`apt_daq.analysis.mrp.peak_table`, the same call), which ``analyze`` reports
    beside the composition."""
    from apt_daq.pipeline.peaks import centre_span, flank_width_da, local_background, unranged_bins

    free = unranged_bins(edges, ranges.lo_da, ranges.hi_da)
    bg = np.zeros(len(ranges))
    err = np.zeros(len(ranges))
    for i, (lo, hi) in enumerate(zip(ranges.lo_da, ranges.hi_da, strict=True)):
        lo, hi = float(lo), float(hi)
        level, sigma = local_background(counts, edges, lo, hi, flank_width_da(lo, hi), free)
        span = centre_span(edges, lo, hi)
        n_bins = span.stop - span.start
        bg[i], err[i] = level * n_bins, sigma * n_bins
    return bg, err


def composition(
    range_counts: np.ndarray,
    ranges: RangeTable,
    spectrum: tuple[np.ndarray, np.ndarray] | None = None,
    subtract_background: bool = False,
    *,
    background: np.ndarray | None = None,
    background_error: np.ndarray | None = None,
) -> tuple[Composition, dict[str, float]]:
    """(element composition, counts per ion) from counts per range. ``subtract_background``:
    less ``background`` (ions per range, with its standard errors ``background_error``; 0
    if not given) or, without it, :func:`range_background` of ``spectrum``; the ion counts
    are then the nets summed with their signs, an ion whose net is negative counts as no
    atom, and the fractions' errors are :func:`net_fraction_errors`."""
    gross = np.asarray(range_counts, dtype=np.float64)
    if not subtract_background:
        counts = ion_counts(gross, ranges)
        return decompose(counts, ranges), counts
    if background is None:
        if spectrum is None:
            raise ValueError("background subtraction needs the mass spectrum (counts, edges)")
        background, background_error = range_background(*spectrum, ranges)
    bg_err = (np.zeros(len(gross)) if background_error is None
              else np.asarray(background_error, dtype=np.float64))
    counts = ion_counts(gross - np.asarray(background, dtype=np.float64), ranges)
    comp = decompose({k: max(v, 0.0) for k, v in counts.items()}, ranges)
    comp.errors = net_fraction_errors(comp, counts, gross + bg_err**2, ranges)
    return comp, counts


@dataclass
class StreamComposition:
    """What one streamed pass over a run gives: ``ions`` read, ``range_counts`` per range,
    the mass ``spectrum``, the element ``composition`` and ``ion_counts`` per ion name."""

    ions: int
    range_counts: np.ndarray
    spectrum: MassHistogram
    composition: Composition
    ion_counts: dict[str, float]


def stream_composition(stream: IonStream, bin_da: float = 0.01, max_da: float | None = None,
                       subtract_background: bool = False) -> StreamComposition:
    """Composition, counts per range and the mass spectrum of a whole run in one pass over
    its ion stream, chunk by chunk: memory is the stream's chunk (:data:`ION_CHUNK` ions)
    plus the spectrum and the counts, whatever the run's size. ``max_da``: the spectrum's
    top (default 20 Da above the highest range)."""
    from apt_daq.pipeline.histogram import MassHistogram, count_kernel

    ranges = stream.ranges
    if ranges is None or len(ranges) == 0:
        raise ValueError("stream_composition needs a stream with ranges")
    spec = MassHistogram(bin_da, float(ranges.hi_da.max()) + 20.0 if max_da is None else max_da)
    rc = np.zeros(len(ranges), dtype=np.int64)
    n = 0
    for c in stream:
        spec.add(c.mass)
        count_kernel(c.ion, rc)
        n += len(c)
    comp, counts = composition(rc, ranges, (spec.counts, spec.edges), subtract_background)
    return StreamComposition(n, rc, spec, comp, counts)

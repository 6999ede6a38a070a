"""The reference peak of a run's voltage and bowl fit (:func:`apt_daq.pipeline.ions.
fit_run_calibration`): which range it is, the m/n its name means, and the check that the fit
on it did not move the run's other peaks off theirs.

A fit puts the reference range's ions at the m/n of the ion the range is named for. Named
wrong (a range file's most counted range called Ni2+ where the ions are 28Si+), the fit scales
every m/n by the ratio of the two (+3.5 %) and the analysis goes on with every other peak out
of its range; nothing else says so. The other well-populated ranges are the witnesses: their
ions are followed through the fit, and a fit that leaves them further from their own m/n than
they were, and further than :data:`MOVED_TOLERANCE`, is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apt_daq.errors import UserError
from apt_daq.pipeline.corrections import Calibration, factors
from apt_daq.rangetable import RangeTable

MOVED_MIN_SHARE = 0.01
"""The other ranges that witness: those holding >= 1 % of the ranged ions."""
MOVED_TOLERANCE = 0.01
"""Median offset (Da per Da) of the witnesses from their m/n a fit may leave when it did not
already stand there before the fit (a correct reference moves them by a few 1e-4)."""


def reference_range(ion: np.ndarray, x_mm: np.ndarray, y_mm: np.ndarray, radius_mm: float,
                    n_ranges: int) -> int:
    """The range to fit the corrections on: the most counted one in the central half of the
    detector radius. A bowl correction needs its reference across the field of view; a peak
    that only lands at the rim (the Cr of a coating shell, ~30 % of a coated run's ions) leaves
    the centre to extrapolation. Falls back to the most counted range overall."""
    ok = ion >= 0
    central = ok & (np.hypot(x_mm, y_mm) < 0.5 * radius_mm)
    use = central if central.any() else ok
    return int(np.argmax(np.bincount(ion[use].astype(np.int64), minlength=n_ranges)))


def named_da(ranges: RangeTable, i: int) -> float | None:
    """The m/n range ``i``'s name means: the lightest isotopologue of its ion inside the range
    (None: none is, the name is no ion whose peak the range holds)."""
    from apt_daq.isotopes import isotopologues

    lo, hi = ranges.lo_da[i], ranges.hi_da[i]
    try:
        peaks = [m for m, _ in isotopologues(ranges.composition[i], ranges.charge[i])
                 if lo <= m < hi]  # fmt: skip
    except (KeyError, ValueError):
        return None
    return float(peaks[0]) if peaks else None


def _offsets(m: np.ndarray, ion: np.ndarray, ranges: RangeTable,
             judged: list[int]) -> np.ndarray:
    """|median m/n / named m/n - 1| of each judged range's ions."""
    return np.array([abs(float(np.median(m[ion == i])) / (named_da(ranges, i) or 1.0) - 1.0)
                     for i in judged])


def refuse_moving_fit(path: str | Path, cal: Calibration, m_raw: np.ndarray, v: np.ndarray,
                      x: np.ndarray, y: np.ndarray, ion: np.ndarray, ranges: RangeTable,
                      ref: int) -> None:
    """Refuse (one line) a fit on range ``ref`` that moved the other well-populated ranges'
    ions away from the m/n their names mean (module doc). ``m_raw``, ``v``, ``x``, ``y``: the
    fit's sample, uncorrected; ``ion``: its range index before the fit."""
    counts = np.bincount(ion[ion >= 0].astype(np.int64), minlength=len(ranges))
    judged = [i for i in range(len(ranges)) if i != ref and counts[i] > 0
              and counts[i] >= MOVED_MIN_SHARE * counts.sum() and named_da(ranges, i)]
    if not judged:
        return
    fitted = m_raw / factors(cal, v, x, y)
    before, after = _offsets(m_raw, ion, ranges, judged), _offsets(fitted, ion, ranges, judged)
    if float(np.median(after)) <= max(float(np.median(before)), MOVED_TOLERANCE):
        return
    worst = sorted(range(len(judged)), key=lambda k: -after[k])
    moved = ", ".join(
        f"{ranges.names[judged[k]]} {float(np.median(fitted[ion == judged[k]])):.3f} Da (its "
        f"m/n {named_da(ranges, judged[k]):.3f})" for k in worst[:4]
        if after[k] > max(before[k], MOVED_TOLERANCE))
    ref_da = named_da(ranges, ref)
    at = f"{ref_da:.3f} Da" if ref_da else "the range's centre"
    raise UserError(f"{path}: the voltage and bowl fit on the reference peak "
                    f"{ranges.names[ref]} (put at {at}) moves the other peaks off their m/n: "
                    f"{moved}; the reference range is likely misnamed: fix the range file, or "
                    "name a reference: `apt-daq calibrate RUN --reference ION` (or the run's "
                    "analysis.reference_peak)")

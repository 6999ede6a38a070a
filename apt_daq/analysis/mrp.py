"""Mass resolving power m / dm at 50 % (FWHM) and 10 % (FW10%M) of the peak height."""

from __future__ import annotations

import numpy as np

from apt_daq.io.ranges import RangeTable
from apt_daq.isotopes import isotopologues
from apt_daq.pipeline.peaks import peak_shape, peak_window_da


def mrp_window(m0: float) -> tuple[float, float]:
    """The open interval of m/n that :func:`mrp` uses for a peak at ``m0`` (what an analysis
    keeps of the stream per peak: every ion there, so the result is that of all the ions)."""
    w = peak_window_da(m0)
    return m0 - w, m0 + 2 * w


def main_peaks(
    ranges: RangeTable, ion_counts: dict[str, float], top: int = 5
) -> list[tuple[str, float]]:
    """(ion name, m/n of its most abundant isotopologue) of the ``top`` most counted ions."""
    out = []
    for name in sorted(ion_counts, key=lambda n: -ion_counts[n])[:top]:
        if ion_counts[name] <= 0:
            continue
        formula = ranges.ion_composition(name)
        z = ranges.charge[ranges.names.index(name)]
        m, _ = max(isotopologues(formula, z), key=lambda p: p[1])
        out.append((name, m))
    return out


def mrp(mass: np.ndarray, peaks: list[tuple[str, float]], min_ions: int = 200) -> list[dict]:
    """Per peak: position, FWHM and FW10%M (Da) and m/dm at 50 % and 10 %."""
    out = []
    mass = np.asarray(mass, dtype=np.float64)
    for name, m0 in peaks:
        shape = peak_shape(mass, m0)
        if shape is None or not np.isfinite(shape.fwhm_da):
            continue
        n = int(np.count_nonzero(np.abs(mass - m0) < 3 * shape.fwhm_da))
        if n < min_ions:
            continue
        out.append({
            "peak": name,
            "nominal_da": m0,
            "mass": round(shape.position_da, 4),
            "fwhm": shape.fwhm_da,
            "fw10m": shape.fw10m_da,
            "mrp50": shape.mrp50,
            "mrp10": shape.mrp10,
        })  # fmt: skip
    return out

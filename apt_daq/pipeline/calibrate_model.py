"""The calibration's building blocks (:mod:`apt_daq.pipeline.calibrate`): the candidate isotope
peaks of the ions sought, the hit sample and its m/n under a trial calibration, and a peak's
apex."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apt_daq.errors import UserError
from apt_daq.isotopes import ion_name, isotopologues, parse_ion
from apt_daq.pipeline.corrections import Calibration, corrected_mass_kernel, factors

CHARGES = (1, 2, 3, 4)
MIN_WINDOW_IONS = 200
FIT_IONS = 200_000  # ions the t0 / L least squares uses at most (a stride over the windows)
LOG_BIN = 2e-4  # relative bin of the identification spectrum
CENTRAL = 0.45  # identification uses ions within this fraction of the detector radius


# ----------------------------------------------------------------------------- candidates
@dataclass(frozen=True)
class Candidate:
    """One predicted isotope peak: ``isotope`` "184W3+", of ``ion`` "W3+"."""

    ion: str
    isotope: str
    element: str
    charge: int
    mass_da: float  # m/n of the isotope (atomic masses / charge)
    abundance: float  # fraction of the ion's ions in this peak
    spacing_da: float  # m/n distance to the neighbouring isotope peak of the same ion


def ion_candidates(ion: str, min_abundance: float = 1e-3) -> list[Candidate]:
    """The isotope peaks of one ion (abundance >= ``min_abundance``), with their spacings."""
    formula, z = parse_ion(ion)
    name = ion_name(formula, z)
    pat = isotopologues(formula, z, min_abundance)
    ms = np.array([m for m, _ in pat])
    out = []
    for m, p in pat:
        d = np.abs(ms - m)
        d = d[d > 1e-6]
        spacing = float(d.min()) if len(d) else 1.0 / z
        a = round(m * z)
        out.append(Candidate(name, f"{a}{name}", "".join(formula), z, float(m), float(p),
                             spacing))  # fmt: skip
    return out


def candidates(names: list[str], charges: tuple[int, ...] = CHARGES) -> dict[str, list[Candidate]]:
    """Ion name -> its isotope peaks, for elements (every charge in ``charges``) or ions."""
    out: dict[str, list[Candidate]] = {}
    for raw in names:
        n = raw.strip()
        if not n:
            continue
        try:
            if n.endswith("+"):
                ions = [n]
            else:
                formula, _ = parse_ion(n + "+")
                ions = [ion_name(formula, z) for z in charges]
            for ion in ions:
                c = ion_candidates(ion)
                out[c[0].ion] = c
        except (KeyError, ValueError) as e:
            raise UserError(f"--elements: {n!r}: {str(e).strip(chr(39))}") from None
    if not out:
        raise UserError("--elements: no element or ion given")
    return out


# ----------------------------------------------------------------------------- the sample
@dataclass
class Sample:
    """Hits of a run as float64 arrays: TOF (ns), detector x, y (mm), V = V_dc + beta V_pulse."""

    tof: np.ndarray
    x: np.ndarray
    y: np.ndarray
    v: np.ndarray

    def __len__(self) -> int:
        return len(self.tof)

    @property
    def r2(self) -> np.ndarray:
        return self.x * self.x + self.y * self.y

    def take(self, sel) -> Sample:
        return Sample(self.tof[sel], self.x[sel], self.y[sel], self.v[sel])


def mass(s: Sample, t0_ns: float, flight_path_mm: float, cal: Calibration | None = None) -> np.ndarray:
    """m/n (Da) of the sample by the pipeline's one corrected-mass kernel."""
    cal = cal or Calibration()
    out = np.empty(len(s), np.float64)
    zero = np.zeros(len(s), np.float64)
    corrected_mass_kernel(s.tof, s.x, s.y, s.v, zero, float(t0_ns), float(flight_path_mm), 1.0,
                          cal.vc, cal.bc, out)  # fmt: skip
    return out


def factor(cal: Calibration, s: Sample) -> np.ndarray:
    """f_V(V) f_B(x, y) of each hit."""
    return factors(cal, s.v, s.x, s.y)


# ----------------------------------------------------------------------------- apex
def apex(m: np.ndarray, guess: float, half: float, min_ions: int = 20) -> tuple[float, int, float]:
    """(apex, ions, FWHM) of the peak near ``guess`` among ``m`` within +- ``half``: the
    histogram maximum (5-bin smoothed), then a mean shift over +- 1 FWHM around it, so a
    neighbouring isotope beyond the window never pulls it. NaN apex if too few ions."""
    sel = m[np.abs(m - guess) < half]
    if len(sel) < min_ions:
        return float("nan"), len(sel), float("nan")
    nb = int(np.clip(len(sel) // 10, 30, 200))
    counts, edges = np.histogram(sel, nb, (guess - half, guess + half))
    c = 0.5 * (edges[1:] + edges[:-1])
    k = np.convolve(counts.astype(float), np.ones(5) / 5, "same")
    i = int(np.argmax(k))
    top = float(c[i])
    # the contiguous run of bins above half maximum around the top
    lo = i
    while lo > 0 and k[lo - 1] >= 0.5 * k[i]:
        lo -= 1
    hi = i
    while hi < len(k) - 1 and k[hi + 1] >= 0.5 * k[i]:
        hi += 1
    bw = edges[1] - edges[0]
    fwhm = max((hi - lo + 1) * bw, 2 * bw)
    h = max(fwhm, 3 * bw)
    for _ in range(30):
        near = sel[np.abs(sel - top) < h]
        if len(near) < 5:
            break
        new = float(near.mean())
        if abs(new - top) < 1e-3 * bw:
            top = new
            break
        top = new
    return top, len(sel), fwhm



def _half_rel(c: Candidate) -> float:
    return 0.3 * c.spacing_da / c.mass_da


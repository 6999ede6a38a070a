"""Calibrating a straight-flight instrument from its own raw hits: t0, flight length, voltage
and bowl corrections, fitted on identified isotope peaks (``apt-daq calibrate``).

The model is the pipeline's one m/n (:func:`apt_daq.pipeline.tof.mass_da`)::

    m/n = K V (t - t0)^2 / (L^2 + x^2 + y^2) / (f_V(V) f_B(x, y))

so at fixed V and detector point sqrt(m/n) is linear in t: a wrong t0 shifts light and heavy
peaks by different fractions, a wrong L all by the same. Reflectron instruments do not follow
it and are refused. Steps (:func:`calibrate_sample`):

1. **Identify** (unless t0 and L are both given): on the central ions (r < 0.45 R, where the
   bowl is small) the spectrum is computed for trial t0 on a grid; for each, the isotope
   patterns of the candidate ions (given elements at charges 1-4, or named ions) are slid over
   it in log(m/n) (a scale: the flight length) and scored by the significance of the counts at
   each predicted isotope, weighted by its abundance within its ion. The best (t0, scale)
   identifies the ions present (their pattern found: every isotope of >= 30 % of the strongest
   one's abundance seen) and their isotope peaks.
2. **t0 and L** (with first guesses of the voltage and bowl terms): a per-ion least-squares fit
   in TOF space, t_j = t0 + sqrt(m_i f_V f_B (L^2 + r_j^2) / (K V_j)) for the ions j in a
   narrow window (+-0.3 of the isotope spacing) around each identified isotope peak i
   (linearised, iterated, 3-sigma trimmed; windows re-centred at each iteration).
3. **Voltage and bowl corrections on ONE reference isotope peak** (``--reference`` or the most
   counted isolated identified peak): windows +-0.3 x the spacing to the neighbouring isotope
   of that ion, voltage bins and detector cells that pool >= 200 ions in the window, the apex
   of each by a histogram mode refined by a mean shift over +-1 FWHM (so the neighbouring
   isotope never pulls it), centred on where the current model puts the peak; alternately,
   twice.
4. t0 and L again with the corrections fixed, then 3 again; then the residual (ppm) of every
   identified isotope peak's apex against its true m/n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from apt_daq.errors import UserError
from apt_daq.isotopes import ion_name, parse_ion
from apt_daq.pipeline.calibrate_fit import fit_reference, fit_t0_l, voltage_residual_ppm
from apt_daq.pipeline.calibrate_identify import Identification, explained, identify, resolved_peaks
from apt_daq.pipeline.calibrate_model import (
    CENTRAL,
    CHARGES,
    FIT_IONS,
    LOG_BIN,
    MIN_WINDOW_IONS,
    Candidate,
    Sample,
    _half_rel,
    apex,
    candidates,
    factor,
    ion_candidates,
    mass,
)
from apt_daq.pipeline.corrections import Calibration

__all__ = [
    "CENTRAL",
    "CHARGES",
    "FIT_IONS",
    "LOG_BIN",
    "MIN_WINDOW_IONS",
    "CalibrationResult",
    "Candidate",
    "Identification",
    "Sample",
    "apex",
    "calibrate_sample",
    "candidates",
    "choose_reference",
    "explained",
    "factor",
    "fit_reference",
    "fit_t0_l",
    "identify",
    "ion_candidates",
    "mass",
    "peak_residuals",
    "resolved_peaks",
    "voltage_residual_ppm",
]


@dataclass
class CalibrationResult:
    calibration: Calibration
    peaks: list[dict]  # per identified isotope peak (see Calibration.peaks)
    present: list[str]
    reference: Candidate
    identification: Identification
    nominal: dict


def choose_reference(m: np.ndarray, peaks: list[Candidate], groups: dict[str, list[Candidate]],
                     present: list[str], wanted: str | None) -> Candidate:  # fmt: skip
    """The reference isotope peak: ``wanted`` (an ion: its most abundant isotope; or an
    isotope "184W3+"), else the most counted isolated identified peak."""
    if wanted:
        w = wanted.strip()
        for c in peaks:
            if c.isotope == w:
                return c
        try:
            formula, z = parse_ion(w)
            name = ion_name(formula, z)
        except (KeyError, ValueError):
            name = w
        of_ion = [c for c in peaks if c.ion == name]
        if not of_ion:
            found = ", ".join(present) or "none"
            raise UserError(f"--reference {w}: not an identified peak (ions found: {found})")
        return max(of_ion, key=lambda c: c.abundance)
    allp = [c for n in present for c in groups[n]]

    def isolation(c):
        d = [abs(o.mass_da / c.mass_da - 1) for o in allp if o is not c and o.abundance >= 1e-3]
        return min(d) if d else 1.0

    def count(c):
        return int(np.count_nonzero(np.abs(m / c.mass_da - 1) < _half_rel(c)))

    iso = [c for c in peaks if isolation(c) >= 4e-3] or peaks
    return max(iso, key=count)


def calibrate_sample(s: Sample, names: list[str], nominal_t0_ns: float, nominal_l_mm: float,
                     radius_mm: float, *, t0_ns: float | None = None,
                     flight_path_mm: float | None = None, reference: str | None = None,
                     charges: tuple[int, ...] = CHARGES, strict: bool = True
                     ) -> CalibrationResult:  # fmt: skip
    """Identify, fit t0 and L, the voltage and bowl corrections, and report (module doc).
    ``strict``: a name of ``names`` that explains no peak is an error (the user named it);
    otherwise (names from the run's own ion table, which lists every ion the ranges could
    hold: a short run may hold none of a minor one) it is left out with a note."""
    groups = candidates(names, charges)
    ident = identify(s, groups, nominal_l_mm, radius_mm, t0_ns=t0_ns,
                     flight_path_mm=flight_path_mm)
    if not ident.present:
        raise UserError(f"no peak of {', '.join(names)} found (charges "
                        f"{', '.join(map(str, charges))}, t0 -100..100 ns, flight length "
                        f"{nominal_l_mm:g} mm +-20 %): give --t0-ns / --flight-path-mm, or "
                        "other elements")
    ok = explained(ident, groups)
    if ok and not ok[0] and sum(ok) < 3:
        missed = [f"{m:.2f}" for m, e in zip(ident.strongest, ok, strict=True) if not e]
        raise UserError(f"{', '.join(names)}: explain none of the strongest peaks of the spectrum "
                        f"(at {', '.join(missed)} Da with t0 {ident.t0_ns:.1f} ns, L {ident.flight_path_mm:.1f} mm): add "
                        "their elements to --elements")
    unexplained = _unexplained(names, groups, ident.present)
    if unexplained and strict:
        raise UserError(f"{', '.join(unexplained)}: explain no peak of the spectrum (ions found: "
                        f"{', '.join(ident.present)}); leave them out")
    peaks = ident.peaks
    if not peaks:
        raise UserError(f"ions {', '.join(ident.present)} found, but none of their isotope peaks "
                        "is resolved from the others")
    fit_t0 = t0_ns is None
    fit_l = flight_path_mm is None
    t0, lf = ident.t0_ns, ident.flight_path_mm
    central = s.take(s.r2 < (CENTRAL * radius_mm) ** 2)
    # L given: the scale the identification found is the corrections' (f_V = 1 / scale)
    cal = Calibration() if fit_l else Calibration((1.0 / ident.scale, 0.0, 0.0))
    # t0 and L on the central ions, then with the voltage and bowl terms on all of them
    t0, lf, cal, _ = fit_t0_l(central if len(central) > 2000 else s, peaks, t0, lf, cal,
                              fit_t0=fit_t0, fit_l=fit_l)
    for _ in range(2):
        t0, lf, cal, _ = fit_t0_l(s, peaks, t0, lf, cal, fit_t0=fit_t0, fit_l=fit_l,
                                  fit_corrections=True)
    m = mass(s, t0, lf, cal)
    ref = choose_reference(m, peaks, groups, ident.present, reference)
    notes: list[str] = []
    # the voltage and bowl corrections on the reference, t0 and L with them fixed; twice
    for _ in range(2):
        cal, nn = fit_reference(s, ref, t0, lf, cal, radius_mm, fit_scale_in_l=fit_l)
        notes += nn
        t0, lf, _c, _n = fit_t0_l(s, peaks, t0, lf, cal, fit_t0=fit_t0, fit_l=fit_l)
    m = mass(s, t0, lf, cal)
    table, foreign = pattern_checked(peak_residuals(m, groups, ident.present, peaks), groups)
    cal.t0_ns, cal.flight_path_mm = float(t0), float(lf)
    cal.reference, cal.reference_da = ref.isotope, ref.mass_da
    cal.fit_ions = int(np.count_nonzero(np.abs(m / ref.mass_da - 1) < _half_rel(ref)))
    cal.residual_ppm = voltage_residual_ppm(m, s.v, ref)
    cal.ions = list(ident.present)
    cal.peaks = table
    cal.notes = list(dict.fromkeys(notes + foreign))
    if unexplained:
        cal.notes.append(f"no peak of {', '.join(unexplained)} (in the run's ion table) "
                         "found: left out")
    if t0_ns is not None:
        cal.notes.append(f"t0 given: {t0_ns:g} ns")
    if flight_path_mm is not None:
        cal.notes.append(f"flight length given: {flight_path_mm:g} mm")
    nominal = {"t0_ns": nominal_t0_ns, "flight_path_mm": nominal_l_mm}
    return CalibrationResult(cal, table, ident.present, ref, ident, nominal)


def _unexplained(names: list[str], groups: dict[str, list[Candidate]],
                 present: list[str]) -> list[str]:
    """The elements and ions of ``names`` that no identified peak belongs to."""
    given_el = {n.strip() for n in names if n.strip() and not n.strip().endswith("+")}
    out = [el for el in sorted(given_el) if not any(groups[p][0].element == el for p in present)]
    out += [n.strip() for n in names if n.strip().endswith("+")
            and not any(groups[p][0].ion == ion_name(*parse_ion(n.strip())) for p in present)]
    return out


def peak_residuals(m: np.ndarray, groups: dict[str, list[Candidate]], present: list[str],
                   fitted: list[Candidate], min_ions: int = 100) -> list[dict]:  # fmt: skip
    """Apex, counts and residual (ppm) of every isotope peak of the present ions that holds
    >= ``min_ions`` ions in its window (+-0.3 of the isotope spacing)."""
    used = {c.isotope for c in fitted}
    out = []
    for name in present:
        for c in groups[name]:
            half = _half_rel(c) * c.mass_da
            top, n, _fwhm = apex(m, c.mass_da, half, min_ions)
            if not np.isfinite(top):
                continue
            out.append({"isotope": c.isotope, "ion": c.ion, "mass_da": round(c.mass_da, 6),
                        "apex_da": round(top, 6), "counts": int(n),
                        "residual_ppm": round((top / c.mass_da - 1) * 1e6, 1),
                        "fitted": c.isotope in used})
    return sorted(out, key=lambda p: p["mass_da"])


def pattern_checked(rows: list[dict], groups: dict[str, list[Candidate]]
                    ) -> tuple[list[dict], list[str]]:
    """The peak rows an isotope pattern allows, and a note for each it does not: a minor
    isotope's peak holding far more ions than its share of the ion's strongest peak
    (> 3 x expected + 5 sigma + 20: background and a few % of mis-shaped peaks stay in) is
    another ion's peak (calcite's 48Ca3+ window at 15.96 Da holds O+, an oxide's 64Ni2+
    window at 31.96 Da O2+): left out of the table, named in a note."""
    share = {c.isotope: c.abundance for cands in groups.values() for c in cands}
    by_ion: dict[str, list[dict]] = {}
    for r in rows:
        by_ion.setdefault(r["ion"], []).append(r)
    kept, notes = [], []
    for ion, rs in by_ion.items():
        top = max(rs, key=lambda r: share[r["isotope"]])
        for r in rs:
            want = top["counts"] * share[r["isotope"]] / share[top["isotope"]]
            if r is not top and r["counts"] > 3 * want + 5 * math.sqrt(want) + 20:
                notes.append(f"the {r['isotope']} window at {r['mass_da']:g} Da holds "
                             f"{r['counts']} ions where {ion}'s isotope pattern allows ~"
                             f"{want:.0f} (from {top['isotope']}'s {top['counts']}): another "
                             "ion's peak, left out (name it in --elements)")
            else:
                kept.append(r)
    return sorted(kept, key=lambda r: r["mass_da"]), notes


__all__ = [
    "CalibrationResult",
    "Candidate",
    "Sample",
    "apex",
    "calibrate_sample",
    "candidates",
    "fit_reference",
    "fit_t0_l",
    "identify",
    "mass",
]

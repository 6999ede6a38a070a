"""What ``apt-daq import`` (:mod:`.import_`) and ``apt-daq info FILE`` conclude from a file's
own numbers: the flight length its m/n, TOF and V imply (one estimate: the one the run keeps,
and the one the summary and the voltage note name), the pulses its pulse numbers span, and
whether its m/n are m/n at all."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from apt_daq.errors import DataFileError

log = logging.getLogger("apt_daq.import")
FLIGHT_PATH_AGREE = 0.02  # a given flight length this far from the file's implied one is wrong
IMPLIED_HOW = "median of sqrt(k V (t - t0)^2 / m - x^2 - y^2)"


# ------------------------------------------------------------------------------ flight path
def implied_mm(src, t0: float, sample: int) -> float | None:
    """The flight length (mm) a file with m/n, TOF and V implies with the pipeline's geometry
    (median of sqrt(k V (t - t0)^2 / m - x^2 - y^2) over the first ``sample`` ions, V = V_dc +
    V_pulse, the detector position when the file has it), or None."""
    from apt_daq.io.epos import PLAUSIBLE_FLIGHT_M, implied_flight_path_m

    present = set(src.present)
    if not ({"mass", "tof", "v_dc"} <= present and src.n):
        return None
    first = next(src.iter(sample), None)
    if first is None:
        return None
    det = {"det_x", "det_y"} <= present
    with np.errstate(all="ignore"):  # a corrupt file's bytes: infinities, signalling NaNs
        v = first["v_dc"] + np.nan_to_num(first["v_pulse"])
        l_m = implied_flight_path_m(first["mass"], first["tof"] - t0, v,
                                    first["det_x"] if det else None,
                                    first["det_y"] if det else None)
    if not np.isfinite(l_m):
        return None
    lo, hi = PLAUSIBLE_FLIGHT_M
    if not lo <= l_m <= hi:  # --voltage-unit kV on a file in volts: 10.2 m
        log.warning("%s: the file's TOF, V and m/n imply a %.0f mm flight path, which no atom "
                    "probe has (%.0f-%.0f mm): are its voltages in the unit assumed "
                    "(--voltage-unit)?", getattr(src, "path", "the file"), l_m * 1000,
                    lo * 1000, hi * 1000)
    return round(l_m * 1000.0, 3)


def detector_from_hits(src, inst: dict, sample: int) -> str | None:
    """With no instrument given: a detector wide enough for the file's hits. The nominal
    diameter (80 mm) clipped an APyT TAP file's hits (out to +-70 mm) from the hit map and set
    the reconstruction's detector area and the bowl fit's cells; when 0.1 % of the first
    ``sample`` hits lie beyond it, the diameter becomes twice their 99.9th-percentile radius,
    rounded up to the mm (in ``inst``). What it says, or None."""
    if not {"det_x", "det_y"} <= set(src.present) or src.n == 0:  # None: a CSV, uncounted
        return None
    first = next(src.iter(sample), None)
    if first is None:
        return None
    with np.errstate(all="ignore"):
        r = np.hypot(first["det_x"].astype(np.float64), first["det_y"].astype(np.float64))
    r = r[np.isfinite(r)]
    nominal = float(inst.get("detector_diameter_mm", 80.0))
    if not len(r) or np.quantile(r, 0.999) <= 0.5 * nominal:
        return None
    d = float(np.ceil(2.0 * np.quantile(r, 0.999)))
    if d > 1000.0:  # a metre: not detector coordinates in mm
        return None
    inst["detector_diameter_mm"] = d
    return (f"{d:g} mm, from the hits (0.1 % reach beyond {nominal:g} mm, the nominal; "
            "--instrument gives the real one)")


def implied_flight_path(present: set[str], inst: dict, l_mm: float | None) -> str | None:
    """With none given: the flight length ``l_mm`` a file with m/n, TOF and V implies (set in
    ``inst``), or a note that the nominal one is used (no m/n); what the summary says of it
    (None: say nothing)."""
    if "mass" not in present:
        return ("not given: nominal; give --flight-path-mm/--t0-ns or "
                "--instrument, or fit them with apt-daq calibrate")
    if l_mm is None:
        return None
    inst["flight_path_mm"] = l_mm
    return f"implied by TOF, V and m/n: {l_mm:g} mm ({IMPLIED_HOW}); give --flight-path-mm if known"


def check_flight_path(inst: dict, l_mm: float | None, summary: dict, path: str | Path, *,
                      given: bool, source: str) -> None:
    """A flight length from --instrument ``source`` or --flight-path-mm (``given``) against
    the one the file's own TOF, V and m/n imply (``l_mm``). m/n recomputed from TOF (``--recalibrate``,
    ``calibrate``'s start) with a length ``f`` off is off by ~``2 f``: a LEAP XR's 382 mm
    against the 324 mm a real reflectron EPOS implies put calcite's 40Ca2+ at 14.4 Da and
    ranged it as Al2+. An instrument file's length is replaced by the implied one (the straight
    flight path the file's m/n mean; a reflectron's folded path is not modelled); a
    --flight-path-mm the user typed is kept, with a warning."""
    from apt_daq.io.epos import PLAUSIBLE_FLIGHT_M

    have = float(inst.get("flight_path_mm") or 0.0)
    if l_mm is None or have <= 0 or abs(have / l_mm - 1.0) <= FLIGHT_PATH_AGREE:
        return
    lo, hi = PLAUSIBLE_FLIGHT_M
    if not lo <= l_mm / 1000.0 <= hi:  # the data are off (their unit), not the instrument
        return
    off = f"{100 * abs(have / l_mm - 1.0):.0f} %"
    if given:
        summary["flight_path"] += f"; the file's TOF, V and m/n imply {l_mm:g} mm ({off} apart)"
        log.warning("%s: --flight-path-mm %g mm, but the file's TOF, V and m/n imply %.0f mm "
                    "(%s apart): m/n recomputed from TOF (--recalibrate, calibrate) starts "
                    "~%.0f %% off; the file's own m/n is used otherwise", path, have, l_mm, off,
                    100 * abs((l_mm / have) ** 2 - 1.0))
        return
    inst["flight_path_mm"] = l_mm
    summary["flight_path"] = (f"implied by TOF, V and m/n: {l_mm:g} mm; {source} says "
                              f"{have:.0f} mm ({off} apart)")
    log.warning("%s: the instrument file says a %.0f mm flight path, the file's TOF, V and m/n "
                "imply %.0f mm (%s apart%s): the run keeps %.0f mm, the straight flight path "
                "its m/n mean", path, have, l_mm, off,
                "; a reflectron's folded path" if inst.get("reflectron") else "", l_mm)


def voltage_note(note: str, l_mm: float | None) -> str:
    """The reader's note on the unit of the file's voltages, with the flight length it decided
    that unit by (its own quick estimate: V_dc alone, no detector position) replaced by the
    import's one estimate ``l_mm`` (in the unit read), so the summary names one flight length
    the data imply; other notes as they are."""
    if l_mm is None or "flight path" not in note:
        return note
    if note.startswith("kV"):
        return (f"kV (TOF and m/n imply a {l_mm:g} mm flight path with V in kV; "
                f"{l_mm / math.sqrt(1000.0):.1f} mm with V in volts)")
    return f"V (TOF and m/n imply a {l_mm:g} mm flight path)"


# ------------------------------------------------------------------------------ pulses
def pulse_deltas(src) -> bool:
    """Whether a reader's pulse numbers are sums of the file's pulse deltas (EPOS psl, APT
    pulseDelta: they count from the acquisition's first pulse), not absolute pulse numbers
    (APyT raw, an APT with only the float pulse section, a hit table's pulse column)."""
    said = getattr(src, "pulse_deltas", None)
    if said is not None:
        return bool(said)
    from apt_daq.io.apt import AptFile
    from apt_daq.io.epos import EposFile

    if isinstance(src, EposFile):
        return True
    if isinstance(src, AptFile):
        return bool(src.sections.keys() & {"pulseDelta", "Delta Pulse"})
    return False


def pulse_count(src, first: int | None, last: int | None) -> int | None:
    """The pulses the acquisition spanned by a file's pulse numbers (None: it has none). Sums of
    deltas count from the acquisition's start: the last one is the count (EPOS: the sum of psl).
    Absolute pulse numbers count from wherever the instrument's counter stood when the file
    began: last - first + 1 (a file whose first ion is on pulse 2,252,793 spanned its own
    pulses, not 2.25 million before them)."""
    if last is None or first is None:
        return None
    return int(last) if pulse_deltas(src) else int(last) - int(first) + 1


# ------------------------------------------------------------------------------ m/n
class MassCheck:
    """Fed every chunk an import reads: whether any m/n of a file that has m/n is one (finite
    and > 0). A file whose every m/n is 0, NaN, negative or infinite has no m/n to analyse or
    range: the error says which of those its values are."""

    def __init__(self, path: str | Path, present) -> None:
        self.path = path
        self.has_mass = "mass" in set(present)
        self.usable = 0
        self.n = 0
        self.kinds = {"0 or NaN": 0, "negative": 0, "not finite": 0}

    def add(self, ions: np.ndarray) -> None:
        self.n += len(ions)
        if self.has_mass and not self.usable:
            m = ions["mass"]
            fin = np.isfinite(m)
            self.usable = int(np.count_nonzero(fin & (m > 0)))
            self.kinds["not finite"] += int(np.count_nonzero(np.isinf(m)))
            self.kinds["negative"] += int(np.count_nonzero(fin & (m < 0)))
            self.kinds["0 or NaN"] += int(np.count_nonzero((m == 0) | np.isnan(m)))

    def refused(self) -> DataFileError | None:
        """The one-line error when the file has ions but no usable m/n, else None."""
        if not self.has_mass or self.usable or not self.n:
            return None
        what = " or ".join(k for k, v in self.kinds.items() if v) or "0 or NaN"
        return DataFileError(f"{self.path}: every m/n in the file is {what} ({self.n} ions): "
                             "no m/n to import (is it this format, or was the file exported "
                             "before its ions were calibrated?)")

"""A range's charge: RRNG and RNG files store none. Inferred from the range's position
(:func:`infer_charge`, as AP Suite names ranges), or read from a ``Name:`` field that the
position confirms (:func:`charge_from_name`)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from apt_daq.errors import DataFileError
from apt_daq.isotopes import ion_name, isotopologues, parse_ion

log = logging.getLogger("apt_daq.io.ranges")


def infer_charge(formula: dict[str, int], lo_da: float, hi_da: float, max_charge: int = 4) -> int:
    """The charge that puts the most abundant isotopologue of ``formula`` inside [lo, hi).

    RRNG and RNG files do not store charges; this is how AP Suite names ranges too.
    Falls back to the charge whose pattern comes closest to the range centre.
    """
    best, best_d = 1, np.inf
    mid = 0.5 * (lo_da + hi_da)
    for z in range(1, max_charge + 1):
        for m, a in isotopologues(formula, z, min_abundance=1e-4):
            if lo_da <= m < hi_da:
                d = -a  # prefer the charge with the most abundant peak inside
            else:
                d = abs(m - mid)
            if d < best_d:
                best, best_d = z, d
    return best


def charge_from_name(path: Path | str, lineno: int, name: str | None,
                     composition: dict[str, int], lo_da: float, hi_da: float) -> int | None:
    """The charge a range's name gives, or None when the name is a label, not an ion.

    A name that reads as an ion of the range's composition (``Name:CrO+``, ``Name:Ni2+``) gives
    its charge, if an isotope of that ion falls in the range (within 2 % of its m/n); "El2+" of
    a diatomic element reads both ways (``Name:N2+`` on an ``N:1`` range at 7 Da is N 2+).
    A name whose charge puts no isotope in the range (``Name:Ca+`` on a 19.84-20.09 Da range:
    40Ca+ is at 39.96) is a mistake the position corrects: the charge is inferred from the
    position, as for a range with no name, with a warning naming the line (ifes reads it so).
    A name that does not read as an ion (``Name:CrO``, ``Name:Cr2``, ``Name:peak 1``: IVAS and
    AP Suite users label ranges so, and apav and ifes read such files) is a label, and the
    charge is inferred. A name that reads as an ion of another composition contradicts the
    range: refused, naming the line."""
    if not name:
        return None
    try:
        readings = [parse_ion(name)]
    except ValueError:
        return None
    if m := re.fullmatch(r"([A-Z][a-z]?)(\d+)\+", name.strip()):
        readings.append(({m.group(1): 1}, int(m.group(2))))  # "N2+": N2 + or N 2+
    charges = [z for f, z in readings if f == composition]
    if not charges:
        raise DataFileError(f"{path}:{lineno}: Name:{name} does not match the composition "
                            f"{composition}")
    for z in charges:
        if any(lo_da - 0.02 * m <= m < hi_da + 0.02 * m
               for m, _ in isotopologues(composition, z, min_abundance=1e-4)):
            return z
    z = infer_charge(composition, lo_da, hi_da)
    log.warning("%s:%d: Name:%s puts no isotope of it in the range [%g, %g) Da: read as %s, "
                "from the range's position", path, lineno, name, lo_da, hi_da,
                ion_name(composition, z))
    return z

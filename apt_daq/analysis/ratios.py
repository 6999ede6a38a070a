"""Charge-state ratios and atomic ratios of the seed paper, with counting errors.

Charge-state / molecular-ion ratios are ratios of ion counts (``"O2+/O+"`` is O2+ at 32 Da over
O+ at 16 Da, the paper's field proxy after Schreiber et al. 2014). Atomic ratios like
``"Li/(Li+Ni+Co+Mn)"`` use the decomposed element counts. Errors are Poisson, propagated:
for r = a / b, sigma_r = r sqrt(1/a + 1/b); for a fraction f = a / (a + rest),
sqrt(f (1 - f) / (a + rest)).
"""

from __future__ import annotations

import math
import re

ION_RATIOS = [("O2+", "O+"), ("Mn2+", "Mn+"), ("Ni2+", "Ni+"), ("Co2+", "Co+"), ("Cr2+", "Cr+")]
ATOM_RATIOS = [
    "Li/(Li+Ni+Co+Mn)",
    "Ni/(Ni+Co+Mn)",
    "O/(Li+O+Ni+Co+Mn)",
    "Mn/(Li+Mn)",
    "Li/(Li+Mn)",
]


def _atom_ratio(expr: str, atoms: dict[str, float]) -> tuple[float, float] | None:
    m = re.fullmatch(r"(\w+)/\(([\w+]+)\)", expr)
    if not m:
        raise ValueError(f"ratio {expr!r}: expected 'El/(El+El+...)'")
    num, den = m.group(1), m.group(2).split("+")
    if any(atoms.get(el, 0) <= 0 for el in {num, *den}):
        return None
    a = atoms[num]
    total = sum(atoms[el] for el in den)
    f = a / total
    return f, math.sqrt(max(f * (1 - f), 0.0) / total)


def ratios(
    ion_counts: dict[str, float], atoms: dict[str, float], extra: list[str] | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """(ratios, errors): only the ratios whose species exist in the data (non-zero counts)."""
    out: dict[str, float] = {}
    err: dict[str, float] = {}
    for a, b in ION_RATIOS:
        na, nb = ion_counts.get(a, 0.0), ion_counts.get(b, 0.0)
        if na > 0 and nb > 0:
            r = na / nb
            out[f"{a}/{b}"] = r
            err[f"{a}/{b}"] = r * math.sqrt(1 / na + 1 / nb)
    for expr in ATOM_RATIOS + list(extra or []):
        res = _atom_ratio(expr, atoms)
        if res is not None:
            out[expr], err[expr] = res
    return out, err

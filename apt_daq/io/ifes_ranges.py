"""Range files read through ifes-apt-tc-data-modeling: ENV (GPM), FIG.TXT, ``.analysis``
(IVAS), ``.analysisset`` (AP Suite), pyccapt ranging ``.h5``, AP Suite ``.hdf5``, and ifes's
own RRNG/RNG readers, as our :class:`~apt_daq.rangetable.RangeTable` (:func:`read_ranges`).
The ion formats ifes reads are :mod:`apt_daq.io.ifes`'s."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from apt_daq.errors import DataFileError, UserError
from apt_daq.io._common import IonRecordCheck
from apt_daq.io.ifes import _captured, _import, _reason

RANGE_FORMATS: dict[str, tuple[str, str, str]] = {  # format: (module, class, attribute)
    "env": ("env.env_reader", "ReadEnvFileFormat", "env"),
    "fig": ("fig.fig_reader", "ReadFigTxtFileFormat", "fig"),
    "imago": ("imago.imago_reader", "ReadImagoAnalysisFileFormat", "imago"),
    "analysisset": ("analysisset.analysisset_reader", "ReadAnalysissetFileFormat",
                    "analysisset"),
    "pyccapt-ranges": ("pyccapt.pyccapt_reader", "ReadPyccaptRangingFileFormat", "pyc"),
    "cameca-ranges": ("cameca.cameca_reader", "ReadCamecaHfiveFileFormat", "cameca"),
    "ifes-rrng": ("rrng.rrng_reader", "ReadRrngFileFormat", "rrng"),
    "ifes-rng": ("rng.rng_reader", "ReadRngFileFormat", "rng"),
}
RANGE_SUFFIXES = {".env": "env", ".fig.txt": "fig", ".analysis": "imago",
                  ".analysisset": "analysisset"}


def range_format_for(path: Path) -> str | None:
    name = path.name.lower()
    for suffix, fmt in RANGE_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None


def read_ranges(path: str | Path, fmt: str | None = None):
    """A range file of a format ifes-apt-tc-data-modeling reads, as our :class:`RangeTable`.

    Each molecular ion's nuclides become an elemental composition; a charge the file does not
    give (0) is inferred as the one that puts an isotopologue inside the range."""
    from ase.data import chemical_symbols

    from apt_daq.io.ranges import RangeTable, infer_charge
    from apt_daq.isotopes import ion_name

    path = Path(path)
    fmt = fmt or range_format_for(path)
    if fmt not in RANGE_FORMATS:
        raise UserError(f"{path}: not a range format ifes-apt-tc-data-modeling reads (one of "
                        f"{', '.join(RANGE_FORMATS)})")
    if not path.is_file():
        raise DataFileError(f"{path}: no such range file")
    module, cls, attr = RANGE_FORMATS[fmt]
    mod = _import(module)
    with _captured() as cap:
        try:
            reader = getattr(mod, cls)(str(path))
        except Exception as e:
            raise DataFileError(f"{path}: ifes-apt-tc-data-modeling cannot read it as {fmt} "
                                f"({type(e).__name__}: {e})") from None
        if not getattr(reader, "supported", True) or not hasattr(reader, attr):
            raise DataFileError(f"{path}: not a {fmt} range file that "
                                f"ifes-apt-tc-data-modeling supports{_reason(cap)}")
    names, lo, hi, comp, charge = [], [], [], [], []
    skipped: dict[str, int] = {}
    for ion in getattr(reader, attr).get("molecular_ions", []):
        formula: dict[str, int] = {}
        for _mass_number, z in np.asarray(ion.nuclide_list).reshape(-1, 2):
            if z:
                el = chemical_symbols[int(z)]
                formula[el] = formula.get(el, 0) + 1
        edges = np.asarray(getattr(ion.ranges, "magnitude", ion.ranges), float).reshape(-1, 2)
        if not formula:  # a species with no element (ENV "X23", "Hyd")
            name = str(getattr(ion, "name", "") or "?").strip()
            skipped[f"{name} (no element)"] = skipped.get(f"{name} (no element)", 0) + len(edges)
            continue
        for a, b in edges:
            if not b <= IonRecordCheck.MAX_MASS_DA:  # no atom probe's m/n; it sized the spectrum
                raise DataFileError(f"{path}: range [{a:g}, {b:g}) of {ion_name(formula, 1)[:-1]}"
                                    f" ends above {IonRecordCheck.MAX_MASS_DA:g} Da")
            z = int(ion.charge_state)
            if len(formula) > 1 and z > 2 and _alternatives(formula, float(a), float(b)):
                # AP Suite's "Si/Fe" (Si2+ or Fe4+ at 14 Da) comes out of ifes as one ion of
                # the summed charge, (FeSi)6+: which element a hit is, the file leaves open
                key = "/".join(sorted(formula)) + f" (either element, read as {z}+)"
                skipped[key] = skipped.get(key, 0) + 1
                continue
            if z <= 0:
                z = infer_charge(formula, float(a), float(b))
            names.append(ion_name(formula, z))
            lo.append(float(a))
            hi.append(float(b))
            comp.append(dict(formula))
            charge.append(z)
    if skipped:
        logging.getLogger("apt_daq.ranges").warning(
            "%s: ranges of %s skipped: their ions count as unranged", path,
            ", ".join(f"{k} x{n}" for k, n in skipped.items()))
    if not names:
        raise DataFileError(f"{path}: ifes-apt-tc-data-modeling found no ranges in it"
                            f"{_reason(cap)}")
    try:
        return RangeTable.merging_same_ion(names, lo, hi, comp, charge, source=str(path))
    except ValueError as e:
        raise DataFileError(str(e)) from None


def _alternatives(formula: dict[str, int], lo: float, hi: float) -> bool:
    """Whether two or more of the formula's elements each have an atomic isotope, at a charge
    of 1-4, inside [lo, hi): a range of "one element or another"."""
    from apt_daq.isotopes import isotopologues

    fits = sum(1 for el in formula if any(lo <= m < hi for z in (1, 2, 3, 4)
                                          for m, _ in isotopologues({el: 1}, z)))
    return fits >= 2

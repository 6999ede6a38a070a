"""Range tables and the RRNG (AP Suite/IVAS) and RNG (Oak Ridge/Oxford) range file formats.

A range assigns every hit with ``lo_da <= m/n < hi_da`` to one ion. Ranges never overlap; the
table keeps them sorted by ``lo_da`` so ranging is a binary search over the edges
(:mod:`apt_daq.pipeline.ranging`). The ``ion`` field of /derived holds the range index.

RRNG (text, INI-like)::

    [Ions]
    Number=2
    Ion1=Ni
    Ion2=O
    [Ranges]
    Number=2
    Range1=15.9000 16.1500 Vol:0.01500 O:1 Name:O+ Color:FF0000
    Range2=57.8500 58.2000 Vol:0.01094 Ni:1 Name:Ni+ Color:00CC00

RRNG does not store the charge: it is read from a ``Name:`` field when that reads as an ion of
the range's composition (``Name:CrO+``), else from our comment line ``# Range1 name: Ni+``
(what :func:`write_rrng` writes for each range: readers that ignore comments see a plain
RRNG), else inferred as the charge that puts an isotopologue of the composition inside the
range. A ``Name:`` that is not an ion (``Name:CrO``, ``Name:peak 1``) is a user's label and
changes nothing; one that is an ion of another composition contradicts the range (refused).
IVAS writes ranges of an unknown species as ``Name:`` with no element: such a range is
skipped with a warning, as apav skips it (ifes 0.5 keeps it as an unknown ion type; apav
also skips a range that has elements and a ``Name:``, so we never write the field). An RNG's
column that is no element (``unknown``) is the same: its ranges are skipped with a warning.

RNG (text)::

    2 2                      # number of ions, number of ranges
    Ni                       # for each ion: its name ...
    Ni 0.0 0.8 0.0           # ... then short name and colour (r g b in 0..1)
    O
    O 1.0 0.0 0.0
    ------------------- Ni O
    . 15.9000 16.1500 0 1    # '.' lo hi, then the atom count of each ion column
    . 57.8500 58.2000 1 0

Lines starting with ``#`` are comments in both formats.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from apt_daq.errors import DataFileError
from apt_daq.isotopes import elements, ion_name, isotopologues, parse_ion
from apt_daq.rangetable import (  # the model; re-exported: readers import it from here too
    ELEMENT_COLOURS,
    RangeTable,
    canonical_formula,
    default_colour,
    table_from_meta,
    table_to_meta,
)

log = logging.getLogger(__name__)

__all__ = [
    "ELEMENT_COLOURS",
    "RangeTable", "canonical_formula", "default_colour", "infer_charge", "read_ranges",
    "read_rng", "read_rrng", "run_range_table", "table_from_meta", "table_to_meta",
    "write_ranges", "write_rng", "write_rrng",
]

# ---------------------------------------------------------------------------- charge inference


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


# ---------------------------------------------------------------------------- RRNG


def _err(path: Path | str, line: int, msg: str) -> DataFileError:
    return DataFileError(f"{path}:{line}: {msg}")


# ---------------------------------------------------------------------------- the skeleton
class _Range(NamedTuple):
    """One range as a file gives it: its line, edges and composition, and what the format may
    add (a name that carries the charge, a colour, a volume)."""

    lineno: int
    lo_da: float
    hi_da: float
    composition: dict[str, int]
    name: str | None = None
    colour: str | None = None
    volume_nm3: float = 0.0


#: a format's parser: (the file, its non-empty lines as (number, stripped text)) -> its ranges
_Parser = Callable[[Path, list[tuple[int, str]]], list[_Range]]


def _read_range_file(path: str | Path, parse: _Parser) -> RangeTable:
    """What both range formats share: read the text (errors name the file), hand its non-empty
    lines to the format's parser, then build the table (sorted, no overlap, each range's charge
    from its name or inferred: :func:`_table`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")  # a BOM is no text
    except OSError as e:
        raise DataFileError(f"{path}: cannot read: {e.strerror or e}") from None
    rows = [(i, s) for i, ln in enumerate(text.splitlines(), 1) if (s := ln.strip())]
    return _table(path, parse(path, rows))


def _checked(path: Path, r: _Range) -> _Range:
    """A range with a composition and ``lo < hi`` (what both formats require of every range)."""
    if not r.composition:
        raise _err(path, r.lineno, "range has no composition (e.g. 'Ni:1')")
    if not (math.isfinite(r.lo_da) and math.isfinite(r.hi_da)):
        raise _err(path, r.lineno, f"range [{r.lo_da}, {r.hi_da}) has a non-finite edge")
    if not r.hi_da > r.lo_da:
        raise _err(path, r.lineno, f"range [{r.lo_da}, {r.hi_da}) is empty or inverted")
    if r.lo_da < 0:
        raise _err(path, r.lineno, f"range [{r.lo_da}, {r.hi_da}) starts below 0 Da")
    return r


# ---------------------------------------------------------------------------- RRNG
def read_rrng(path: str | Path) -> RangeTable:
    """Read an AP Suite/IVAS ``.rrng`` file. Errors name the file and line."""
    return _read_range_file(path, _parse_rrng)


def _parse_rrng(path: Path, rows: list[tuple[int, str]]) -> list[_Range]:
    section = None
    ions: dict[int, str] = {}
    ranges: list[_Range] = []
    unknown: list[_Range] = []  # Name: and no composition: skipped (with a warning)
    n_ions = n_ranges = None
    comment_names: dict[int, str] = {}
    for lineno, line in rows:
        if line.startswith("#") and (m := _NAME_COMMENT.fullmatch(line)):
            comment_names[int(m.group(1))] = m.group(2)
            continue
        if line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]").strip().lower()
            continue
        if "=" not in line:
            raise _err(path, lineno, f"expected key=value, got {line!r}")
        key, value = (s.strip() for s in line.split("=", 1))
        kl = key.lower()
        if section == "ions":
            if kl == "number":
                n_ions = _int(value, path, lineno)
            elif m := re.fullmatch(r"ion(\d+)", kl):
                ions[int(m.group(1))] = value
            else:
                raise _err(path, lineno, f"unknown key {key!r} in [Ions]")
        elif section == "ranges":
            if kl == "number":
                n_ranges = _int(value, path, lineno)
                continue
            if not re.fullmatch(r"range\d+", kl):
                raise _err(path, lineno, f"unknown key {key!r} in [Ranges]")
            r = _rrng_range(path, lineno, value)
            if not r.composition and r.name:  # IVAS's range of an unknown species
                unknown.append(r)
                continue
            ranges.append(r._replace(name=r.name or comment_names.get(int(kl[5:]))))
        else:
            raise _err(path, lineno, f"{key!r} outside [Ions]/[Ranges]")
    if n_ranges is None and not ranges:
        raise DataFileError(f"{path}: no [Ranges] section: not an RRNG file")
    if n_ranges is not None and n_ranges != len(ranges) + len(unknown):
        raise DataFileError(f"{path}: [Ranges] Number={n_ranges} but "
                            f"{len(ranges) + len(unknown)} ranges listed")
    for r in unknown:
        log.warning("%s:%d: range [%g, %g) of an unknown species (Name:%s, no element): "
                    "skipped, as apav does; its ions count as unranged",
                    path, r.lineno, r.lo_da, r.hi_da, r.name)
    if n_ions is not None and n_ions != len(ions):
        raise DataFileError(f"{path}: [Ions] Number={n_ions} but {len(ions)} ions listed")
    return ranges


def _rrng_range(path: Path, lineno: int, value: str) -> _Range:
    """``lo hi [Vol:v] El:n ... [Name:ion] [Color:RRGGBB]``, the value of a ``RangeN=`` line."""
    parts = value.replace(",", ".").split()
    if len(parts) < 3:
        raise _err(path, lineno, "expected 'lo hi [Vol:v] El:n ... [Color:RRGGBB]'")
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise _err(
            path, lineno, f"range edges {parts[0]!r} {parts[1]!r} are not numbers"
        ) from None
    known = set(elements())
    comp: dict[str, int] = {}
    colour = name = None
    vol = 0.0
    for tok in parts[2:]:
        if ":" not in tok:
            raise _err(path, lineno, f"expected Key:value, got {tok!r}")
        k, v = tok.split(":", 1)
        if k.lower() == "vol":
            vol = _float(v, path, lineno)
        elif k.lower() == "color":
            colour = v.upper()
            if not re.fullmatch(r"[0-9A-F]{6}", colour):
                raise _err(path, lineno, f"colour {v!r} is not RRGGBB hex")
        elif k.lower() == "name":
            name = v or None
        else:
            if k not in known:
                raise _err(path, lineno, f"unknown element {k!r}")
            count = _int(v, path, lineno)
            if count < 1:
                raise _err(path, lineno, f"atom count of {k} must be >= 1, got {count}")
            comp[k] = comp.get(k, 0) + count
    if not comp and name:  # an unknown species: its edges must still be edges
        return _checked(path, _Range(lineno, lo, hi, {"?": 1}, name, colour, vol))._replace(
            composition={})
    return _checked(path, _Range(lineno, lo, hi, comp, name, colour, vol))


def _table(path: Path, ranges: list[_Range]) -> RangeTable:
    ranges = sorted((r._replace(composition=canonical_formula(r.composition)) for r in ranges),
                    key=lambda r: r.lo_da)
    merged: list[_Range] = []  # one ion's overlapping ranges (a repeated line) become one
    folded: list[int] = []
    for r in ranges:
        a = merged[-1] if merged else None
        if a is not None and a.hi_da > r.lo_da and (a.composition, a.name) == (r.composition,
                                                                               r.name):
            merged[-1] = a._replace(hi_da=max(a.hi_da, r.hi_da))
            folded.append(r.lineno)
            continue
        merged.append(r)
    if folded:
        lines = ", ".join(map(str, sorted(folded)[:8])) + (", ..." if len(folded) > 8 else "")
        log.warning("%s: %d range%s repeat or overlap a range of the same ion (line%s %s): "
                    "merged with it", path, len(folded), "s" if len(folded) > 1 else "",
                    "s" if len(folded) > 1 else "", lines)
    ranges = merged
    for a, b in itertools.pairwise(ranges):
        if a.hi_da > b.lo_da:
            raise _err(
                path,
                b.lineno,
                f"range [{b.lo_da}, {b.hi_da}) overlaps the range of line {a.lineno} "
                f"[{a.lo_da}, {a.hi_da})",
            )
    names, charges = [], []
    for r in ranges:
        z = _charge_from_name(path, r)
        if z is None:
            z = infer_charge(r.composition, r.lo_da, r.hi_da)
        names.append(ion_name(r.composition, z))
        charges.append(z)
    return RangeTable(
        names=names,
        lo_da=np.array([r.lo_da for r in ranges]),
        hi_da=np.array([r.hi_da for r in ranges]),
        composition=[r.composition for r in ranges],
        charge=charges,
        colour=[r.colour or default_colour(r.composition) for r in ranges],
        volume_nm3=[r.volume_nm3 for r in ranges],
        source=str(path),
    )


def _charge_from_name(path: Path, r: _Range) -> int | None:
    """The charge a range's name gives, or None when the name is a label, not an ion.

    A name that reads as an ion of the range's composition (``Name:CrO+``, ``Name:Ni2+``) gives
    its charge. A name that does not read as an ion (``Name:CrO``, ``Name:Cr2``, ``Name:peak
    1``: IVAS and AP Suite users label ranges so, and apav and ifes read such files) is a
    label, and the charge is inferred as for a range with no name. A name that reads as an
    ion of another composition contradicts the range: refused, naming the line."""
    if not r.name:
        return None
    try:
        f, z = parse_ion(r.name)
    except ValueError:
        return None
    if f != r.composition:
        raise _err(path, r.lineno,
                   f"Name:{r.name} does not match the composition {r.composition}")
    return z


def _int(v: str, path: Path | str, line: int) -> int:
    try:
        return int(v)
    except ValueError:
        raise _err(path, line, f"expected an integer, got {v!r}") from None


def _float(v: str, path: Path | str, line: int) -> float:
    try:
        return float(v)
    except ValueError:
        raise _err(path, line, f"expected a number, got {v!r}") from None


_NAME_COMMENT = re.compile(r"#\s*range(\d+)\s+name:\s*(\S+)\s*", re.IGNORECASE)


def write_rrng(table: RangeTable, path: str | Path, comment: str = "") -> None:
    """Write ``table`` as RRNG; each range's ion name (so its charge) goes in a comment line
    before it (``# Range1 name: Li+``), which AP Suite, IVAS and apav skip."""
    els = table.elements
    lines = [f"# {c}" for c in comment.splitlines()] if comment else []
    lines += ["[Ions]", f"Number={len(els)}"]
    lines += [f"Ion{i}={el}" for i, el in enumerate(els, 1)]
    lines += ["[Ranges]", f"Number={len(table)}"]
    for i in range(len(table)):
        comp = " ".join(f"{el}:{n}" for el, n in table.composition[i].items())
        lines.append(f"# Range{i + 1} name: {table.names[i]}")
        lines.append(
            f"Range{i + 1}={table.lo_da[i]:.4f} {table.hi_da[i]:.4f} "
            f"Vol:{table.volume_nm3[i]:.5f} {comp} Color:{table.colour[i]}"
        )
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------- RNG


def read_rng(path: str | Path) -> RangeTable:
    """Read an Oak Ridge/Oxford ``.rng`` file. Errors name the file and line."""
    return _read_range_file(path, _parse_rng)


def _parse_rng(path: Path, rows: list[tuple[int, str]]) -> list[_Range]:
    rows = [(i, ln) for i, ln in rows if not ln.startswith("#")]
    if not rows:
        raise DataFileError(f"{path}: empty RNG file")
    lineno, first = rows[0]
    head = first.split()
    if len(head) < 2 or not head[0].isdigit() or not head[1].isdigit():
        raise _err(path, lineno, f"expected 'n_ions n_ranges', got {first!r}")
    n_ions, n_ranges = int(head[0]), int(head[1])
    colours: dict[str, str] = {}
    k = 1
    for _ in range(n_ions):
        if k + 1 >= len(rows):
            raise DataFileError(f"{path}: ends inside the ion list ({n_ions} ions declared)")
        (_, name), (ln2, spec) = rows[k], rows[k + 1]
        parts = spec.split()
        if len(parts) == 4:
            try:
                r, g, b = (min(255, max(0, round(float(x) * 255))) for x in parts[1:])
            except ValueError:
                raise _err(path, ln2, f"expected 'name r g b', got {spec!r}") from None
            colours[name] = f"{r:02X}{g:02X}{b:02X}"
        k += 2
    if k >= len(rows) or not rows[k][1].startswith("-"):
        raise _err(path, rows[min(k, len(rows) - 1)][0], "expected the '-------- El El ...' header")
    header = rows[k][1]
    columns = header.split()[1:]
    known = set(elements())
    # a column that is no element is a species the analyst could not name (IVAS writes
    # "unknown"): its ranges are skipped with a warning, as an RRNG's Name:-only range is
    unnamed = {c for c in columns if c not in known}
    k += 1
    ranges = []
    for lineno, line in rows[k : k + n_ranges]:
        parts = line.replace(",", ".").split()
        if not parts or parts[0] != ".":
            raise _err(path, lineno, f"expected '. lo hi counts...', got {line!r}")
        if len(parts) != 3 + len(columns):
            raise _err(path, lineno, f"expected {3 + len(columns)} columns, got {len(parts)}")
        lo, hi = _float(parts[1], path, lineno), _float(parts[2], path, lineno)
        comp = {}
        for el, v in zip(columns, parts[3:], strict=True):
            n = _int(v, path, lineno)
            if n < 0:
                raise _err(path, lineno, f"negative atom count for {el}")
            if n:
                comp[el] = n
        if unnamed & set(comp):
            if set(comp) - unnamed:
                odd = ", ".join(sorted(unnamed & set(comp)))
                raise _err(path, lineno, f"mixes the column(s) {odd} (not elements) with "
                           "elements")
            log.warning("%s:%d: range [%g, %g) of a species that is no element (%s): skipped, as "
                        "apav does; its ions count as unranged", path, lineno, lo, hi,
                        ", ".join(sorted(comp)))
            n_ranges -= 1
            continue
        colour = colours.get(next(iter(comp))) if len(comp) == 1 else None
        ranges.append(_checked(path, _Range(lineno, lo, hi, comp, None, colour)))
    if len(ranges) != n_ranges:
        raise DataFileError(f"{path}: declares {n_ranges} ranges but holds {len(ranges)}")
    return ranges


def write_rng(table: RangeTable, path: str | Path) -> None:
    """Write ``table`` as RNG (charges are not stored: they are inferred again on reading)."""
    els = table.elements
    lines = [f"{len(els)} {len(table)}"]
    for el in els:
        c = ELEMENT_COLOURS.get(el, "808080")
        r, g, b = (int(c[i : i + 2], 16) / 255 for i in (0, 2, 4))
        lines += [el, f"{el} {r:.3f} {g:.3f} {b:.3f}"]
    lines.append("------------------- " + " ".join(els))
    for i in range(len(table)):
        counts = " ".join(str(table.composition[i].get(el, 0)) for el in els)
        lines.append(f". {table.lo_da[i]:.4f} {table.hi_da[i]:.4f} {counts}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_ranges(path: str | Path) -> RangeTable:
    """Read a range file by extension (``.rrng`` or ``.rng``)."""
    p = Path(path)
    if not p.exists():
        raise DataFileError(f"{p}: no such range file")
    suffix = p.suffix.lower()
    if suffix == ".rrng":
        return read_rrng(p)
    if suffix == ".rng":
        return read_rng(p)
    raise DataFileError(f"{p}: unknown range file type {suffix!r} (expected .rrng or .rng)")


def write_ranges(table: RangeTable, path: str | Path) -> None:
    p = Path(path)
    if p.suffix.lower() == ".rng":
        write_rng(table, p)
    else:
        write_rrng(table, p)


# --------------------------------------------------------------------------- in a run file
def run_range_table(reader) -> tuple[RangeTable | None, str]:
    """The range table of a stored run and where it came from: the one the run carries in
    /meta "ranges" (written by the run engine and by import), else its config's range file
    (resolved relative to the run file it was loaded from), else (None, "")."""
    stored = reader.meta.get("ranges")
    if stored:
        table = table_from_meta(stored)
        return table, f"{table.source or 'stored ranges'} (stored in the run)"
    try:
        rf = reader.run_file
    except Exception:  # an imported run may carry a partial config
        rf = None
    if rf is not None and rf.analysis.ranges:
        path = rf.resolve(rf.analysis.ranges)
        if path is not None and Path(path).exists():
            return read_ranges(path), str(path)
    return None, ""

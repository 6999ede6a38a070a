"""Range tables and the RRNG (AP Suite/IVAS) and RNG (Oak Ridge/Oxford) range file formats.

The model (disjoint ranges, each naming one ion) is :mod:`apt_daq.rangetable`'s. A file of
more than :data:`~apt_daq.rangetable.MAX_RANGES` ranges is refused (no real one holds that many).

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
range; a name whose charge the range's position contradicts yields to the position, with a
warning (:func:`apt_daq.io.range_names.charge_from_name`). A ``Name:`` that is not an ion
(``Name:CrO``, ``Name:peak 1``) is a user's label and changes nothing; one that is an ion of
another composition contradicts the range (refused). Other sections (``[Display]``) are skipped.
IVAS writes ranges of an unknown species as ``Name:`` with no element; an RNG column or an
[Ions] ion may be no element (``unknown``): such ranges are skipped with a warning, as ifes
and apav skip them (apav also skips a range that has elements and a ``Name:``, so we never
write the field). A file left with no range is refused.

RNG (text)::

    2 2                      # number of ions, number of ranges
    Ni                       # for each ion: its name ...
    Ni 0.0 0.8 0.0           # ... then short name and colour (r g b in 0..1)
    O
    O 1.0 0.0 0.0
    ------------------- Ni O
    . 15.9000 16.1500 0 1    # '.' lo hi, then the atom count of each ion column
    . 57.8500 58.2000 1 0

In both formats a line starting with ``#`` is a comment."""

from __future__ import annotations

import codecs
import itertools
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from apt_daq.errors import DataFileError
from apt_daq.io._common import IonRecordCheck
from apt_daq.io.range_names import charge_from_name, infer_charge
from apt_daq.isotopes import elements, ion_name
from apt_daq.rangetable import (  # the model; re-exported: readers import it from here too
    ELEMENT_COLOURS,
    MAX_RANGES,
    RangeTable,
    canonical_formula,
    default_colour,
    table_from_meta,
    table_to_meta,
)

log = logging.getLogger(__name__)

__all__ = [
    "ELEMENT_COLOURS", "RangeTable", "canonical_formula", "default_colour", "infer_charge",
    "read_ranges", "read_rng", "read_rrng", "run_range_table", "table_from_meta",
    "table_to_meta", "write_ranges", "write_rng", "write_rrng"]

# ---------------------------------------------------------------------------- charge inference


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
        raw = path.read_bytes()
    except OSError as e:
        raise DataFileError(f"{path}: cannot read: {e.strerror or e}") from None
    # a BOM is no text; Windows Notepad saves "Unicode" as UTF-16 (a hand-edited range file)
    utf16 = raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    text = raw.decode("utf-16" if utf16 else "utf-8-sig", errors="replace")
    rows = [(i, s) for i, ln in enumerate(text.splitlines(), 1) if (s := ln.strip())]
    return _table(path, parse(path, rows))


def _checked(path: Path, r: _Range) -> _Range:
    """A range with ``0 <= lo < hi <= 10 kDa`` (what both formats require of every range)."""
    if not (math.isfinite(r.lo_da) and math.isfinite(r.hi_da)):
        raise _err(path, r.lineno, f"range [{r.lo_da}, {r.hi_da}) has a non-finite edge")
    if not r.hi_da > r.lo_da:
        raise _err(path, r.lineno, f"range [{r.lo_da}, {r.hi_da}) is empty or inverted")
    top = IonRecordCheck.MAX_MASS_DA  # no atom probe's m/n (a 1e8 Da range: a 298 GiB spectrum)
    if r.lo_da < 0 or r.hi_da > top:
        where = "starts below 0 Da" if r.lo_da < 0 else f"ends above {top:g} Da (no atom probe's)"
        raise _err(path, r.lineno, f"range [{r.lo_da}, {r.hi_da}) {where}")
    return r


def _known(path: Path, ranges: list[_Range], declared: set[str], kind: str) -> list[_Range]:
    """The ranges of elements. A range of a species that is no element (IVAS's ``Name:`` and no
    element; an [Ions] ion or RNG column such as ``unknown``) is skipped with a warning, as
    ifes and apav skip it. Refused, naming the line: an undeclared name that is no element (a
    typo), a range mixing the two, no atoms or over :data:`MAX_ATOMS`; and a file left empty."""
    known, kept = set(elements()), []
    for r in ranges:
        odd = set(r.composition) - known
        if odd - declared:
            raise _err(path, r.lineno, f"unknown element {min(odd - declared)!r}")
        if odd and len(odd) < len(r.composition):
            raise _err(path, r.lineno, f"mixes the {kind}(s) {', '.join(sorted(odd))} (not "
                       "elements) with elements")
        if odd or (r.name and not r.composition):
            what = (f"a species that is no element ({', '.join(sorted(odd))})" if odd else
                    f"an unknown species (Name:{r.name}, no element)")
            log.warning("%s:%d: range [%g, %g) of %s: skipped, as ifes and apav skip it; its "
                        "ions count as unranged", path, r.lineno, r.lo_da, r.hi_da, what)
            continue
        if not r.composition:
            raise _err(path, r.lineno, "range has no composition (e.g. 'Ni:1')")
        if sum(r.composition.values()) > MAX_ATOMS:
            raise _err(path, r.lineno, f"{sum(r.composition.values())} atoms in one ion (at "
                       f"most {MAX_ATOMS})")
        kept.append(r)
    if not kept:
        raise DataFileError(f"{path}: holds no range of an element" + (
            f" (all {len(ranges)} skipped as no element: see the warnings)" if ranges else ""))
    return kept


#: atoms in one ion at most (ifes's limit too): "Fe:1000000", a typo, hung the charge inference
MAX_ATOMS = 256


def _count(v: str, path: Path, line: int, what: str) -> int:
    """An atom count: a whole number >= 0 (``1.000`` too, which 3Depict writes and reads)."""
    try:
        f = float(v)
    except ValueError:
        f = math.nan
    if not (f >= 0 and f.is_integer()):
        raise _err(path, line, f"atom count of {what} must be a whole number >= 0, got {v!r}")
    return int(f)


def _show(line: str) -> str:
    """A line as an error quotes it: at most 60 characters (a binary file is one line)."""
    return repr(line if len(line) <= 60 else line[:57] + "...")


# ---------------------------------------------------------------------------- RRNG
def read_rrng(path: str | Path) -> RangeTable:
    """Read an AP Suite/IVAS ``.rrng`` file. Errors name the file and line."""
    return _read_range_file(path, _parse_rrng)


def _parse_rrng(path: Path, rows: list[tuple[int, str]]) -> list[_Range]:
    section = None
    ions: dict[int, str] = {}
    ranges: list[_Range] = []
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
            raise _err(path, lineno, f"expected key=value, got {_show(line)}")
        key, value = (s.strip() for s in line.split("=", 1))
        kl = key.lower()
        if section == "ions":
            if kl == "number":
                n_ions = _num(value, path, lineno, int)
            elif m := re.fullmatch(r"ion(\d+)", kl):
                ions[int(m.group(1))] = value
            else:
                raise _err(path, lineno, f"unknown key {key!r} in [Ions]")
        elif section == "ranges":
            if kl == "number":
                n_ranges = _many(path, int(_num(value, path, lineno, int)))
                continue
            if not re.fullmatch(r"range\d+", kl):
                raise _err(path, lineno, f"unknown key {key!r} in [Ranges]")
            _many(path, len(ranges) + 1)
            r = _rrng_range(path, lineno, value)
            ranges.append(r._replace(name=r.name or comment_names.get(int(kl[5:]))))
        elif section is None:
            raise _err(path, lineno, f"{key!r} outside [Ions]/[Ranges]")
        # another section ([Display], a tool's own settings): apav and ifes skip it too
    if n_ranges is None and not ranges:
        raise DataFileError(f"{path}: no [Ranges] section: not an RRNG file")
    if n_ranges is not None and n_ranges != len(ranges):
        raise DataFileError(f"{path}: [Ranges] Number={n_ranges} but {len(ranges)} ranges "
                            "listed")
    if n_ions is not None and n_ions != len(ions):
        raise DataFileError(f"{path}: [Ions] Number={n_ions} but {len(ions)} ions listed")
    return _known(path, ranges, set(ions.values()), "ion")


def _many(path: Path, n: int) -> int:
    """``n`` (ranges in ``path``), refused over :data:`~apt_daq.rangetable.MAX_RANGES`."""
    if n > MAX_RANGES:
        raise DataFileError(f"{path}: more than {MAX_RANGES} ranges: not a range file of real "
                            "peaks (one holds a few hundred)")
    return n


def _rrng_range(path: Path, lineno: int, value: str) -> _Range:
    """``lo hi [Vol:v] El:n ... [Name:ion] [Color:RRGGBB]``, the value of a ``RangeN=`` line.
    ``El`` may be an ion of [Ions] that is no element (:func:`_known` tells them apart)."""
    parts = value.replace(",", ".").split()
    if len(parts) < 3:
        raise _err(path, lineno, "expected 'lo hi [Vol:v] El:n ... [Color:RRGGBB]'")
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise _err(path, lineno, f"range edges {parts[0]!r} {parts[1]!r} are not numbers"
                   ) from None
    comp: dict[str, int] = {}
    colour, name, vol = None, None, 0.0
    for i, tok in enumerate(parts[2:], 2):
        if ":" not in tok:
            if parts[i - 1].lower() == "name:":  # "Name: AlO" (ifes's reading of the book)
                name = tok
                continue
            raise _err(path, lineno, f"expected Key:value, got {tok!r}")
        k, v = tok.split(":", 1)
        if k.lower() == "vol":
            if not (vol := _num(v, path, lineno)) >= 0 or not math.isfinite(vol):
                raise _err(path, lineno, f"Vol:{v} is not a volume (finite, >= 0 nm3)")
        elif k.lower() == "color":
            colour = v.upper().removeprefix("#")  # "#CCCCCC" as some writers give it
            if not re.fullmatch(r"[0-9A-F]{6}", colour):
                raise _err(path, lineno, f"colour {v!r} is not RRGGBB hex")
        elif k.lower() == "name":
            name = v or None
        else:
            count = _count(v, path, lineno, k)
            if count < 1:
                raise _err(path, lineno, f"atom count of {k} must be >= 1, got {v!r}")
            comp[k] = comp.get(k, 0) + count
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
            raise _err(path, b.lineno, f"range [{b.lo_da}, {b.hi_da}) overlaps the range of "
                       f"line {a.lineno} [{a.lo_da}, {a.hi_da})")
    names, charges = [], []
    for r in ranges:
        z = charge_from_name(path, r.lineno, r.name, r.composition, r.lo_da, r.hi_da)
        if z is None:
            z = infer_charge(r.composition, r.lo_da, r.hi_da)
        names.append(ion_name(r.composition, z))
        charges.append(z)
    return RangeTable(names=names, lo_da=np.array([r.lo_da for r in ranges]),
                      hi_da=np.array([r.hi_da for r in ranges]),
                      composition=[r.composition for r in ranges], charge=charges,
                      colour=[r.colour or default_colour(r.composition) for r in ranges],
                      volume_nm3=[r.volume_nm3 for r in ranges], source=str(path))


def _num(v: str, path: Path | str, line: int, kind: type[float] = float) -> float:
    try:
        return kind(v)
    except ValueError:
        raise _err(path, line, f"expected {'an integer' if kind is int else 'a number'}, got "
                   f"{v!r}") from None


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
        lines.append(f"Range{i + 1}={table.lo_da[i]:.4f} {table.hi_da[i]:.4f} "
                     f"Vol:{table.volume_nm3[i]:.5f} {comp} Color:{table.colour[i]}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------- RNG


def read_rng(path: str | Path) -> RangeTable:
    """Read an Oak Ridge/Oxford ``.rng`` file. Errors name the file and line."""
    return _read_range_file(path, _parse_rng)


def _parse_rng(path: Path, rows: list[tuple[int, str]]) -> list[_Range]:
    """The Oak Ridge table as 3Depict reads it (``test/rangefiles`` of its sources): the column
    header names the ions (or, bare dashes, leaves them to the ion list: its short names), a
    row's leading ``.`` may be missing, and what follows the declared rows (IVAS's
    "polyatomic extension") is left alone; but a further range row is refused."""
    rows = [(i, ln) for i, ln in rows if not ln.startswith("#")]
    if not rows:
        raise DataFileError(f"{path}: empty RNG file")
    lineno, first = rows[0]
    head = first.split()
    if len(head) < 2 or not head[0].isdigit() or not head[1].isdigit():
        raise _err(path, lineno, f"expected 'n_ions n_ranges', got {_show(first)}")
    n_ions, n_ranges = int(head[0]), _many(path, int(head[1]))
    names, colours = _rng_ions(path, rows[1 : 1 + 2 * n_ions], n_ions)
    k = 1 + 2 * n_ions
    if k >= len(rows) or not rows[k][1].startswith("-"):
        raise _err(path, rows[min(k, len(rows) - 1)][0], "expected the '-------- El El ...' header")
    columns = rows[k][1].lstrip("-").split() or names  # "-----Fe Ni": a name on the dashes
    if len(columns) != n_ions:
        raise _err(path, rows[k][0], f"the header names {len(columns)} ions, the first line "
                   f"declares {n_ions}")
    table = list(itertools.takewhile(lambda r: not r[1].startswith("-"), rows[k + 1 :]))
    if len(table) < n_ranges or (len(table) > n_ranges and table[n_ranges][1][0] == "."):
        where = f" (line {table[n_ranges][0]})" if len(table) > n_ranges else ""
        raise DataFileError(f"{path}: declares {n_ranges} ranges but its table holds "
                            f"{'more' if where else len(table)}{where}")
    ranges = []
    for lineno, line in table[:n_ranges]:
        parts = line.replace(",", ".").split()
        parts = parts[1:] if parts[0] == "." else parts
        if len(parts) != 2 + len(columns):
            raise _err(path, lineno, f"expected '. lo hi' and {len(columns)} atom counts, got "
                       f"{_show(line)}")
        lo, hi = _num(parts[0], path, lineno), _num(parts[1], path, lineno)
        counts = [_count(v, path, lineno, el) for el, v in zip(columns, parts[2:], strict=True)]
        if not any(counts):
            raise _err(path, lineno, "every atom count is 0 (a range of no ion)")
        comp: dict[str, int] = {}
        for el, n in zip(columns, counts, strict=True):
            if n:
                comp[el] = comp.get(el, 0) + n
        colour = colours.get(next(iter(comp))) if len(comp) == 1 else None
        ranges.append(_checked(path, _Range(lineno, lo, hi, comp, None, colour)))
    return _known(path, ranges, set(columns), "column")


def _rng_ions(path: Path, rows: list[tuple[int, str]], n_ions: int
              ) -> tuple[list[str], dict[str, str]]:
    """An RNG file's ion list (each ion's long name, then short name and colour: ``Fe 1.0 0.0
    1.0``, r g b in 0..1, IVAS may add ``(FeO)``) as the short names and their RRGGBB colours."""
    if len(rows) < 2 * n_ions:
        raise DataFileError(f"{path}: ends inside the ion list ({n_ions} ions declared)")
    names, colours = [], {}
    for (_, long_name), (lineno, spec) in zip(rows[::2], rows[1::2], strict=True):
        parts = spec.split()
        names.append(parts[0] if len(parts) >= 4 else long_name)
        if len(parts) >= 4:
            try:
                r, g, b = (min(255, max(0, round(float(x) * 255))) for x in parts[1:4])
            except ValueError:
                raise _err(path, lineno, f"expected 'name r g b', got {_show(spec)}") from None
            colours[parts[0]] = f"{r:02X}{g:02X}{b:02X}"
    return names, colours


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
    if read := {".rrng": read_rrng, ".rng": read_rng}.get(suffix):
        return read(p)
    raise DataFileError(f"{p}: unknown range file type {suffix!r} (expected .rrng or .rng)")


def write_ranges(table: RangeTable, path: str | Path) -> None:
    (write_rng if Path(path).suffix.lower() == ".rng" else write_rrng)(table, Path(path))


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

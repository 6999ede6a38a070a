"""Any range file a user hands over, by extension: ``.rrng`` and ``.rng`` with
:mod:`apt_daq.io.ranges`; ``.env``, ``.fig.txt``, ``.analysis`` and ``.analysisset`` through
ifes-apt-tc-data-modeling (:func:`apt_daq.io.ifes_ranges.read_ranges`). ``import --ranges`` and
``analyze --ranges`` read them the same way (``analyze`` refused the ifes formats until
Dec 2026)."""

from __future__ import annotations

from pathlib import Path

from apt_daq.rangetable import MAX_RANGES, RangeTable


def read_range_file(path: str | Path) -> RangeTable:
    """The range table of ``path`` (see the module doc); a DataFileError naming the file
    otherwise."""
    from apt_daq.errors import DataFileError
    from apt_daq.io import ifes_ranges as ifes
    from apt_daq.io.ranges import read_ranges

    if ifes.range_format_for(Path(path)) is not None and Path(path).exists():
        table = ifes.read_ranges(path)
        if len(table) > MAX_RANGES:  # .rrng and .rng refuse it as they read
            raise DataFileError(f"{path}: more than {MAX_RANGES} ranges: not a range file of "
                                "real peaks (one holds a few hundred)")
        return table
    p = Path(path)
    if p.exists() and p.suffix.lower() not in (".rrng", ".rng"):
        raise DataFileError(f"{p}: unknown range file type {p.suffix!r} (expected .rrng, .rng, "
                            ".env, .fig.txt, .analysis or .analysisset)")
    return read_ranges(path)

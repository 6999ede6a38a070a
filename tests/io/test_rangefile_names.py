"""RRNG ``Name:`` fields, other sections and ``#`` colours, as real files carry them (audit of
Dec 6 on pyccapt's calcite and apav's Si range files), judged by the ions' own isotopes and by
ifes-apt-tc-data-modeling's RRNG reader on the same file:

- a ``Name:`` whose charge puts no isotope in the range (``Name:Ca+`` on 19.84-20.09 Da, where
  40Ca2+ sits) was taken at its word: 214 579 "Ca+" ions and a wrong Ca2+/Ca+ ratio, no
  warning. The range's position decides (as ifes reads it), with a warning naming the line;
- ``Name:N2+`` on an ``N:1`` range at 7 Da (N 2+, as ifes reads it) was refused as "N2";
- an extra section (``[Display]``) and ``Color:#CCCCCC`` were refused; apav and ifes read them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_public_rangefiles import _ifes

from apt_daq.errors import DataFileError
from apt_daq.io.rangefiles import read_range_file

RRNG = """[Ions]
Number=4
Ion1=Ca
Ion2=N
Ion3=O
Ion4=Ni
[Ranges]
Number=5
Range1=19.8400 20.0900 Vol:0.02600 Ca:1 Name:Ca+ Color:33FF33
Range2=6.9000 7.1000 Vol:0.01400 N:1 Name:N2+ Color:0000FF
Range3=31.9000 32.1000 Vol:0.02300 O:2 Name:O2+ Color:FF0000
Range4=28.9000 29.1000 Vol:0.01100 Ni:1 Name:Ni2+ Color:#CCCCCC
Range5=15.9000 16.1000 Vol:0.01150 O:1 Color:FF0000
[Display]
Background=FFFFFF
"""

#: (lo, composition, charge) the isotopes put in each range: 40Ca2+ 19.98, 14N2+ 7.00,
#: 16O2+ 31.99, 58Ni2+ 28.97, 16O+ 15.99
WANT = [(6.9, {"N": 1}, 2), (15.9, {"O": 1}, 1), (19.84, {"Ca": 1}, 2), (28.9, {"Ni": 1}, 2),
        (31.9, {"O": 2}, 1)]


@pytest.fixture
def rrng(tmp_path: Path) -> Path:
    p = tmp_path / "names.rrng"
    p.write_text(RRNG)
    return p


def test_names_are_read_as_the_ranges_positions_confirm(rrng: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        t = read_range_file(rrng)
    got = [(round(float(t.lo_da[i]), 2), dict(t.composition[i]), int(t.charge[i]))
           for i in range(len(t))]
    assert got == WANT
    assert t.names[2] == "Ca2+" and t.colour[3].upper().endswith("CCCCCC")
    # one warning, for the one name the position contradicts, naming its line
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and ":9: Name:Ca+" in warned[0] and "Ca2+" in warned[0]


def test_ifes_reads_the_same_charges(rrng: Path) -> None:
    plain = rrng.with_name("plain.rrng")  # ifes reads no "#" colour: the rest as it is
    plain.write_text(RRNG.replace("#CCCCCC", "CCCCCC"))
    theirs = [(round(a, 2), c, z) for a, _, c, z in _ifes(plain)]
    assert theirs == WANT


def test_a_name_of_another_composition_is_still_refused(tmp_path: Path) -> None:
    p = tmp_path / "bad.rrng"
    p.write_text(RRNG.replace("Ca:1 Name:Ca+", "Ca:1 Name:CaO+"))
    with pytest.raises(DataFileError, match=r"names\.rrng|bad\.rrng:9: Name:CaO\+"):
        read_range_file(p)

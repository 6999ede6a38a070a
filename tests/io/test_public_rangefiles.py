"""Range files real users have (tests/data/rangefiles_public: IVAS, AP Suite, hand-edited and
other tools' RRNG and RNG files, none written here), read by apt-daq and by readers we did not
write: apav 1.4 (``RangeCollection.from_rrng``; it has no RNG reader) and
ifes-apt-tc-data-modeling 0.5 (its own RRNG and RNG readers, called directly, not through
:mod:`apt_daq.io.ifes_ranges`). 3Depict's range parser (C++, not installed) and its test
expectations (``test/rangefiles`` and ``src/testing`` of its sources) judge the quirks.

Every real file the other readers read, apt-daq reads alike: the same ranges, edges,
compositions, the charges ifes infers and the volumes apav reads. Where they differ:

- a range of a species that is no element (IVAS's ``Name:`` and no element, an RNG column
  ``unknown``, an [Ions] ion ``A``): ifes keeps it as an ion of no element, apav skips the
  ``Name:`` ones and fails on the others; we skip it with a warning (we cannot count its atoms).
  The [Ions] ion that is no element was refused outright ("unknown element 'A'").
- a file left with no range of an element (``ifes_all02.rng``: one range 0-400 Da of "All")
  read as an empty table; ``analyze`` then blamed the run file. Now refused naming the file.
- without a ``Vol:`` field ifes drops the range's first element (its reader takes the fourth
  field as the volume): ``O:1`` reads as nothing, ``Cr:1 O:1`` as O. 3Depict's examples and
  the format have Vol optional; we read the whole composition (test below).
- apav fails on decimal commas (``ifes_Mo_range.rrng``) and on repeated ``RangeN`` keys
  (``ifes_TiAlN...``, ``paraprobe...``: ConfigParser's DuplicateOptionError); ifes and we read
  each line.
- the RNG table as 3Depict reads it: a header of bare dashes (the ion list names the columns),
  a name glued to the dashes (``-----Si Cr``), rows without the leading ``.``: refused before
  ("expected 3 columns, got 5"). A table with more rows than the first line declares lost the
  extra ranges silently; now refused. Atom counts written ``1.000`` (3Depict's test6.rrng),
  ``Name: AlO`` with a space, a UTF-16 file (Windows Notepad's "Unicode"): refused before.
- a range beyond 10 kDa (3Depict's test9.rng, 1e7-1e8 "Da") read, and ``analyze`` then died
  allocating a 298 GiB spectrum (a traceback); an atom count of 10^6 (a typo) hung the charge
  inference. Both refused now, naming the line; so is a range beyond 10 kDa from ifes's formats.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from apt_daq.cli import main
from apt_daq.errors import DataFileError
from apt_daq.io.rangefiles import read_range_file

DATA = Path(__file__).resolve().parents[1] / "data" / "rangefiles_public"
FILES = sorted(p.name for p in DATA.iterdir() if p.suffix.lower() in (".rrng", ".rng"))

#: the real files ifes reads whole (no typos; ``Vol:`` in every RRNG range)
IFES_ALIKE = [n for n in FILES if not n.startswith("3depict_") and n not in (
    "ifes_aus_sydney_theska.rrng", "ifes_all02.rng")]
#: the RRNG files apav reads (no decimal commas, no repeated keys)
APAV_ALIKE = ["apav_Si.RRNG", "ifes_R18_58152-v02.RRNG", "ifes_R31_06365-v02.rrng",
              "ifes_Ranges_R45_2434-v01.rrng", "ifes_usa_portland_grimm_elbow.rrng",
              "pyccapt_rangefile.rrng"]


def _ours(p: Path) -> list[tuple]:
    t = read_range_file(p)
    return [(float(t.lo_da[i]), float(t.hi_da[i]), dict(t.composition[i]), int(t.charge[i]),
             float(t.volume_nm3[i])) for i in range(len(t))]


def _ifes(p: Path) -> list[tuple]:
    """(lo, hi, composition, charge or 0) of each range ifes reads, by lo."""
    pytest.importorskip("ifes_apt_tc_data_modeling")
    from ase.data import chemical_symbols

    if p.suffix.lower() == ".rrng":
        from ifes_apt_tc_data_modeling.rrng.rrng_reader import ReadRrngFileFormat as Reader
    else:
        from ifes_apt_tc_data_modeling.rng.rng_reader import ReadRngFileFormat as Reader
    reader = Reader(str(p))
    out = []
    for ion in getattr(reader, "rrng" if p.suffix.lower() == ".rrng" else "rng")[
            "molecular_ions"]:
        comp: dict[str, int] = {}
        for _, z in np.asarray(ion.nuclide_list).reshape(-1, 2):
            if z:
                comp[chemical_symbols[int(z)]] = comp.get(chemical_symbols[int(z)], 0) + 1
        for a, b in np.asarray(getattr(ion.ranges, "magnitude", ion.ranges), float).reshape(-1, 2):
            out.append((float(a), float(b), comp, int(ion.charge_state)))
    return sorted(out, key=lambda r: r[0])


#: ifes's charge combinatorics take 7-28 s on each of these
IFES_SLOW = {"ifes_usa_portland_grimm_elbow.rrng", "ifes_SeHoKim_R5076_44076_v02.rng",
             "ifes_87D_1.rng", "ifes_R31_06365-v02.rrng", "apav_Si.RNG",
             "ifes_TiAlN_film_cross-section_850C.rrng", "ifes_Mo_range.rrng"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in IFES_SLOW
                                  else n for n in IFES_ALIKE])
def test_real_file_reads_as_ifes_reads_it(name: str) -> None:
    ours = _ours(DATA / name)
    theirs = [r for r in _ifes(DATA / name) if r[2]]  # ifes's ions of no element: we skip them
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a[:2] == pytest.approx(b[:2], abs=1e-4)
        assert a[2] == b[2], (a, b)
        assert b[3] == 0 or a[3] == b[3], (a, b)  # 0: ifes could not tell the charge


@pytest.mark.parametrize("name", APAV_ALIKE)
def test_real_rrng_reads_as_apav_reads_it(name: str) -> None:
    apav = pytest.importorskip("apav")
    ours = _ours(DATA / name)
    theirs = sorted(apav.RangeCollection.from_rrng(str(DATA / name)), key=lambda r: r.lower)
    assert len(ours) == len(theirs)
    for a, rg in zip(ours, theirs, strict=True):
        assert a[:2] == pytest.approx((rg.lower, rg.upper), abs=1e-4)
        assert a[2] == {getattr(e, "symbol", str(e)): int(k) for e, k in rg.ion.comp_dict.items()}
        assert a[4] == pytest.approx(rg.vol)


@pytest.mark.parametrize("name", FILES)
def test_every_public_file_reads_or_is_refused_in_one_line_naming_it(name: str) -> None:
    try:
        assert len(read_range_file(DATA / name)) > 0
    except DataFileError as e:
        assert str(e).startswith(str(DATA / name)) and "\n" not in str(e)


@pytest.mark.parametrize("name, where, what", [
    ("ifes_aus_sydney_theska.rrng", ":1:", "expected key=value"),  # hand-edited: all refuse it
    ("ifes_all02.rng", ":", "holds no range of an element"),
    ("3depict_test1.rng", ":", "holds no range of an element"),  # bare dashes, no '.', Aa..Jj
    ("3depict_test12.rng", ":", "holds no range of an element"),
    ("3depict_test7.rng", ":7:", "starts below 0 Da"),  # bare dashes: the ion list's M, N
    ("3depict_test9.rng", ":9:", "ends above 10000 Da"),  # "-----In Out Bd", 1e7 "Da"
])
def test_public_file_refused_naming_its_line(name: str, where: str, what: str) -> None:
    with pytest.raises(DataFileError) as e:
        read_range_file(DATA / name)
    assert str(e.value).startswith(f"{DATA / name}{where}") and what in str(e.value), e.value


@pytest.mark.parametrize("name", ["ifes_aus_sydney_theska.rrng", "ifes_all02.rng"])
def test_analyze_refuses_a_bad_public_file_in_one_line_naming_it(run: Path, capsys,
                                                                  name: str) -> None:
    assert main(["analyze", str(run), "--ranges", str(DATA / name), "--no-store"]) == 2
    err = [s for s in capsys.readouterr().err.splitlines() if s.startswith("error:")]
    assert len(err) == 1 and str(DATA / name) in err[0], err


def test_analyze_reads_a_public_file(run: Path, capsys) -> None:
    assert main(["analyze", str(run), "--ranges", str(DATA / "ifes_R18_59377_new.rng"),
                 "--no-store", "--json"]) == 0


def test_ions_of_the_ion_list_that_are_no_element_are_skipped(caplog) -> None:
    """3Depict's test2.rrng: [Ions] A, B, C and no Vol field. B (boron) and C (carbon) read; A's
    two ranges are skipped with a warning each. It was refused: "unknown element 'A'"."""
    with caplog.at_level(logging.WARNING, logger="apt_daq"):
        ours = _ours(DATA / "3depict_test2.rrng")
    assert [(r[0], r[1], r[2]) for r in ours] == [
        (32.0, 34.0, {"B": 1}), (39.0, 39.98, {"C": 1}), (40.0, 41.0, {"C": 1}),
        (92.08, 94.0, {"C": 1})]
    assert caplog.text.count("no element (A)") == 2


def test_whole_counts_written_as_decimals_read() -> None:
    """3Depict's test6.rrng ([IONS], ``vol:``, ``B:1.000``; 3Depict reads 4 ranges of 2 ions):
    boron's two read, A's skipped. ``A:1.000`` was refused ("expected an integer")."""
    assert [(r[0], r[2], r[4]) for r in _ours(DATA / "3depict_test6.rrng")] == [
        (44.32, {"B": 1}, 12.11), (100.142, {"B": 1}, 12.11)]


def _variant(tmp_path: Path, name: str, new_name: str, *subs: tuple[str, str]) -> Path:
    text = (DATA / name).read_text()
    for a, b in subs:
        assert a in text, a
        text = text.replace(a, b)
    (tmp_path / new_name).write_text(text)
    return tmp_path / new_name


RNG_AS_3DEPICT_READS = {
    "glued": ("----------------- Si Cr O Cu C", "-----------------Si Cr O Cu C"),
    "bare": ("----------------- Si Cr O Cu C", "-------"),
    "no_dots": ("\n. ", "\n"),
}


@pytest.mark.parametrize("case", sorted(RNG_AS_3DEPICT_READS))
def test_rng_table_as_3depict_reads_it(tmp_path: Path, case: str) -> None:
    p = _variant(tmp_path, "apav_Si.RNG", f"{case}.rng", RNG_AS_3DEPICT_READS[case])
    assert _ours(p) == _ours(DATA / "apav_Si.RNG")


def test_rrng_spellings_other_tools_write_read_alike(tmp_path: Path) -> None:
    """``Si:1.000``, ``Name: CrO`` with a space (a label), a UTF-16 file."""
    want = _ours(DATA / "apav_Si.RRNG")
    p = _variant(tmp_path, "apav_Si.RRNG", "a.rrng", (" Si:1 ", " Si:1.000 "),
                 ("Cr:1 O:1 Color", "Cr:1 O:1 Name: CrO Color"))
    assert _ours(p) == want
    q = tmp_path / "utf16.rrng"
    q.write_bytes((DATA / "apav_Si.RRNG").read_text().encode("utf-16"))
    assert _ours(q) == want


def test_no_vol_field_keeps_the_whole_composition_where_ifes_drops_an_element(tmp_path):
    p = tmp_path / "novol.rrng"
    p.write_text("[Ions]\nNumber=2\nIon1=Cr\nIon2=O\n[Ranges]\nNumber=2\n"
                 "Range1=15.9 16.2 O:1 Color:FF0000\nRange2=67.8 68.2 Cr:1 O:1 Color:00FF00\n")
    assert [r[2] for r in _ours(p)] == [{"O": 1}, {"Cr": 1, "O": 1}]
    assert [r[2] for r in _ifes(p)] == [{"O": 1}]  # ifes: 16 Da lost, CrO read as O


MALFORMED = {  # variant of a public file: (file, substitution, where, what)
    "more_rows_than_declared": ("apav_Si.RNG", ("5 25", "5 24"), ": declares 24 ranges",
                                "(line 37)"),
    "header_names_too_few": ("apav_Si.RNG", (" Si Cr O Cu C", " Si Cr O Cu"), ":12:",
                             "header names 4 ions"),
    "edge_beyond_10_kDa": ("apav_Si.RRNG", ("65.5480", "65548.0"), ":21:", "above 10000 Da"),
    "257_atoms": ("apav_Si.RRNG", ("Vol:0.01181 Cu:1", "Vol:0.01181 Cu:257"), ":20:",
                  "257 atoms in one ion"),
    "half_an_atom": ("apav_Si.RRNG", ("Vol:0.02883 O:1", "Vol:0.02883 O:1.5"), ":24:",
                     "whole number"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_variant_is_one_line_naming_file_and_line(tmp_path: Path, case: str) -> None:
    name, sub, where, what = MALFORMED[case]
    p = _variant(tmp_path, name, f"{case}{Path(name).suffix}", sub)
    with pytest.raises(DataFileError) as e:
        read_range_file(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}{where}") and what in msg and "\n" not in msg, msg


def test_binary_file_is_one_short_line(tmp_path: Path) -> None:
    p = tmp_path / "junk.rrng"
    p.write_bytes(b"\x00\xff" * 5000)
    with pytest.raises(DataFileError) as e:
        read_range_file(p)
    assert str(e.value).startswith(f"{p}:1:") and len(str(e.value)) < 200 + len(str(p))


def test_ifes_format_range_beyond_10_kda_is_refused(tmp_path: Path) -> None:
    """An ENV file (GPM's format, read through ifes; the layout of ifes's ErMnO.env) with an
    O2 range to 3.4e7 Da read, and analyze died allocating its spectrum."""
    pytest.importorskip("ifes_apt_tc_data_modeling")
    p = tmp_path / "big.env"
    p.write_text("Rev_2.0\n\n# Number of elements / Number of mass ranges\n2\t2\n\n"
                 "O\t0.0\t1.0\t0.0\nO2\t0.0\t0.0\t1.0\n\n"
                 "# Definition of  Mass ranges / Atomic volumes / Increment for concentration\n"
                 "O\t15.880\t16.840\t20.000\t1.000\nO2\t31.720\t34300000.0\t11.660\t1.000\n\n"
                 "# Atom probe definition\n\n# Flight length (m)\n0.100500\n")
    with pytest.raises(DataFileError, match=r"big\.env: range \[31\.72, 3\.43e\+07\) of O2 "
                                            "ends above 10000 Da"):
        read_range_file(p)

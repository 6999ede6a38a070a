"""RRNG/RNG round trips, the shipped range files, malformed files, assisted ranging."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_daq.errors import DataFileError
from apt_daq.io.ranges import RangeTable, read_ranges, write_ranges
from apt_daq.isotopes import ion_mass
from apt_daq.pipeline.ranging import propose_ranges, ranges_for_ions

ROOT = Path(__file__).resolve().parents[2]
IONS = [
    "Li+",
    "O+",
    "O2+",
    "Ni+",
    "Ni2+",
    "Co+",
    "Co2+",
    "Mn+",
    "Mn2+",
    "NiO+",
    "CrO+",
    "Ga+",
    "(O2)2+",
]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.sampled_from(IONS), min_size=1, max_size=8, unique=True),
    st.sampled_from([".rrng", ".rng"]),
)
def test_round_trip(tmp_path_factory, ions: list[str], ext: str) -> None:
    t = ranges_for_ions(ions)
    p = tmp_path_factory.mktemp("r") / f"x{ext}"
    write_ranges(t, p)
    back = read_ranges(p)
    assert back.names == t.names  # RNG has no charges: they are inferred from the positions
    np.testing.assert_allclose(back.lo_da, t.lo_da, atol=1e-4)
    np.testing.assert_allclose(back.hi_da, t.hi_da, atol=1e-4)
    assert back.composition == t.composition


@pytest.mark.parametrize("name", ["nmc811.rrng", "lmo.rrng"])
def test_shipped_ranges_cover_main_peaks(name: str) -> None:
    t = read_ranges(ROOT / "configs" / "ranges" / name)
    want = ["Li+", "O+", "O2+", "Mn+", "Mn2+", "MnO+", "LiO+", "Cr+", "Cr2+", "CrO+", "Ga+"]
    if name.startswith("nmc"):
        want += ["Ni+", "Ni2+", "Co+", "Co2+", "NiO+", "CoO+"]
    for ion in want:
        m = ion_mass(ion)
        i = np.searchsorted(t.lo_da, m, side="right") - 1
        assert i >= 0 and m < t.hi_da[i] and t.names[i] == ion, ion
    assert any(t.lo_da[i] <= 6.015 < t.hi_da[i] for i in range(len(t)))  # 6Li


BAD = {
    "overlap": (
        "[Ions]\nNumber=1\nIon1=O\n[Ranges]\nNumber=2\nRange1=15.9 16.2 O:1\nRange2=16.1 16.5 N:1\n",
        ":7",
    ),
    "inverted": ("[Ranges]\nNumber=1\nRange1=16.2 15.9 O:1\n", ":3"),
    "element": ("[Ranges]\nNumber=1\nRange1=15.9 16.2 Xx:1\n", ":3"),
    "number": ("[Ranges]\nNumber=1\nRange1=abc 16.2 O:1\n", ":3"),
    "count": ("[Ranges]\nNumber=2\nRange1=15.9 16.2 O:1\n", "Number=2"),
    "nocomp": ("[Ranges]\nNumber=1\nRange1=15.9 16.2 Vol:0.01\n", ":3"),
    "colour": ("[Ranges]\nNumber=1\nRange1=15.9 16.2 O:1 Color:XYZ\n", ":3"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_rrng_names_file_and_line(tmp_path: Path, case: str) -> None:
    text, where = BAD[case]
    p = tmp_path / f"{case}.rrng"
    p.write_text(text)
    with pytest.raises(DataFileError) as e:
        read_ranges(p)
    assert str(p) in str(e.value) and where in str(e.value)


def test_malformed_rng_and_unknown_type(tmp_path: Path) -> None:
    p = tmp_path / "x.rng"
    p.write_text("1 1\nO\nO 1 0 0\n------ O\n. 15.9 16.2 1 0\n")
    with pytest.raises(DataFileError, match=r"x\.rng:5"):
        read_ranges(p)
    q = tmp_path / "x.txt"
    q.write_text("")
    with pytest.raises(DataFileError, match="unknown range file type"):
        read_ranges(q)


def test_one_ions_repeated_or_overlapping_ranges_are_merged(tmp_path: Path, caplog) -> None:
    # real human files do this (ifes's VAlN_film_plan-view_700C.rrng repeats lines; its
    # ErMnO.env draws two windows on one Er3+ peak): one range, one warning naming the lines
    p = tmp_path / "rep.rrng"
    p.write_text("[Ranges]\nNumber=4\nRange1=15.9 16.2 O:1\nRange2=15.9 16.2 O:1\n"
                 "Range3=16.1 16.5 O:1\nRange4=27.9 28.1 Si:1\n")
    with caplog.at_level(logging.WARNING, logger="apt_daq"):
        t = read_ranges(p)
    assert list(t.names) == ["O+", "Si+"]
    assert (t.lo_da[0], t.hi_da[0]) == (15.9, 16.5)
    assert caplog.text.count("merged") == 1 and "lines 4, 5" in caplog.text
    tm = RangeTable.merging_same_ion(["Er3+", "Er3+"], [55.09, 55.543], [55.55, 55.88],
                                     [{"Er": 1}] * 2, [3, 3], source="ErMnO.env")
    assert len(tm) == 1 and tm.hi_da[0] == 55.88


def test_rangetable_rejects_overlap() -> None:
    with pytest.raises(ValueError, match="overlap"):
        RangeTable.from_list([("O+", 15.9, 16.2), ("(O2)2+", 16.0, 16.1)])


def test_assisted_ranging_finds_synthetic_peaks() -> None:
    rng = np.random.default_rng(0)
    ions = ["Li+", "O+", "O2+", "Ni2+"]
    mass = np.concatenate(
        [rng.normal(ion_mass(i), 0.01, 20000) for i in ions] + [rng.uniform(0, 40, 5000)]
    )
    counts, edges = np.histogram(mass, np.arange(0, 40, 0.005))
    t = propose_ranges(counts, edges, ions)
    for ion in ions:
        m = ion_mass(ion)
        i = np.searchsorted(t.lo_da, m, side="right") - 1
        assert t.names[i] == ion and m < t.hi_da[i]
        assert t.hi_da[i] - t.lo_da[i] > 4 * 0.01  # covers the peak (+- 2 sigma at least)


def test_written_rrng_is_read_whole_by_apav_and_keeps_charges(tmp_path: Path) -> None:
    """Our RRNG carries each range's ion name in a comment line, not in a ``Name:`` field
    (IVAS's mark of an unknown species, whose ranges apav skips): apav reads every range with
    its edges and atoms, and we read the charges back, (O2)2+ at 16 Da included."""
    apav = pytest.importorskip("apav")
    table = ranges_for_ions(["Li+", "Ni2+", "CrO+", "(O2)2+"])
    p = tmp_path / "t.rrng"
    write_ranges(table, p)
    assert "Name:" not in p.read_text()
    theirs = sorted(apav.RangeCollection.from_rrng(str(p)), key=lambda r: r.lower)
    assert len(theirs) == len(table)
    for i, rg in enumerate(theirs):
        assert (rg.lower, rg.upper) == pytest.approx((table.lo_da[i], table.hi_da[i]), abs=1e-4)
        assert {getattr(e, "symbol", str(e)): int(k) for e, k in rg.ion.comp_dict.items()} == \
            table.composition[i]
    assert read_ranges(p).names == table.names


@pytest.mark.parametrize("name", ["nmc811", "lmo"])
def test_shipped_rrng_read_alike_by_apav_ifes_and_us(name: str) -> None:
    """The shipped range files: apav and ifes-apt-tc-data-modeling (two independent readers)
    find every range with our edges and ions (apav skipped them all while they carried
    IVAS's ``Name:`` mark of an unknown species)."""
    apav = pytest.importorskip("apav")
    pytest.importorskip("ifes_apt_tc_data_modeling")
    from apt_daq.io.ifes_ranges import read_ranges as ifes_ranges

    p = Path(__file__).resolve().parents[2] / "configs" / "ranges" / f"{name}.rrng"
    ours = read_ranges(p)
    theirs = sorted(apav.RangeCollection.from_rrng(str(p)), key=lambda r: r.lower)
    assert len(theirs) == len(ours)
    for i, rg in enumerate(theirs):
        assert (rg.lower, rg.upper) == pytest.approx((ours.lo_da[i], ours.hi_da[i]), abs=1e-4)
        assert {getattr(e, "symbol", str(e)): int(k) for e, k in rg.ion.comp_dict.items()} == \
            ours.composition[i]
    via_ifes = ifes_ranges(p, "ifes-rrng")
    order = np.argsort(via_ifes.lo_da)
    assert np.allclose(via_ifes.lo_da[order], ours.lo_da, atol=1e-4)
    assert [via_ifes.composition[j] for j in order] == ours.composition
    assert [int(via_ifes.charge[j]) for j in order] == [int(z) for z in ours.charge]


def test_an_either_or_range_from_ifes_is_told_from_a_molecular_ion() -> None:
    # AP Suite's "Si/Fe" at 13.95-14.06 Da (28Si2+ or 56Fe4+) reaches us from ifes as (FeSi)6+;
    # a real molecular ion's window holds no atomic isotope of two of its elements
    from apt_daq.io.ifes_ranges import _alternatives

    assert _alternatives({"Fe": 1, "Si": 1}, 13.95, 14.06)
    assert _alternatives({"Fe": 1, "Si": 1}, 27.937, 28.111)  # Si+ or Fe2+
    assert not _alternatives({"Cr": 1, "O": 1}, 67.8, 68.1)  # 52Cr16O+

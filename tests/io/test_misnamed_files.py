"""A file named for one format but holding another is refused, not read as garbage ions.

The references are apav's real AP Suite files (Si.epos, Si.pos, Si.apt), cut with plain byte
slicing: an EPOS file of 4k ions is also a whole number of 16-byte POS records, and its TOF,
volts and detector coordinates are numbers of the size of positions and m/n, so before the
check it imported as 11k "ions" with a made-up composition, exit 0."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from apt_daq.cli import main
from apt_daq.io.pos import PosFile


def _cut(src: Path, dst: Path, nbytes: int) -> Path:
    with open(src, "rb") as fh:
        dst.write_bytes(fh.read(nbytes))
    return dst


@pytest.mark.parametrize("ions", [4, 400, 40_000])
def test_epos_named_pos_is_refused_naming_epos(tmp_path: Path, apav_data: Path, capsys, ions):
    f = _cut(apav_data / "Si.epos", tmp_path / "renamed.pos", 44 * ions)
    assert f.stat().st_size % 16 == 0  # passes the POS size check: the case at issue
    out = tmp_path / "o.h5"
    assert main(["import", str(f), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "EPOS" in err[0] and str(f) in err[0], err
    assert not out.exists()
    # the same bytes imported as what they are give the file's own first ions
    good = _cut(apav_data / "Si.epos", tmp_path / "right.epos", 44 * ions)
    assert main(["import", str(good), "-o", str(tmp_path / "e.h5")]) == 0


@pytest.mark.parametrize("records", [11, 1100, 11_000, 110_000])
def test_real_pos_whose_size_is_whole_epos_records_still_reads(tmp_path: Path, apav_data: Path,
                                                               records):
    """A POS prefix of 11 k records (also a whole number of 44-byte records) is POS."""
    f = _cut(apav_data / "Si.pos", tmp_path / "cut.pos", 16 * records)
    assert f.stat().st_size % 44 == 0
    pos = PosFile(f)
    raw = np.fromfile(f, dtype=">f4").reshape(-1, 4)
    np.testing.assert_array_equal(pos.read()["mass"], raw[:, 3])


def test_apt_named_pos_is_refused(tmp_path: Path, apav_data: Path, capsys):
    f = tmp_path / "renamed.pos"
    f.write_bytes((apav_data / "Si.apt").read_bytes())
    assert main(["import", str(f), "-o", str(tmp_path / "o.h5")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- range files
def _labelled_si_rrng(apav_data: Path) -> str:
    """apav's real Si.RRNG with IVAS-style labels on its CrO ranges (``Name:CrO``: a label,
    not an ion) and the 1+ CrO range named as the ion it is."""
    text = (apav_data / "Si.RRNG").read_text()
    text = text.replace("Range17=67.6220 69.5740 Vol:0.04083 Cr:1 O:1 Color:FF0000",
                        "Range17=67.6220 69.5740 Vol:0.04083 Cr:1 O:1 Color:FF0000 Name:CrO")
    text = text.replace("Range20=32.8920 33.2750 Vol:0.04083 Cr:1 O:1 Color:FF0000",
                        "Range20=32.8920 33.2750 Vol:0.04083 Cr:1 O:1 Name:CrO2 Color:FF0000")
    text = text.replace("Range18=69.7810 70.1560 Vol:0.04083 Cr:1 O:1 Color:FF0000",
                        "Range18=69.7810 70.1560 Vol:0.04083 Cr:1 O:1 Color:FF0000 Name:CrO+")
    assert text.count("Name:") == 3
    return text


def test_range_names_that_are_labels_read_as_apav_and_ifes_read_them(tmp_path: Path,
                                                                      apav_data: Path):
    """ifes reads labelled ranges so; apav skips every range that has a Name: field."""
    pytest.importorskip("ifes_apt_tc_data_modeling")
    from apt_daq.io.ifes_ranges import read_ranges as ifes_ranges
    from apt_daq.io.ranges import read_ranges

    p = tmp_path / "labelled.rrng"
    p.write_text(_labelled_si_rrng(apav_data))
    ours = read_ranges(p)
    plain = read_ranges(apav_data / "Si.RRNG")
    # a label changes nothing: edges, compositions and charges are the unlabelled file's
    np.testing.assert_array_equal(ours.lo_da, plain.lo_da)
    assert ours.composition == plain.composition and ours.charge == plain.charge
    assert ours.charge[int(np.flatnonzero(np.isclose(ours.lo_da, 32.892))[0])] == 2
    via_ifes = ifes_ranges(p, "ifes-rrng")
    order = np.argsort(via_ifes.lo_da)
    assert [via_ifes.composition[j] for j in order] == ours.composition
    assert [int(via_ifes.charge[j]) for j in order] == [int(z) for z in ours.charge]


@pytest.mark.parametrize(("name", "code"), [("O2+", 0), ("SiO+", 2)])
def test_range_name_of_another_ion_is_named_with_its_line(tmp_path: Path, apav_data: Path,
                                                          capsys, caplog, name: str,
                                                          code: int):
    """``Name:O2+`` on the O:1 range at 16 Da reads as O 2+ (the O2 molecule is another
    composition), whose isotopes are at 8 Da: the range's position decides (O+, as ifes reads
    it), with a warning naming the line. ``Name:SiO+`` matches no reading of O:1: refused."""
    text = (apav_data / "Si.RRNG").read_text().replace(
        "Range15=15.8580 16.4800 Vol:0.02883 O:1 Color:00CCFF",
        f"Range15=15.8580 16.4800 Vol:0.02883 O:1 Name:{name} Color:00CCFF")
    p = tmp_path / "contradicts.rrng"
    p.write_text(text)
    run = tmp_path / "si.h5"
    assert main(["import", str(apav_data / "Si.pos"), "-o", str(run)]) == 0
    capsys.readouterr()
    assert main(["analyze", str(run), "--ranges", str(p), "--no-store"]) == code
    said = capsys.readouterr().err.strip().splitlines() + [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]  # warnings
    said = [e for e in said if f"{p}:" in e]
    assert len(said) == 1 and f"{p}:24" in said[0] and name in said[0], said


def test_rrng_with_a_byte_order_mark_reads_as_without(tmp_path: Path, apav_data: Path):
    from apt_daq.io.ranges import read_ranges

    p = tmp_path / "bom.rrng"
    p.write_bytes(b"\xef\xbb\xbf" + (apav_data / "Si.RRNG").read_bytes())
    ours, plain = read_ranges(p), read_ranges(apav_data / "Si.RRNG")
    np.testing.assert_array_equal(ours.lo_da, plain.lo_da)
    assert ours.names == plain.names


def test_ivas_range_of_unknown_species_is_skipped_as_apav_and_ifes_skip_it(tmp_path: Path,
                                                                         apav_data: Path,
                                                                         caplog):
    """IVAS writes a range of an unknown species with ``Name:`` and no element; the whole file
    was refused ("range has no composition"), where apav and ifes read the other ranges."""
    apav = pytest.importorskip("apav")
    pytest.importorskip("ifes_apt_tc_data_modeling")
    from apt_daq.io.ifes_ranges import read_ranges as ifes_ranges
    from apt_daq.io.ranges import read_ranges

    p = tmp_path / "unknown.rrng"
    p.write_text((apav_data / "Si.RRNG").read_text().replace(
        "Range14=5.8960 6.1930 Vol:0.00878 C:1 Color:660033",
        "Range14=5.8960 6.1930 Vol:0.00000 Name:Unknown Color:660033"))
    ours = read_ranges(p)
    theirs = sorted(apav.RangeCollection.from_rrng(str(p)), key=lambda r: r.lower)
    via_ifes = ifes_ranges(p, "ifes-rrng")
    assert len(ours) == len(theirs) == len(via_ifes.lo_da) == 24
    assert [round(r.lower, 4) for r in theirs] == [round(x, 4) for x in ours.lo_da]
    assert 5.896 not in [round(x, 4) for x in ours.lo_da]
    assert any("unknown species" in r.getMessage() and ":23:" in r.getMessage()
               for r in caplog.records)


def test_an_rng_column_that_is_no_element_is_skipped_like_an_unnamed_rrng_range(tmp_path, caplog):
    """ifes's real test file range_file_RNG.RNG has a column ``unknown`` (IVAS's species
    nobody named): the whole file was refused (exit 2) where ifes reads it; now its ranges of
    that column are skipped with a warning, the rest read."""
    import logging

    from apt_daq.errors import DataFileError
    from apt_daq.io.ranges import read_ranges

    p = tmp_path / "u.rng"
    p.write_text("2 3\nFe\nFe 1.00 0.00 1.00\nunknown\nunknown 0.60 0.60 0.00\n"
                 "------------------- Fe unknown\n. 27.8537 28.1000 1 0\n"
                 ". 27.41 27.53 0 1\n. 55.80 56.10 1 0\n")
    with caplog.at_level(logging.WARNING):
        t = read_ranges(p)
    assert len(t) == 2 and set(t.elements) == {"Fe"}
    assert "u.rng:8: range [27.41, 27.53) of a species that is no element (unknown)" in caplog.text
    p.write_text("2 1\nFe\nFe 1.00 0.00 1.00\nunknown\nunknown 0.60 0.60 0.00\n"
                 "------------------- Fe unknown\n. 27.8537 28.1000 1 1\n")
    with pytest.raises(DataFileError, match=r"u.rng:7: mixes the column\(s\) unknown"):
        read_ranges(p)

"""Imports through ifes-apt-tc-data-modeling (``--format ifes-apt|ifes-pos|ifes-epos``) of
apav's real LEAP Si dataset: the run's ``fields`` list only what the file holds, and what the
file holds (an APT's Multiplicity and XDet_mm/YDet_mm, an EPOS's ipp) is imported.

Judged against the files themselves: the APT sections found by a walker written here from the
format's header layout, the EPOS records read with numpy.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from apt_daq.analysis.report import analyze
from apt_daq.commands.import_ import import_file
from apt_daq.io.store import RunReader

pytest.importorskip("ifes_apt_tc_data_modeling")
SI_IONS = 945211


def apt_sections(path: Path) -> dict[str, tuple[str, bytes]]:
    """Section name -> (unit, data bytes) of an APT v2 file: a 540-byte file header, then
    148-byte section headers (name UTF-16 at +12, header size at +4, unit UTF-16 at +100,
    byte count at +140)."""
    b = Path(path).read_bytes()
    assert b[:4] == b"APT\0"
    off = struct.unpack_from("<i", b, 4)[0]
    out = {}
    while off < len(b):
        assert b[off : off + 4] == b"SEC\0", off
        hsize = struct.unpack_from("<i", b, off + 4)[0]
        name = b[off + 12 : off + 76].decode("utf-16-le").split("\0")[0]
        unit = b[off + 100 : off + 132].decode("utf-16-le").split("\0")[0]
        nbytes = struct.unpack_from("<Q", b, off + 140)[0]
        out[name] = (unit, b[off + hsize : off + hsize + nbytes])
        off += hsize + nbytes
    return out


def per_ion(first_only: np.ndarray) -> np.ndarray:
    """EPOS/APT first-of-pulse counts -> the count on every ion of the pulse (loop, plain)."""
    out = np.empty(len(first_only), np.int64)
    current = 1
    for i, k in enumerate(first_only.tolist()):
        if k > 0:
            current = k
        out[i] = current
    return out


@pytest.fixture(scope="module")
def si_ifes_apt(tmp_path_factory, apav_data: Path) -> Path:
    out = tmp_path_factory.mktemp("ifes_apt") / "si.h5"
    import_file(apav_data / "Si.apt", out, fmt="ifes-apt")
    return out


def test_ifes_apt_imports_the_files_multiplicity_and_detector_positions(si_ifes_apt: Path,
                                                                         apav_data: Path):
    """Was: fields x, y, z, mass, pulse, multiplicity (with a note 'no pulse numbers: each ion
    is its own pulse'), multiplicity 1 on every ion, no detector position."""
    sec = apt_sections(apav_data / "Si.apt")
    assert {"Multiplicity", "XDet_mm", "YDet_mm"} <= set(sec)
    assert not {"pulse", "pulseDelta", "tof", "Voltage"} & set(sec)
    with RunReader(si_ifes_apt) as r:
        hits = r.read("hits")
        imp = r.meta["imported"]
    assert len(hits) == SI_IONS
    # exactly what the file holds: positions, m/n, detector x/y, multiplicities; no pulses
    assert set(imp["fields"]) == {"x", "y", "z", "mass", "det_x", "det_y", "multiplicity"}
    assert "one per multi-hit event" in imp["pulses"]
    assert "tofc" in imp["skipped_sections"]
    assert np.array_equal(hits["det_x"], np.frombuffer(sec["XDet_mm"][1], "<f4"))
    assert np.array_equal(hits["det_y"], np.frombuffer(sec["YDet_mm"][1], "<f4"))
    assert sec["XDet_mm"][0] == "mm"
    mult = np.frombuffer(sec["Multiplicity"][1], "<i4")
    assert np.array_equal(hits["multiplicity"], np.minimum(per_ion(mult), 255))
    # one pulse per event: a new pulse exactly where the file starts a multi-hit group
    new = np.r_[True, hits["pulse"][1:] != hits["pulse"][:-1]]
    assert np.array_equal(new, np.r_[True, mult[1:] > 0])


def test_ifes_apt_multihit_statistics_are_the_files(si_ifes_apt: Path, apav_data: Path):
    """Was: available, multi_event_fraction 0.0, events_by_multiplicity {"1": 945211}."""
    mult = np.frombuffer(apt_sections(apav_data / "Si.apt")["Multiplicity"][1], "<i4")
    events = mult[mult > 0]
    mh = analyze(si_ifes_apt, apav_data / "Si.RRNG", roi="none").summary["multihit"]
    assert mh["available"] is True
    assert mh["events_by_multiplicity"]["2"] == int(np.sum(events == 2)) == 17158
    assert mh["events_by_multiplicity"]["1"] == int(np.sum(events == 1))
    assert mh["multi_event_fraction"] == pytest.approx(np.mean(events > 1))
    assert mh["multi_event_fraction"] > 0.01


def test_ifes_pos_has_neither_pulses_nor_multiplicities(tmp_path: Path, apav_data: Path):
    """POS holds x, y, z, m/n only. Was: fields ... pulse, multiplicity, and a multihit
    section 'available' with 0 % multi-hits."""
    out = tmp_path / "si_pos.h5"
    import_file(apav_data / "Si.pos", out, fmt="ifes-pos")
    with RunReader(out) as r:
        imp = r.meta["imported"]
        hits = r.read("hits")
    assert set(imp["fields"]) == {"x", "y", "z", "mass"}
    assert len(hits) == np.fromfile(apav_data / "Si.pos", ">f4").size // 4
    mh = analyze(out, apav_data / "Si.RRNG", roi="none").summary["multihit"]
    assert mh["available"] is False
    assert "multi_event_fraction" not in mh


def test_ifes_epos_without_pulse_numbers_groups_by_ipp(tmp_path: Path, apav_data: Path):
    """Si.epos has ipp but psl = 0 on every ion. Was: 'pulse' in fields and every ion on
    pulse 0 (the cumulative sum of zeros): one event of 945211 ions."""
    rec = np.fromfile(apav_data / "Si.epos", ">u4").reshape(-1, 11)
    psl, ipp = rec[:, 9].astype(np.int64), rec[:, 10].astype(np.int64)
    assert not psl.any() and ipp.any()
    out = tmp_path / "si_epos.h5"
    import_file(apav_data / "Si.epos", out, fmt="ifes-epos")
    with RunReader(out) as r:
        imp = r.meta["imported"]
        hits = r.read("hits")
    assert "pulse" not in imp["fields"] and "multiplicity" in imp["fields"]
    assert np.array_equal(hits["multiplicity"], np.minimum(per_ion(ipp), 255))
    new = np.r_[True, hits["pulse"][1:] != hits["pulse"][:-1]]
    assert np.array_equal(new, np.r_[True, ipp[1:] > 0])


def test_ifes_apt_reads_every_section_of_a_full_apt(tmp_path: Path):
    """An APT with every section (an apt-daq run exported): tof, Voltage, Pulse Voltage and the
    pulse numbers come through the library as the file's bytes have them."""
    from synthetic_runs import make_run

    from apt_daq.commands.export import export_run

    run = make_run(tmp_path / "r.h5", n=6000, simulated=True)
    apt = tmp_path / "r.apt"
    export_run(run, "apt", apt)
    sec = apt_sections(apt)
    out = tmp_path / "again.h5"
    import_file(apt, out, fmt="ifes-apt")
    with RunReader(out) as r:
        hits = r.read("hits")
        imp = r.meta["imported"]
    assert set(imp["fields"]) == {"x", "y", "z", "mass", "tof", "v_dc", "v_pulse", "det_x",
                                  "det_y", "pulse", "multiplicity"}
    for name, field in (("tof", "tof"), ("Voltage", "v_dc"), ("Pulse Voltage", "v_pulse"),
                        ("XDet_mm", "det_x"), ("YDet_mm", "det_y")):
        assert np.array_equal(hits[field], np.frombuffer(sec[name][1], "<f4")), name
    fpulse = np.frombuffer(sec["pulse"][1], "<f4").astype(np.float64)
    assert fpulse.max() < 2**24  # exact in float32
    assert np.array_equal(hits["pulse"], np.rint(fpulse).astype(np.uint64))
    assert np.array_equal(hits["multiplicity"],
                          per_ion(np.frombuffer(sec["Multiplicity"][1], "<i4")))

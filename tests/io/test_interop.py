"""Interop with independent readers installed from PyPI: apav and ifes-apt-tc-data-modeling.

What we write they read with the same counts and values; what they (and AP Suite) wrote we
read. The real dataset is the Si LEAP run that apav ships (an APT file exported by AP Suite,
with its RRNG).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from apt_daq.commands.export import export_run
from apt_daq.commands.import_ import import_file
from apt_daq.io.apt import AptFile
from apt_daq.io.epos import EposFile
from apt_daq.io.pos import PosFile
from apt_daq.io.ranges import read_rrng
from apt_daq.io.store import RunReader

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="module")
def apav():
    mod = pytest.importorskip("apav")
    warnings.filterwarnings("ignore", module="apav")
    return mod


@pytest.fixture
def store(run: Path):
    """The run's hits and its ion stream's rows (calibrated m/n, range index, positions):
    what every export writes (the run's /derived masses are the online, uncalibrated ones)."""
    from apt_daq.pipeline.ions import open_stream

    with RunReader(run) as r:
        der = np.concatenate([c.derived for c in open_stream(r)])
        yield r.read("hits"), der


# apav 1.4's own POS/EPOS readers call ndarray.newbyteorder, which NumPy 2 removed, so POS and
# EPOS are checked with ifes-apt-tc-data-modeling; apav reads our APT and writes EPOS for us.


def test_our_epos_in_ifes(tmp_path: Path, run: Path, store):
    from ifes_apt_tc_data_modeling.epos.epos_reader import ReadEposFileFormat

    hits, der = store
    out = tmp_path / "run.epos"
    export_run(run, "epos", out)
    ifes = ReadEposFileFormat(str(out))
    assert ifes.number_of_events == len(hits)
    assert np.array_equal(ifes.get_mass_to_charge_state_ratio().magnitude.ravel(), der["mass"])
    assert np.array_equal(ifes.get_reconstructed_positions().magnitude[:, 2], der["z"])
    assert np.array_equal(ifes.get_raw_time_of_flight().magnitude.ravel(), hits["tof"])
    det = ifes.get_hit_positions().magnitude
    assert np.array_equal(det[:, 0], hits["det_x"]) and np.array_equal(det[:, 1], hits["det_y"])
    first = np.r_[True, hits["pulse"][1:] != hits["pulse"][:-1]]
    assert np.array_equal(ifes.get_ions_per_pulse().magnitude,
                          np.where(first, hits["multiplicity"], 0))
    assert np.array_equal(np.cumsum(ifes.get_number_of_pulses().magnitude.astype(np.uint64)),
                          hits["pulse"])
    # ifes reads EPOS V_dc as kV (the known ambiguity, docs/formats.md): our volts come back
    # as kV-converted-to-V, i.e. x1000, value for value
    np.testing.assert_allclose(ifes.get_standing_voltage().magnitude, hits["v_dc"] * 1000.0,
                               rtol=1e-6)


def test_our_pos_in_ifes(tmp_path: Path, run: Path, store):
    from ifes_apt_tc_data_modeling.pos.pos_reader import ReadPosFileFormat

    _, der = store
    out = tmp_path / "run.pos"
    export_run(run, "pos", out)
    ifes = ReadPosFileFormat(str(out))
    xyz = ifes.get_reconstructed_positions().magnitude
    assert len(xyz) == len(der)
    assert np.array_equal(xyz[:, 0], der["x"]) and np.array_equal(xyz[:, 1], der["y"])
    assert np.array_equal(ifes.get_mass_to_charge_state_ratio().magnitude.ravel(), der["mass"])


def test_our_apt_in_apav_and_ifes(tmp_path: Path, run: Path, store, apav):
    from ifes_apt_tc_data_modeling.apt.apt6_reader import ReadAptFileFormat

    hits, der = store
    out = tmp_path / "run.apt"
    export_run(run, "apt", out)
    ifes = ReadAptFileFormat(str(out))
    assert int(ifes.header_section["llIonCount"][0]) == len(hits)
    for section, values in (("Mass", der["mass"]), ("tof", hits["tof"]),
                            ("Voltage", hits["v_dc"]), ("XDet_mm", hits["det_x"]),
                            ("YDet_mm", hits["det_y"])):
        got = ifes.get_named_quantity(section).magnitude
        assert np.array_equal(np.asarray(got, np.float32), values), section
    pos = ifes.get_reconstructed_positions().magnitude
    assert np.array_equal(np.asarray(pos[:, 2], np.float32), der["z"])

    roi = apav.Roi.from_apt(str(out))
    assert roi.counts == len(hits)
    assert np.array_equal(roi.mass, der["mass"])
    assert np.array_equal(roi.misc["dc_voltage"], hits["v_dc"])
    first = np.r_[True, hits["pulse"][1:] != hits["pulse"][:-1]]
    assert np.array_equal(roi.misc["ipp"], np.where(first, hits["multiplicity"], 0))


def test_apav_written_epos_reads_back(tmp_path: Path, apav):
    rng = np.random.default_rng(3)
    n = 5000
    xyz = rng.normal(0, 10, (n, 3)).astype(np.float32)
    mass = rng.uniform(1, 100, n).astype(np.float32)
    ipp = np.ones(n, np.uint32)
    ipp[10:12] = [2, 0]
    psl = rng.integers(1, 50, n).astype(np.uint32)
    psl[11] = 0
    misc = {"tof": rng.uniform(200, 900, n).astype(np.float32),
            "dc_voltage": rng.uniform(4000, 6000, n).astype(np.float32),
            "pulse_voltage": np.zeros(n, np.float32),
            "det_x": rng.uniform(-30, 30, n).astype(np.float32),
            "det_y": rng.uniform(-30, 30, n).astype(np.float32), "psl": psl, "ipp": ipp}
    path = tmp_path / "apav.epos"
    apav.Roi(xyz, mass, misc).to_epos(str(path))
    ions = EposFile(path, voltage_unit="V").read()
    assert len(ions) == n
    assert np.array_equal(ions["mass"], mass) and np.array_equal(ions["z"], xyz[:, 2])
    assert np.array_equal(ions["det_y"], misc["det_y"])
    assert np.array_equal(ions["pulse"], np.cumsum(psl.astype(np.uint64)))
    assert ions["multiplicity"][10] == ions["multiplicity"][11] == 2


def test_real_ap_suite_apt_and_apav_files(apav_data: Path, apav):
    """Si.apt (AP Suite) and the POS/EPOS apav derived from it: same ions in all three."""
    apt = AptFile(apav_data / "Si.apt")
    assert apt.n == 945211
    assert {"tofc", "Detector Coordinates"} <= set(apt.sections)
    a = apt.read(0, 50_000)
    roi = apav.Roi.from_apt(str(apav_data / "Si.apt"))
    assert np.array_equal(a["mass"], roi.mass[:50_000])
    assert np.array_equal(a["det_x"], roi.misc["det_x"][:50_000])
    e = EposFile(apav_data / "Si.epos").read(0, 50_000)  # written by apav from the APT
    p = PosFile(apav_data / "Si.pos").read(0, 50_000)
    assert np.array_equal(e["mass"], a["mass"]) and np.array_equal(p["x"], a["x"])
    assert np.array_equal(e["multiplicity"], a["multiplicity"])
    b = apt.position_bounds
    assert b[0] == pytest.approx(float(roi.xyz[:, 0].min())) and b[5] == pytest.approx(
        float(roi.xyz[:, 2].max()))


@pytest.mark.slow
def test_real_dataset_composition_matches_apav(tmp_path: Path, apav_data: Path, apav):
    """Import Si.apt + Si.RRNG; the atom counts per element equal apav's own computation."""
    out = tmp_path / "si.h5"
    import_file(apav_data / "Si.apt", out, apav_data / "Si.RRNG")
    table = read_rrng(apav_data / "Si.RRNG")
    ours: dict[str, int] = {}
    with RunReader(out) as r:
        assert r.count("hits") == 945211
        assert r.meta["imported"]["format"] == "apt"
        for der in r.iter("derived", 200_000):
            counts = np.bincount(der["ion"][der["ion"] >= 0], minlength=len(table))
            for i, c in enumerate(counts):
                for el, k in table.composition[i].items():
                    ours[el] = ours.get(el, 0) + int(c) * k
    roi = apav.Roi.from_apt(str(apav_data / "Si.apt"))
    rc = apav.RangeCollection.from_rrng(str(apav_data / "Si.RRNG"))
    theirs: dict[str, int] = {}
    for rg in rc:
        inside = int(((roi.mass >= rg.lower) & (roi.mass < rg.upper)).sum())
        for el, k in rg.ion.comp_dict.items() if hasattr(rg.ion, "comp_dict") else \
                rg.ion._comp_dict.items():
            sym = getattr(el, "symbol", str(el))
            theirs[sym] = theirs.get(sym, 0) + inside * int(k)
    assert ours == theirs
    total = sum(ours.values())
    assert ours["Si"] / total > 0.5  # a silicon specimen

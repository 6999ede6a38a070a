"""Voltages imported through ifes-apt-tc-data-modeling are volts, as our own readers store them.

Was: ``apt-daq import voldata.epos --format ifes-epos`` (a real LEAP EPOS, V_dc in volts)
stored V_dc = 1.998e6-3.827e6 V, because ifes 0.5 labels an EPOS's voltages kV (the file
states no unit), while the summary said "V (converted at import)"; ``--voltage-unit`` was
ignored for ifes formats, and the implied flight path came out 10208 mm. Our EPOS reader
stores 1998-3827 V (it decides the unit from the data: the flight path TOF, m/n and V imply).

The files here are built with numpy from the physics (m/n = 2 e V t^2 / (u L_eff^2), a 100 mm
flight path), not with apt-daq's writers; apt-daq's TOF helper only checks them.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from apt_daq.cli import main
from apt_daq.io.store import RunReader

pytest.importorskip("ifes_apt_tc_data_modeling")

E_C, U_KG = 1.602176634e-19, 1.66053906660e-27
K_SI = 2.0 * E_C / U_KG  # m/n [Da] = K_SI V t^2 / L^2 (V in volts, t in s, L in m)
L_MM = 100.0
N = 4000
EPOS = np.dtype([(f, ">f4") for f in ("x", "y", "z", "m", "tof", "vdc", "vpulse", "detx",
                                       "dety")] + [("dpulse", ">i4"), ("ipp", ">i4")])


def make_epos(path: Path, unit: str = "V", n: int = N, seed: int = 7) -> Path:
    """An EPOS of ``n`` single hits, V_dc 2000-4000 V (+ a 10 % pulse) written in ``unit``;
    the TOF of each ion is the one its m/n has over a 100 mm flight path."""
    assert EPOS.itemsize == 44
    rng = np.random.default_rng(seed)
    rec = np.zeros(n, EPOS)
    v_dc = np.linspace(2000.0, 4000.0, n)
    v_pulse = 0.1 * v_dc
    m = rng.choice([1.008, 12.0, 14.003, 15.995, 27.977 / 2, 55.935 / 2, 40.078], n)
    detx, dety = rng.uniform(-20, 20, n), rng.uniform(-20, 20, n)
    l_eff_m = np.sqrt(L_MM**2 + detx**2 + dety**2) * 1e-3
    tof_ns = l_eff_m * np.sqrt(m / (K_SI * (v_dc + v_pulse))) * 1e9
    scale = 1e-3 if unit == "kV" else 1.0
    rec["x"], rec["y"], rec["z"] = rng.normal(0, 10, n), rng.normal(0, 10, n), np.arange(n) * 1e-3
    rec["m"], rec["tof"] = m, tof_ns
    rec["vdc"], rec["vpulse"] = v_dc * scale, v_pulse * scale
    rec["detx"], rec["dety"] = detx, dety
    rec["dpulse"], rec["ipp"] = rng.integers(1, 50, n), 1
    rec.tofile(path)
    return path


def import_run(src: Path, out: Path, *args: str) -> tuple[np.ndarray, dict]:
    assert main(["import", str(src), "-o", str(out), *args]) == 0
    with RunReader(out) as r:
        return r.read("hits"), dict(r.meta)


def test_the_synthetic_epos_is_physical(tmp_path: Path):
    """Checked with apt-daq's helper (not built with it): the file implies 100 mm in volts."""
    from apt_daq.tof import implied_flight_path_mm

    rec = np.fromfile(make_epos(tmp_path / "v.epos"), EPOS)
    v = rec["vdc"].astype(np.float64) + rec["vpulse"]
    assert implied_flight_path_mm(rec["m"], rec["tof"], v, rec["detx"],
                                  rec["dety"]) == pytest.approx(L_MM, rel=1e-4)
    assert rec["vdc"].min() == pytest.approx(2000) and rec["vdc"].max() == pytest.approx(4000)


@pytest.mark.parametrize("unit", ["V", "kV"])
def test_ifes_epos_stores_the_volts_our_reader_stores(tmp_path: Path, unit: str):
    """Was (unit V): v_dc 2e6-4e6 V through ifes-epos, 2000-4000 V through ours."""
    epos = make_epos(tmp_path / f"{unit}.epos", unit)
    own, own_meta = import_run(epos, tmp_path / "own.h5", "--format", "epos")
    ifes, ifes_meta = import_run(epos, tmp_path / "ifes.h5", "--format", "ifes-epos")
    assert len(own) == len(ifes) == N
    for q in ("v_dc", "v_pulse"):
        np.testing.assert_allclose(ifes[q], own[q], rtol=1e-3, err_msg=q)
    assert 1999.0 <= ifes["v_dc"].min() and ifes["v_dc"].max() <= 4001.0
    assert ifes_meta["imported"]["voltage"] == own_meta["imported"]["voltage"]
    assert ifes_meta["imported"]["voltage"] != "V (converted at import)"
    assert ifes_meta["imported"]["voltage"].startswith("kV" if unit == "kV" else "V")
    # the flight path the import derives (was 100 mm x sqrt(1000) = 3162 mm for ifes)
    for meta in (own_meta, ifes_meta):
        assert meta["instrument"]["flight_path_mm"] == pytest.approx(L_MM, rel=1e-3)


@pytest.mark.parametrize("given", ["V", "kV"])
def test_ifes_epos_honours_voltage_unit(tmp_path: Path, given: str):
    """``--voltage-unit`` says the unit of the file's numbers, for ifes-epos as for ours.
    Was: ignored for the ifes formats (always x 1000)."""
    epos = make_epos(tmp_path / "v.epos", "V")
    args = ("--voltage-unit", given, "--flight-path-mm", "100")
    own, _ = import_run(epos, tmp_path / "own.h5", "--format", "epos", *args)
    ifes, ifes_meta = import_run(epos, tmp_path / "ifes.h5", "--format", "ifes-epos", *args)
    np.testing.assert_allclose(ifes["v_dc"], own["v_dc"], rtol=1e-3)
    np.testing.assert_allclose(ifes["v_pulse"], own["v_pulse"], rtol=1e-3)
    k = 1000.0 if given == "kV" else 1.0
    file_v = np.fromfile(epos, EPOS)["vdc"].astype(np.float64)
    np.testing.assert_allclose(ifes["v_dc"], file_v * k, rtol=1e-6)
    assert ifes_meta["imported"]["voltage"] == f"{given} (given)"


@pytest.mark.parametrize("given", ["auto", "V", "kV"])
def test_ifes_reader_takes_voltage_unit(tmp_path: Path, given: str):
    """The reader itself (what the import opens): the same ions as our EPOS reader."""
    from apt_daq.io.epos import EposFile
    from apt_daq.io.ifes import IfesFile

    epos = make_epos(tmp_path / "v.epos", "V")
    ours, theirs = EposFile(epos, voltage_unit=given), IfesFile(epos, "ifes-epos", given)
    assert theirs.voltage_scale == ours.voltage_scale
    assert theirs.voltage_note == ours.voltage_note
    a, b = ours.read(), theirs.read()
    for q in ("tof", "mass", "det_x", "det_y"):
        assert np.array_equal(a[q], b[q]), q
    # ifes scales the file's float32 by 1000 in float32; undone, within one float32 step
    for q in ("v_dc", "v_pulse"):
        np.testing.assert_allclose(b[q], a[q], rtol=2**-23, err_msg=q)
    with pytest.raises(ValueError, match="voltage_unit"):
        IfesFile(epos, "ifes-epos", "mV")


def apt_with_voltage_unit(tmp_path: Path, unit: str) -> Path:
    """An APT (our writer) of the synthetic ions, its Voltage and Pulse Voltage numbers in
    ``unit`` ("" = the kV numbers with no unit stated) and that unit in their section headers
    (wcDataUnit, UTF-16 at +100 of the 148-byte header)."""
    from apt_daq.io.apt import write_apt
    from apt_daq.io.epos import EposFile

    ions = EposFile(make_epos(tmp_path / "v.epos", "V"), voltage_unit="V").read()
    if unit != "V":
        ions["v_dc"] /= 1000.0
        ions["v_pulse"] /= 1000.0
    apt = tmp_path / f"u{unit or 'none'}.apt"
    write_apt(apt, len(ions), [ions])
    b = bytearray(apt.read_bytes())
    off = struct.unpack_from("<i", b, 4)[0]
    while off < len(b):
        hsize = struct.unpack_from("<i", b, off + 4)[0]
        name = b[off + 12 : off + 76].decode("utf-16-le").split("\0")[0]
        if name in ("Voltage", "Pulse Voltage"):
            b[off + 100 : off + 132] = unit.encode("utf-16-le").ljust(32, b"\0")
        off += hsize + struct.unpack_from("<Q", b, off + 140)[0]
    apt.write_bytes(bytes(b))
    return apt


@pytest.mark.parametrize("unit", ["V", "kV", ""])
def test_ifes_apt_voltages_are_our_apt_readers(tmp_path: Path, unit: str):
    """An APT's Voltage in V or kV (its sections say so) or without a unit: ifes 0.5 calls it
    V whatever the section says (its section template's unit), so the unit is decided from the
    data, as our APT reader does. Was (kV, none): v_dc 2-4 V."""
    apt = apt_with_voltage_unit(tmp_path, unit)
    own, own_meta = import_run(apt, tmp_path / "own.h5", "--format", "apt")
    ifes, meta = import_run(apt, tmp_path / "ifes.h5", "--format", "ifes-apt")
    for q in ("v_dc", "v_pulse"):
        np.testing.assert_array_equal(ifes[q], own[q], err_msg=q)
    assert 1999.0 <= ifes["v_dc"].min() and ifes["v_dc"].max() <= 4001.0
    assert meta["imported"]["voltage"] == own_meta["imported"]["voltage"]
    assert meta["imported"]["voltage"].startswith("V" if unit == "V" else "kV")


def test_ifes_apt_honours_voltage_unit(tmp_path: Path):
    """Given, the unit is that of the file's numbers, whatever the section says."""
    apt = apt_with_voltage_unit(tmp_path, "kV")
    hits, meta = import_run(apt, tmp_path / "ifes.h5", "--format", "ifes-apt",
                            "--voltage-unit", "V", "--flight-path-mm", "100")
    assert meta["imported"]["voltage"] == "V (given)"
    assert 1.999 <= hits["v_dc"].min() and hits["v_dc"].max() <= 4.001


REAL = Path("/tmp/realdata/pyccapt-0.0.35/tests/data/data_leap_test/voldata.epos")


@pytest.mark.skipif(not REAL.is_file(), reason="pyccapt's LEAP voldata.epos is not on this "
                    "machine (the synthetic EPOS tests above cover the same path)")
def test_real_leap_epos_both_ways(tmp_path: Path):
    """Was: ifes-epos v_dc 1.998e6-3.827e6 V and a 10208 mm flight path; ours 1998-3827 V."""
    own, own_meta = import_run(REAL, tmp_path / "own.h5", "--format", "epos")
    ifes, ifes_meta = import_run(REAL, tmp_path / "ifes.h5", "--format", "ifes-epos")
    assert np.array_equal(ifes["v_dc"], own["v_dc"])
    assert 1990 < ifes["v_dc"].min() and ifes["v_dc"].max() < 3900
    assert (ifes_meta["instrument"]["flight_path_mm"]
            == pytest.approx(own_meta["instrument"]["flight_path_mm"]))

"""POS, EPOS and APT: lossless round trips, the numba kernels against numpy twins, bad files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_daq.errors import DataFileError
from apt_daq.io._common import ION_DTYPE, fill_multiplicity, multiplicity_first_only
from apt_daq.io.apt import AptFile, write_apt
from apt_daq.io.epos import (
    EPOS_DTYPE,
    EposFile,
    EposWriter,
    detect_voltage_scale,
    epos_to_ion_words,
    ion_words_to_epos,
    write_epos,
)
from apt_daq.io.pos import POS_DTYPE, PosFile, write_pos

FLOATS = ("x", "y", "z", "mass", "tof", "v_dc", "v_pulse", "det_x", "det_y")


def ions_from(pulse: np.ndarray, seed: int = 0) -> np.ndarray:
    """Physically consistent ions (V in volts, L = 100 mm) with the given pulse numbers."""
    rng = np.random.default_rng(seed)
    n = len(pulse)
    a = np.zeros(n, ION_DTYPE)
    a["mass"] = rng.uniform(5, 120, n)
    a["v_dc"] = rng.uniform(3000, 8000, n)
    a["det_x"], a["det_y"] = rng.uniform(-35, 35, (2, n))
    a["tof"] = 0.1 * np.sqrt(a["mass"] / (1.9297e-10 * a["v_dc"]))
    a["x"], a["y"], a["z"] = rng.normal(0, 20, (3, n))
    a["pulse"] = pulse
    first = np.r_[True, pulse[1:] != pulse[:-1]] if n else np.zeros(0, bool)
    gid = np.cumsum(first) - 1
    a["multiplicity"] = np.bincount(gid)[gid] if n else 0
    return a


def pulses(n: int, seed: int = 1, p_multi: float = 0.2, start: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gaps = rng.integers(1, 400, n)
    gaps[rng.random(n) < p_multi] = 0
    gaps[0] = start
    return np.cumsum(gaps).astype(np.uint64)


def chunks(a: np.ndarray, k: int):
    return [a[i : i + k] for i in range(0, len(a), k)]


# ---------------------------------------------------------------------------- numpy twins


def epos_numpy(ions: np.ndarray) -> np.ndarray:
    """The published EPOS layout written with plain numpy (the writer kernel's twin)."""
    rec = np.zeros(len(ions), EPOS_DTYPE)
    for f in FLOATS:
        rec[f] = np.nan_to_num(ions[f], nan=0.0)
    p = ions["pulse"].astype(np.int64)
    rec["psl"] = np.diff(p, prepend=0)
    rec["ipp"] = multiplicity_first_only(ions["pulse"])
    return rec


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=300), st.integers(1, 97))
def test_epos_kernels_match_numpy(gaps, k):
    p = np.cumsum(np.array(gaps, np.uint64))
    ions = ions_from(p)
    n = len(ions)
    # writer kernel (whole pulse groups) vs numpy
    out = np.empty((n, 11), "<u4")
    ion_words_to_epos(ions.view("<u4").reshape(n, 12), n, 0, out)
    assert out.tobytes() == epos_numpy(ions).tobytes()
    # reader kernel, in chunks of k (multi-hits cut by chunk edges), vs the original
    words = out.reshape(-1)
    got = np.empty(n, ION_DTYPE)
    pulse0, last = 0, 0
    for i in range(0, n, k):
        m = min(k, n - i)
        pulse0, last = epos_to_ion_words(words[i * 11 : (i + m) * 11], m, pulse0, last, i == 0,
                                         got[i : i + m].view("<u4").reshape(m, 12))
    expect = ions.copy()
    for f in FLOATS:
        expect[f] = np.nan_to_num(expect[f], nan=0.0)
    assert got.tobytes() == expect.tobytes()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=400), st.integers(1, 60),
       st.integers(1, 9))
def test_epos_writer_buffer_matches_numpy(gaps, k, buffer_ions):
    """Chunks of k gathered into a buffer of a few records, cut at pulse-group boundaries, a
    group longer than the buffer: the published layout's bytes."""
    import io

    gaps = np.array(gaps, np.uint64)
    gaps[gaps > 20] = 0  # long multi-hits, longer than a buffer
    ions = ions_from(np.cumsum(gaps) + 1)
    fh = io.BytesIO()
    w = EposWriter(fh, buffer_ions=buffer_ions)
    for c in chunks(ions, k):
        w.write(c)
    w.close()
    assert w.n == len(ions)
    assert fh.getvalue() == epos_numpy(ions).tobytes()


@given(st.lists(st.integers(0, 3), min_size=1, max_size=200))
def test_multiplicity_conversions_invert(gaps):
    p = np.cumsum(np.array(gaps, np.uint64)) + 1
    first_only = multiplicity_first_only(p)
    filled = fill_multiplicity(first_only)
    first = np.r_[True, p[1:] != p[:-1]]
    gid = np.cumsum(first) - 1
    assert np.array_equal(filled, np.bincount(gid)[gid])
    assert first_only.sum() == len(p)


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("k", [1, 7, 1000, 5000])
def test_epos_round_trip_lossless(tmp_path: Path, k: int):
    ions = ions_from(pulses(3001))
    path = tmp_path / "a.epos"
    assert write_epos(path, chunks(ions, k)) == len(ions)
    assert path.stat().st_size == 44 * len(ions)
    f = EposFile(path)
    assert f.voltage_scale == 1.0
    back = np.concatenate(list(f.iter(chunk=max(1, k // 2 + 1))))
    assert back.tobytes() == ions.tobytes()
    raw = np.fromfile(path, EPOS_DTYPE)  # the published layout, read independently
    assert np.array_equal(raw["ipp"], multiplicity_first_only(ions["pulse"]))
    assert np.array_equal(np.cumsum(raw["psl"].astype(np.uint64)), ions["pulse"])
    assert np.array_equal(raw["mass"], ions["mass"])


def test_pos_round_trip_lossless(tmp_path: Path):
    ions = ions_from(pulses(2000))
    path = tmp_path / "a.pos"
    write_pos(path, chunks(ions, 333))
    raw = np.fromfile(path, POS_DTYPE)
    for f in ("x", "y", "z", "mass"):
        assert np.array_equal(raw[f], ions[f])
    back = np.concatenate(list(PosFile(path).iter(100)))
    for f in ("x", "y", "z", "mass"):
        assert np.array_equal(back[f], ions[f])
    assert np.isnan(back["tof"]).all()


@pytest.mark.parametrize("k", [1, 13, 4000])
def test_apt_round_trip_lossless(tmp_path: Path, k: int):
    ions = ions_from(pulses(2500, p_multi=0.3))
    path = tmp_path / "a.apt"
    write_apt(path, len(ions), chunks(ions, k))
    f = AptFile(path)
    assert f.n == len(ions) and not f.skipped
    back = np.concatenate(list(f.iter(chunk=max(1, k // 3 + 1))))
    assert back.tobytes() == ions.tobytes()
    b = f.position_bounds
    assert b[0] == ions["x"].min() and b[5] == ions["z"].max()


def test_apt_pulse_exact_beyond_float32_and_gaps_beyond_int16(tmp_path: Path):
    p = pulses(500) + np.uint64(2**31)
    p[200:] += np.uint64(100_000)  # one gap that saturates pulseDelta
    ions = ions_from(p)
    path = tmp_path / "big.apt"
    write_apt(path, len(ions), [ions])
    back = AptFile(path).read()
    # gaps come exactly from pulseDelta; where it saturates (the first ion's 2^31, the 100000
    # gap) the float32 pulse section decides, good to its resolution (256 at 2^31)
    err = back["pulse"].astype(np.int64) - p.astype(np.int64)
    assert np.all(np.abs(err) <= 256)
    assert np.all(err[:200] == err[0]) and np.all(err[200:] == err[200])


def test_epos_kilovolt_file_is_detected_and_converted(tmp_path: Path, caplog):
    ions = ions_from(pulses(1000))
    kv = ions.copy()
    kv["v_dc"] /= 1000.0
    path = tmp_path / "kv.epos"
    write_epos(path, [kv])
    with caplog.at_level(logging.WARNING, logger="apt_daq.io"):
        f = EposFile(path)
    assert f.voltage_scale == 1000.0
    assert "kV" in caplog.text
    np.testing.assert_allclose(f.read()["v_dc"], ions["v_dc"], rtol=1e-6)
    assert EposFile(path, voltage_unit="V").voltage_scale == 1.0


def test_voltage_heuristic_without_tof_uses_magnitude():
    m = np.full(100, 28.0)
    t = np.zeros(100)
    assert detect_voltage_scale(m, t, np.full(100, 5.5))[0] == 1000.0
    assert detect_voltage_scale(m, t, np.full(100, 5500.0))[0] == 1.0
    assert detect_voltage_scale(m, t, np.zeros(100))[0] == 1.0


# ---------------------------------------------------------------------------- bad files


def test_truncated_epos_names_file_and_ion(tmp_path: Path):
    path = tmp_path / "t.epos"
    write_epos(path, [ions_from(pulses(10))])
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataFileError, match=r"t\.epos.*not a multiple of the 44-byte.*ion 9.*396"):
        EposFile(path)


def test_truncated_pos(tmp_path: Path):
    path = tmp_path / "t.pos"
    path.write_bytes(b"\0" * 33)
    with pytest.raises(DataFileError, match=r"t\.pos.*16-byte.*ion 2"):
        PosFile(path)


def test_apt_wrong_magic(tmp_path: Path):
    path = tmp_path / "x.apt"
    path.write_bytes(b"NOPE" + b"\0" * 600)
    with pytest.raises(DataFileError, match=r"x\.apt: byte offset 0.*not an AP Suite APT"):
        AptFile(path)


def _apt_file(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "s.apt"
    write_apt(path, 100, [ions_from(pulses(100))])
    return path, path.read_bytes()


def test_apt_unknown_section_type(tmp_path: Path):
    path, data = _apt_file(tmp_path)
    b = bytearray(data)
    off = 540 + 4 + 4 + 4 + 64 + 4 + 4 + 4  # first section's eRecordDataType
    b[off : off + 4] = (9).to_bytes(4, "little")
    path.write_bytes(bytes(b))
    with pytest.raises(DataFileError, match=r"byte offset 540: section 'Position': unknown record data type 9"):
        AptFile(path)


def test_apt_truncated_section(tmp_path: Path):
    path, data = _apt_file(tmp_path)
    path.write_bytes(data[:-10])
    with pytest.raises(DataFileError, match=r"section 'pulseDelta' declares 200 data bytes but the file ends after 190 \(truncated at record 95\)"):
        AptFile(path)


def test_apt_bad_section_signature(tmp_path: Path):
    path, data = _apt_file(tmp_path)
    path.write_bytes(data + b"JUNK" + b"\0" * 200)
    with pytest.raises(DataFileError, match=r"byte offset \d+: section signature b'JUNK'"):
        AptFile(path)


def test_unknown_but_wellformed_section_is_skipped(tmp_path: Path):
    """A real AP Suite file carries sections we do not use (tofc, freq, ...): listed, not fatal."""
    from apt_daq.io.apt import SECTION_HEADER, SectionSpec, _section_header

    path, data = _apt_file(tmp_path)
    h = _section_header(SectionSpec("freq", 3, 32, 1, "Hz"), 100)
    path.write_bytes(data + h.tobytes() + np.zeros(100, "<f4").tobytes())
    assert SECTION_HEADER.itemsize == 148
    f = AptFile(path)
    assert "freq" in f.sections and f.read().shape == (100,)


def test_apt_header_size_beyond_the_file_is_named(tmp_path: Path, apav_data: Path, capsys,
                                                  monkeypatch):
    """AP Suite's Si.apt with iHeaderSize (int32 at byte 4) set to 1e9: the header claims more
    bytes than the file has. Was: 'no Mass section (sections: none)' (the section walk started
    past the end and found nothing); now one line naming the header size and the file size."""
    import struct

    from rich.console import Console

    from apt_daq import cli

    monkeypatch.setattr(cli, "err_console", Console(stderr=True, width=100_000))
    data = bytearray((apav_data / "Si.apt").read_bytes())
    assert data[:4] == b"APT\0" and struct.unpack_from("<i", data, 4)[0] == 540
    struct.pack_into("<i", data, 4, 1_000_000_000)
    bad = tmp_path / "hugehdr.apt"
    bad.write_bytes(bytes(data))
    out = tmp_path / "x.h5"
    assert cli.main(["import", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "hugehdr.apt" in lines[0] and "1000000000" in lines[0]
    assert "larger than the file" in lines[0] and str(len(data)) in lines[0]
    assert "Mass" not in lines[0]
    assert not out.exists()

"""Pulse numbers and multiplicities a file does not record stay unrecorded, on apav's real LEAP
Si dataset (945,211 ions: Si.pos, Si.epos with psl = 0 on every ion, Si.apt from AP Suite).

Judged against the original files themselves: their raw bytes (the 44-byte big-endian EPOS
records with numpy) and an APT section walker written here from the format's header layout,
independent of :mod:`apt_daq.io.apt`.

- POS has no pulse numbers and no multiplicities: each ion is its own event, the run says
  neither was in the file, analyze counts no multi-hits, EPOS gets psl 0 / ipp 1, APT no
  pulse, pulseDelta or Multiplicity section, and both import again cleanly.
- Si.epos has ipp (multiplicities) but psl = 0 throughout: EPOS -> run -> EPOS is the file
  byte for byte, and no pulse count (detection rate) is made up.
- APT exports carry only the sections of fields the run has; each equals the original's.
- APT import names every section it did not read (Si.apt's tofc).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from apt_daq.analysis.report import analyze
from apt_daq.cli import main
from apt_daq.commands.export import export_run
from apt_daq.commands.import_ import import_file
from apt_daq.commands.info import summarize
from apt_daq.io.store import RunReader

SI_IONS = 945211
PULSE_SECTIONS = {"pulse", "pulseDelta", "Multiplicity"}
ABSENT_IN_SI = {"tof", "Voltage", "Pulse Voltage"}


def epos_records(path: Path) -> np.ndarray:
    """(n, 11) big-endian words of an EPOS file, straight from its bytes."""
    return np.fromfile(path, dtype=">u4").reshape(-1, 11)


def apt_sections(path: Path) -> dict[str, bytes]:
    """Section name -> data bytes of an APT v2 file (540-byte file header, then 148-byte
    section headers: name UTF-16 at +12, header size at +4, byte count at +140)."""
    b = Path(path).read_bytes()
    assert b[:4] == b"APT\0"
    off = struct.unpack_from("<i", b, 4)[0]
    out = {}
    while off < len(b):
        assert b[off : off + 4] == b"SEC\0", off
        hsize = struct.unpack_from("<i", b, off + 4)[0]
        name = b[off + 12 : off + 76].decode("utf-16-le").split("\0")[0]
        nbytes = struct.unpack_from("<Q", b, off + 140)[0]
        out[name] = b[off + hsize : off + hsize + nbytes]
        off += hsize + nbytes
    return out


@pytest.fixture(scope="module")
def si_pos_run(tmp_path_factory, apav_data: Path) -> Path:
    out = tmp_path_factory.mktemp("si_pos") / "si_pos.h5"
    import_file(apav_data / "Si.pos", out)
    return out


@pytest.fixture(scope="module")
def si_epos_run(tmp_path_factory, apav_data: Path) -> Path:
    out = tmp_path_factory.mktemp("si_epos") / "si_epos.h5"
    import_file(apav_data / "Si.epos", out)
    return out


# ------------------------------------------------------------------ 1. POS: no pulse info
def test_pos_run_never_groups_ions_and_says_so(si_pos_run: Path):
    with RunReader(si_pos_run) as r:
        hits = r.read("hits")
        imp = r.meta["imported"]
    assert len(hits) == SI_IONS
    # each ion its own pulse (was: every ion on pulse 0)
    assert np.array_equal(hits["pulse"], np.arange(SI_IONS, dtype=np.uint64))
    assert np.all(hits["multiplicity"] == 1)
    assert not {"pulse", "multiplicity"} & set(imp["fields"])
    assert "not in the file" in imp["pulses"]


def test_pos_run_has_no_multihit_statistics(si_pos_run: Path, apav_data: Path):
    """Was: events 1, multi_event_fraction 1.0, events_by_multiplicity {"32": 1}."""
    s = analyze(si_pos_run, apav_data / "Si.RRNG", roi="none").summary
    assert s["multihit"]["available"] is False
    assert "neither pulse numbers nor multiplicities" in s["multihit"]["reason"]
    assert "events" not in s["multihit"] and "multi_event_fraction" not in s["multihit"]
    assert s["ions_total"] == SI_IONS


def test_pos_run_exports_unknown_pulses_and_imports_again(si_pos_run: Path, apav_data: Path,
                                                          tmp_path: Path):
    epos, apt = tmp_path / "x.epos", tmp_path / "x.apt"
    export_run(si_pos_run, "epos", epos)
    export_run(si_pos_run, "apt", apt)
    rec = epos_records(epos)
    assert len(rec) == SI_IONS
    assert np.all(rec[:, 9] == 0)  # psl: no pulse numbers (was 0, then 1 ... )
    assert np.all(rec[:, 10] == 1)  # ipp: one ion per event (was 945211 on ion 0, 0 after)
    pos = np.fromfile(apav_data / "Si.pos", ">u4").reshape(-1, 4)
    assert np.array_equal(rec[:, :4], pos)  # positions and m/n as the POS file has them
    sec = apt_sections(apt)
    assert set(sec) == {"Position", "Mass"}  # no pulse, Multiplicity, tof, V, XDet/YDet
    for src in (epos, apt):  # was: "ions-per-pulse 945211 is not a count" / multiplicity 255
        again = tmp_path / f"again_{src.suffix[1:]}.h5"
        assert main(["import", str(src), "-o", str(again)]) == 0
        with RunReader(again) as r:
            hits = r.read("hits")
            fields = set(r.meta["imported"]["fields"])
        assert fields == {"x", "y", "z", "mass"}
        assert np.array_equal(hits["pulse"], np.arange(SI_IONS, dtype=np.uint64))
        assert np.all(hits["multiplicity"] == 1)


def test_old_pos_run_with_every_ion_on_pulse_0_exports_single_events(tmp_path: Path):
    """A POS run imported before the fix (pulse 0 on every ion): the export does not make one
    event of it."""
    from apt_daq.hits import DERIVED_DTYPE, HIT_DTYPE
    from apt_daq.io.store import RunWriter

    n = 5000
    hits = np.zeros(n, HIT_DTYPE)
    hits["multiplicity"] = 1
    for f in ("tof", "det_x", "det_y", "v_dc", "v_pulse", "laser_pj"):
        hits[f] = np.nan
    der = np.zeros(n, DERIVED_DTYPE)
    der["mass"] = np.linspace(1, 100, n)
    der["x"] = der["y"] = der["z"] = 1.0
    der["ion"] = -1
    meta = {"imported": {"format": "pos", "file": "old.pos", "ions": n,
                         "fields": ["x", "y", "z", "mass"]},
            "simulated": False, "instrument": {"name": "imported from POS"}}
    run = tmp_path / "old.h5"
    with RunWriter(run, meta) as w:
        w.append(hits=hits, derived=der)
        w.finish("imported")
    export_run(run, "epos", tmp_path / "old.epos")
    rec = epos_records(tmp_path / "old.epos")
    assert np.all(rec[:, 9] == 0) and np.all(rec[:, 10] == 1)
    from apt_daq.analysis.multihit import multihit_unavailable

    with RunReader(run) as r:
        assert multihit_unavailable(r.meta)


# ------------------------------------------------------------------ 2. EPOS without psl
def test_si_epos_round_trip_is_byte_identical(si_epos_run: Path, apav_data: Path,
                                              tmp_path: Path):
    """Si.epos has psl = 0 on every ion; the export wrote psl = 1 on 924,844 of them."""
    out = tmp_path / "again.epos"
    assert main(["export", str(si_epos_run), "--format", "epos", "-o", str(out)]) == 0
    assert out.read_bytes() == (apav_data / "Si.epos").read_bytes()


def test_si_epos_pulse_numbers_are_not_the_files(si_epos_run: Path, apav_data: Path, capsys):
    rec = epos_records(apav_data / "Si.epos")
    assert not rec[:, 9].any()  # the premise: no pulse numbers in the file
    with RunReader(si_epos_run) as r:
        imp = r.meta["imported"]
        hits = r.read("hits")
    assert "pulse" not in imp["fields"] and "multiplicity" in imp["fields"]
    assert "one per multi-hit event" in imp["pulses"]
    # the events are the file's ipp groups: one pulse number each, their sizes the file's ipp
    ipp = rec[:, 10].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, hits["pulse"][1:] != hits["pulse"][:-1]])
    assert np.array_equal(starts, np.flatnonzero(ipp))
    assert np.array_equal(hits["multiplicity"][starts], ipp[starts])
    # no pulse count, hence no detection rate, from numbers the importer made up
    info = summarize(str(si_epos_run))
    assert info["pulses"] is None and info["pulse_numbers"]
    assert main(["info", str(si_epos_run)]) == 0
    assert "no detection rate" in capsys.readouterr().out
    # multi-hits are real (from ipp): analyze counts the file's events
    s = analyze(si_epos_run, apav_data / "Si.RRNG", roi="none").summary["multihit"]
    assert s["available"] is True
    assert s["events"] == int(np.count_nonzero(ipp)) == 924845
    assert s["events_by_multiplicity"]["2"] == int(np.count_nonzero(ipp == 2))


# ------------------------------------------------------------------ 3. APT sections
@pytest.mark.parametrize("source", ["Si.apt", "Si.epos"])
def test_apt_export_has_only_the_runs_sections_each_the_originals(source: str,
                                                                   apav_data: Path,
                                                                   tmp_path: Path):
    """Was: tof, Voltage, Pulse Voltage (all NaN), pulse and pulseDelta (made up) always:
    43.5 MB for a 37.8 MB original."""
    run, out = tmp_path / "run.h5", tmp_path / "out.apt"
    import_file(apav_data / source, run)
    export_run(run, "apt", out)
    orig, ours = apt_sections(apav_data / "Si.apt"), apt_sections(out)
    assert set(ours) == {"Position", "Mass", "XDet_mm", "YDet_mm", "Multiplicity"}
    assert not (ABSENT_IN_SI | {"pulse", "pulseDelta"}) & set(ours)
    for name in ours:  # every value as AP Suite wrote it
        assert ours[name] == orig[name], name
    assert out.stat().st_size < (apav_data / "Si.apt").stat().st_size
    again = tmp_path / "again.h5"
    import_file(out, again)
    with RunReader(again) as r:
        assert set(r.meta["imported"]["fields"]) == {"x", "y", "z", "mass", "det_x", "det_y",
                                                     "multiplicity"}


def test_acquired_run_still_exports_every_section(run: Path, tmp_path: Path):
    out = tmp_path / "run.apt"
    export_run(run, "apt", out)
    assert {"tof", "Voltage", "Pulse Voltage", "XDet_mm", "YDet_mm", "Multiplicity", "pulse",
            "pulseDelta"} <= set(apt_sections(out))


# ------------------------------------------------------------------ 4. APT sections skipped
def test_apt_import_names_every_section_it_skipped(apav_data: Path, tmp_path: Path, capsys):
    out = tmp_path / "si_apt.h5"
    assert main(["import", str(apav_data / "Si.apt"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "tofc" in text  # was: not a word
    with RunReader(out) as r:
        imp = r.meta["imported"]
    orig = set(apt_sections(apav_data / "Si.apt"))
    read = {"Mass", "Position", "XDet_mm", "YDet_mm", "Multiplicity"}
    assert set(imp["skipped_sections"]) == orig - read == {"tofc", "Detector Coordinates"}
    assert main(["info", "--json", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["pulse_numbers"]

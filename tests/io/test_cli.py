"""``apt-daq export`` / ``apt-daq import``: round trips through the CLI, exit code 2 on bad
files with nothing half-written, NXapm checked by the NeXus validator (pynxtools)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest

from apt_daq.cli import main
from apt_daq.io.ranges import read_rrng
from apt_daq.io.store import RunReader
from apt_daq.pipeline.ions import open_stream


def stream_derived(path: Path) -> np.ndarray:
    """The run's ion-stream rows (calibrated m/n, range index, x, y, z): what exports write."""
    with RunReader(path) as r:
        return np.concatenate([c.derived for c in open_stream(r)])


def test_export_import_round_trip_epos(tmp_path: Path, run: Path, rrng: Path):
    epos = tmp_path / "run.epos"
    assert main(["export", str(run), "--format", "epos", "-o", str(epos)]) == 0
    back = tmp_path / "back.h5"
    assert main(["import", str(epos), "--ranges", str(rrng), "-o", str(back)]) == 0
    d0 = stream_derived(run)  # the export writes the stream's masses, not /derived's
    with RunReader(run) as a, RunReader(back) as b:
        h0, h1 = a.read("hits"), b.read("hits")
        d1 = b.read("derived")
        for f in ("pulse", "tof", "det_x", "det_y", "v_dc", "v_pulse", "multiplicity"):
            assert np.array_equal(h0[f], h1[f]), f
        for f in ("mass", "x", "y", "z"):
            assert np.array_equal(d0[f], d1[f]), f
        assert np.isnan(h1["laser_pj"]).all()  # EPOS has no laser energy: unknown, not 0
        # ranged with the pipeline's ranging: every synthetic ion of a ranged species is ranged
        table = read_rrng(rrng)
        expect = np.full(len(d0), -1)
        for i in range(len(table)):
            expect[(d0["mass"] >= table.lo_da[i]) & (d0["mass"] < table.hi_da[i])] = i
        assert np.array_equal(d1["ion"], expect)
        assert (d1["ion"] >= 0).mean() > 0.6
        assert b.meta["simulated"] is False
        assert b.meta["imported"]["voltage"].startswith("V")
        # the flight path implied by TOF, V, detector position and m/n (t0 = 0, L_eff^2 =
        # L^2 + x^2 + y^2 as in the pipeline) is the synthetic run's 100 mm; what is left is
        # the voltage/bowl correction the export's masses carry (< 0.1 %)
        assert b.instrument.flight_path_mm == pytest.approx(100.0, rel=1e-3)
        assert b.meta["calibration"]["mode"] == "file"
        # and the imported run's stream gives back exactly the exported masses
        assert np.array_equal(stream_derived(back)["mass"], d0["mass"])
        assert [r[0] for r in b.meta["ion_table"]] == ["Li+", "O+", "Ni2+", "O2+", "Ni+", "Co+"]


@pytest.mark.parametrize("fmt", ["pos", "apt"])
def test_export_import_round_trip(tmp_path: Path, run: Path, fmt: str):
    out = tmp_path / f"run.{fmt}"
    assert main(["export", str(run), "--format", fmt, "-o", str(out)]) == 0
    back = tmp_path / "back.h5"
    assert main(["import", str(out), "-o", str(back)]) == 0
    d0 = stream_derived(run)
    with RunReader(run) as a, RunReader(back) as b:
        for f in ("mass", "x", "y", "z"):
            assert np.array_equal(d0[f], b.read("derived")[f])
        if fmt == "apt":
            for f in ("pulse", "tof", "v_dc", "det_x", "multiplicity"):
                assert np.array_equal(a.read("hits")[f], b.read("hits")[f]), f


def test_export_rrng_round_trips_ranges(tmp_path: Path, run: Path, rrng: Path):
    out = tmp_path / "out.rrng"
    assert main(["export", str(run), "--format", "rrng", "-o", str(out)]) == 0
    a, b = read_rrng(rrng), read_rrng(out)
    assert a.names == b.names
    assert np.allclose(a.lo_da, b.lo_da) and np.allclose(a.hi_da, b.hi_da)


def test_existing_output_needs_overwrite(tmp_path: Path, run: Path, capsys):
    out = tmp_path / "run.pos"
    out.write_bytes(b"keep")
    assert main(["export", str(run), "--format", "pos", "-o", str(out)]) == 2
    assert out.read_bytes() == b"keep"
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize("name, data, message", [
    ("bad.epos", b"\0" * 45, "not a multiple of the 44-byte EPOS record"),
    ("bad.pos", b"\0" * 17, "not a multiple of the 16-byte POS record"),
    ("bad.apt", b"XXXX" + b"\0" * 700, "not an AP Suite APT file"),
])
def test_bad_file_exits_2_and_writes_nothing(tmp_path: Path, capsys, name, data, message):
    src = tmp_path / name
    src.write_bytes(data)
    out = tmp_path / "never.h5"
    assert main(["import", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and name in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left behind


def test_overlapping_rrng_exits_2(tmp_path: Path, run: Path, capsys):
    epos = tmp_path / "run.epos"
    main(["export", str(run), "--format", "epos", "-o", str(epos)])
    bad = tmp_path / "bad.rrng"
    # two ions on overlapping ranges (one ion's overlapping ranges are merged instead)
    bad.write_text("[Ions]\nNumber=2\nIon1=O\nIon2=N\n[Ranges]\nNumber=2\n"
                   "Range1=15.9 16.2 Vol:0.01 O:1\nRange2=16.1 16.3 Vol:0.01 N:1\n")
    out = tmp_path / "x.h5"
    assert main(["import", str(epos), "--ranges", str(bad), "-o", str(out)]) == 2
    assert "bad.rrng" in capsys.readouterr().err
    assert not out.exists()


def test_failure_mid_export_leaves_no_file(tmp_path: Path, run: Path, monkeypatch):
    from apt_daq.pipeline.ions import IonStream

    real = IonStream.ion_records

    def broken(self):
        self.chunk = 5000
        gen = real(self)
        yield next(gen)
        raise OSError("disk full")

    monkeypatch.setattr(IonStream, "ion_records", broken)
    out = tmp_path / "run.epos"
    with pytest.raises(OSError):
        from apt_daq.commands.export import export_run

        export_run(run, "epos", out)
    assert list(tmp_path.iterdir()) == [run] or not out.exists()
    assert not any(p.name.endswith(".part") for p in tmp_path.iterdir())


# ---------------------------------------------------------------------------- NeXus NXapm


def _validate(path: Path, caplog) -> list[str]:
    from pynxtools.dataconverter.validation import validate_hdf_group_against

    caplog.clear()
    with caplog.at_level(logging.WARNING), h5py.File(path, "r") as f:
        validate_hdf_group_against("NXapm", f["entry1"], str(path), False)
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            and "is NOT valid" not in r.getMessage()]


@pytest.mark.parametrize("simulated", [True, False])
def test_nexus_nxapm_validates(tmp_path: Path, rrng: Path, caplog, simulated: bool):
    pytest.importorskip("pynxtools")
    from synthetic_runs import make_run

    run = make_run(tmp_path / "r.h5", n=6000, simulated=simulated, with_ranges=rrng)
    out = tmp_path / "run.nxs"
    assert main(["export", str(run), "--format", "nexus", "-o", str(out)]) == 0
    problems = _validate(out, caplog)
    # pynxtools cannot see a field's @units when NXapm also declares it as an attribute of an
    # NXdata axis (it skips "units" among attributes): those, and only those, are reported
    # although the attribute is there
    with h5py.File(out, "r") as f:
        rest = []
        for p in problems:
            if "@units hasn't been supplied" in p:
                path = p.split("attribute ")[1].split("/@units")[0]
                assert "units" in f[path].attrs, path
            else:
                rest.append(p)
        assert rest == []
        e = f["entry1"]
        assert e["definition"][()] == b"NXapm"
        assert bool(e["specimen/is_simulation"][()]) is simulated
        ap = e["atom_probe1"]
        with RunReader(run) as r:
            hits = r.read("hits")
        der = stream_derived(run)  # the calibrated stream, not the online /derived
        assert np.array_equal(ap["mass_to_charge_conversion/mass_to_charge"][:], der["mass"])
        cal = json.loads(ap["voltage_and_bowl/config/calibration"][()])
        assert cal["mode"] == "tof" and cal["reference"]
        assert np.array_equal(ap["reconstruction/reconstructed_positions"][:, 2], der["z"])
        assert np.array_equal(ap["voltage_and_bowl/raw_tof"][:], hits["tof"])
        spec = ap["ranging/mass_to_charge_distribution/mass_spectrum/intensity"][:]
        assert spec.sum() == len(der)
        grid = ap["reconstruction/naive_discretization/data/intensity"][:]
        assert grid.sum() == len(der)
        types = ap["ranging/peak_identification/iontypes"][:]
        table = read_rrng(rrng)
        expect = np.zeros(len(der), np.uint8)
        for i in range(len(table)):
            inside = (der["mass"] >= table.lo_da[i]) & (der["mass"] < table.hi_da[i])
            expect[inside] = table.ion_index()[i] + 1
        assert np.array_equal(types, expect)
        ion1 = ap["ranging/peak_identification/ion1"]
        assert ion1["name"][()] == b"Li+" and ion1["nuclide_hash"][0] == 3 + 255 * 256


def test_unreconstructed_run_exports_pipeline_reconstruction(tmp_path: Path):
    """/derived x, y, z NaN (not yet reconstructed): POS gets the pipeline's reconstruction."""
    from synthetic_runs import synthetic_chunks

    from apt_daq.analysis.reconstruction import Reconstructor
    from apt_daq.config import InstrumentConfig
    from apt_daq.io.pos import PosFile
    from apt_daq.io.store import RunWriter

    inst = InstrumentConfig(flight_path_mm=100.0)
    run = tmp_path / "raw.h5"
    with RunWriter(run, {"instrument": inst.model_dump(mode="json"), "simulated": True}) as w:
        for hits, der, _ in synthetic_chunks(9000, chunk=2500):
            der = der.copy()
            der["x"] = der["y"] = der["z"] = np.nan
            w.append(hits=hits, derived=der)
    out = tmp_path / "raw.pos"
    assert main(["export", str(run), "--format", "pos", "-o", str(out)]) == 0
    got = PosFile(out).read()
    with RunReader(run) as r:
        x, _y, z = Reconstructor(inst).process(r.read("hits"))
    assert np.array_equal(got["x"], x) and np.array_equal(got["z"], z)
    assert np.isfinite(got["x"]).all() and np.ptp(got["x"]) > 1.0  # a real projection, not 0

"""`apt-daq calibrate` checks its result against what it did not fit (audit of Dec 6):

- an isotope window whose counts the ion's own isotope pattern cannot hold is another ion's
  peak: an oxide's 64Ni2+ window at 31.96 Da held 35 638 ions (O2+; 64Ni is 0.9 % of Ni) and
  was listed as 64Ni2+, +800 ppm. Judged by the simulator's truth: the ions there are O2+;
- a calibration that puts the peaks further from their masses than the imported file's own m/n
  does is not stored (a reflectron LEAP's EPOS was "calibrated" to +-1500 ppm from the file's
  ~60 ppm, and every later analysis used it). The instrument here is the plain-numpy straight
  flight of test_calibrate_unknown_instrument.py with a mass-dependent stretch of the flight
  time that no straight flight with voltage and bowl terms can take up; the file's own m/n
  is the truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from .test_calibrate_unknown_instrument import _run_cli, synthesise, write_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def oxide(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("oxide") / "nmc.h5"
    rc, err = _run_cli("run", str(ROOT / "configs/runs/nmc811-cr-5pj.yaml"), "-o", str(out),
                       "--ions", "100000", "--quiet")
    assert rc == 0, err
    return out


def test_a_foreign_peak_in_an_isotope_window_is_named_not_listed(oxide: Path, capsys) -> None:
    import h5py

    rc, err = _run_cli("calibrate", str(oxide), "--elements", "Li,Ni,Co,Mn,O", "--json",
                       "--no-store")
    assert rc == 0, err
    rep = json.loads(capsys.readouterr().out)
    assert "64Ni2+" not in [p["isotope"] for p in rep["peaks"]]
    assert any("64Ni2+" in n and "another ion's peak" in n
               for n in rep["calibration"]["notes"])
    # the truth: what sits in the 64Ni2+ window is O2+, not Ni
    with h5py.File(oxide) as f:
        truth = f["truth"][:]
        table = [row[0] for row in json.loads(f["meta"].attrs["ion_table"])]
    m = truth["mass"]
    there = truth["species"][(m > 31.9) & (m < 32.05)]
    names = [table[s] for s in there if s >= 0]
    assert len(names) > 1000 and sum(n == "O2+" for n in names) > 0.95 * len(names)


def _reflectron_like(tmp_path: Path) -> Path:
    """The straight-flight hits with a flight time stretched by 0.3 % per e-fold of m/n, and
    /derived holding the file's own (true) m/n."""
    from apt_daq.hits import DERIVED_DTYPE
    from apt_daq.io.store import RunWriter

    syn = synthesise(3, n=200_000, t0_ns=2.0, l_off=0.0)
    path = write_run(tmp_path / "refl.h5", syn)
    m = np.full(len(syn["tof"]), np.nan)
    m[syn["is_ion"]] = syn["m_true"]
    stretch = np.where(np.isfinite(m), 1.0 + 0.003 * np.log(np.nan_to_num(m, nan=30.0) / 30.0),
                       1.0)
    derived = np.zeros(len(m), DERIVED_DTYPE)
    derived["mass"], derived["range_index"] = m, -1
    derived["x"] = derived["y"] = derived["z"] = np.nan
    import h5py

    with h5py.File(path, "r") as f:
        hits = f["hits"][:]
        meta = {k: json.loads(v) if k in ("instrument", "imported") else v
                for k, v in f["meta"].attrs.items() if k in ("instrument", "imported")}
    hits["tof"] = 2.0 + (hits["tof"] - 2.0) * stretch
    meta["imported"]["fields"] = [*meta["imported"]["fields"], "mass"]
    with RunWriter(path, meta, overwrite=True) as w:
        w.append(hits=hits, derived=derived)
        w.finish("imported")
    return path


def test_a_fit_worse_than_the_files_own_mn_is_not_stored(tmp_path: Path, capsys) -> None:
    path = _reflectron_like(tmp_path)
    before = path.read_bytes()
    rc, err = _run_cli("calibrate", str(path), "--elements", "W,Mo,Ni")
    assert rc == 2 and "NOT stored" in err and "file's own m/n" in err, err
    assert len(err.strip().splitlines()) == 1
    assert path.read_bytes() == before  # the file keeps its own m/n
    rc, err = _run_cli("calibrate", str(path), "--elements", "W,Mo,Ni", "--json",
                       "--no-store")
    assert rc == 0, err
    notes = json.loads(capsys.readouterr().out)["calibration"]["notes"]
    assert any("worse than the file's own m/n" in n for n in notes)

"""Files peers read: every run-file dataset says the unit of each field, and exports are
created with the user's umask (not mkstemp's 0600), as a plain ``open()`` would."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest

from apt_daq.io._common import ION_DTYPE, empty_ions
from apt_daq.io.epos import write_epos
from apt_daq.io.pos import write_pos
from apt_daq.io.store import DATASETS, RunWriter

# what a reader must find, typed here from the formats doc (not from the code's table)
EXPECTED = {("raw", "t_mcp"): "TDC_bin", ("raw", "v_dc"): "V", ("hits", "tof"): "ns",
            ("hits", "det_x"): "mm", ("hits", "laser_pj"): "pJ", ("derived", "mass"): "Da",
            ("derived", "z"): "nm", ("truth", "x0"): "nm", ("log", "time_s"): "s",
            ("log", "current_a"): "A", ("log", "v_setpoint"): "V"}


def test_every_dataset_carries_its_units(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "u.h5", {}) as w:
        w.finish("done")
    with h5py.File(tmp_path / "u.h5", "r") as f:
        for name, dtype in DATASETS.items():
            d = f[name]
            fields = [x.decode() if isinstance(x, bytes) else str(x) for x in d.attrs["fields"]]
            units = [x.decode() if isinstance(x, bytes) else str(x) for x in d.attrs["units"]]
            assert fields == list(dtype.names)
            by_field = dict(zip(fields, units, strict=True))
            for field in dtype.names:  # every float is a physical quantity with a unit
                if dtype[field].kind == "f":
                    assert by_field[field], f"/{name}.{field} has no unit"
            for (ds, field), unit in EXPECTED.items():
                if ds == name:
                    assert by_field[field] == unit, (ds, field, by_field[field])


@pytest.mark.parametrize("writer", [write_pos, write_epos], ids=["pos", "epos"])
def test_exports_follow_the_umask(tmp_path: Path, writer) -> None:
    ions = empty_ions(10)
    ions["mass"] = np.arange(10)
    for f in ("x", "y", "z", "tof", "v_dc", "v_pulse", "det_x", "det_y"):
        ions[f] = 1.0
    old = os.umask(0o022)
    try:
        writer(tmp_path / "a.out", [ions.astype(ION_DTYPE)])
        assert stat.S_IMODE((tmp_path / "a.out").stat().st_mode) == 0o644
        os.umask(0o077)
        writer(tmp_path / "b.out", [ions])
        assert stat.S_IMODE((tmp_path / "b.out").stat().st_mode) == 0o600
        os.chmod(tmp_path / "a.out", 0o664)  # an existing file keeps its mode when replaced
        writer(tmp_path / "a.out", [ions])
        assert stat.S_IMODE((tmp_path / "a.out").stat().st_mode) == 0o664
    finally:
        os.umask(old)


def test_meta_attributes_are_typed(tmp_path: Path) -> None:
    """A generic HDF5 reader sees /meta scalars as strings, numbers and booleans (not JSON
    text); mappings and lists are JSON text named in ``json_keys``; ours reads both back."""
    from apt_daq.io.store import RunReader

    with RunWriter(tmp_path / "m.h5", {"seed": 7, "simulated": True, "source": "a.yaml",
                                       "counters": {"ions": 3}, "rate": 0.005}) as w:
        w.finish("done")
    with h5py.File(tmp_path / "m.h5", "r") as f:
        a = f["meta"].attrs
        assert int(a["seed"]) == 7 and bool(a["simulated"]) is True
        assert a["source"] == "a.yaml" and float(a["rate"]) == 0.005
        assert str(a["started"]).startswith("20") and not str(a["started"]).startswith('"')
        state = a["state"]
        assert (state.decode() if isinstance(state, bytes) else state) == "done"
        keys = {k.decode() if isinstance(k, bytes) else k for k in a["json_keys"]}
        assert "counters" in keys and "seed" not in keys
    with RunReader(tmp_path / "m.h5") as r:
        assert r.meta["seed"] == 7 and r.meta["simulated"] is True
        assert r.meta["counters"] == {"ions": 3} and r.meta["state"] == "done"


def test_older_all_json_meta_still_reads(tmp_path: Path) -> None:
    from apt_daq.io.store import RunReader

    with h5py.File(tmp_path / "old.h5", "w") as f:
        g = f.create_group("meta")
        g.attrs["seed"] = "7"
        g.attrs["state"] = '"done"'
        g.attrs["counters"] = '{"ions": 3}'
    with RunReader(tmp_path / "old.h5") as r:
        assert r.meta == {"seed": 7, "state": "done", "counters": {"ions": 3}}

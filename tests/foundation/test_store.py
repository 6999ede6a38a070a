"""The run store: round trip, bounded-memory iteration, and survival of SIGKILL."""

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from apt_daq.errors import DataFileError
from apt_daq.hits import HIT_DTYPE, RAW_DTYPE
from apt_daq.io.store import RunReader, RunWriter


def test_round_trip_and_iteration(tmp_path):
    p = tmp_path / "r.h5"
    chunks = []
    with RunWriter(p, {"seed": 4, "config": None}) as w:
        for i in range(5):
            c = np.zeros(1000 + i, HIT_DTYPE)
            c["pulse"] = np.arange(len(c)) + 10_000 * i
            c["tof"] = np.float32(i)
            w.append(hits=c)
            chunks.append(c)
        w.finish("done")
    with RunReader(p) as r:
        assert r.meta["state"] == "done" and r.meta["seed"] == 4
        assert r.count("hits") == sum(map(len, chunks))
        got = np.concatenate(list(r.iter("hits", chunk=777)))
        np.testing.assert_array_equal(got, np.concatenate(chunks))
        assert not r.has("truth")


def test_refuses_to_overwrite(tmp_path):
    p = tmp_path / "r.h5"
    RunWriter(p).close()
    with pytest.raises(DataFileError, match="exists"):
        RunWriter(p)


def test_not_a_run_file(tmp_path):
    p = tmp_path / "x.h5"
    p.write_bytes(b"not hdf5")
    with pytest.raises(DataFileError, match="not a readable HDF5"):
        RunReader(p)


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from apt_daq.io.store import RunWriter
    from apt_daq.hits import RAW_DTYPE
    w = RunWriter(sys.argv[1], overwrite=True)
    i = 0
    while True:
        c = np.zeros(20000, RAW_DTYPE)
        c["pulse"] = np.arange(i * 20000, (i + 1) * 20000)
        w.append(raw=c)
        w.set_meta("chunks_written", i + 1)
        if i == 0:  # one chunk flushed: the kill comes after it, however loaded the machine
            print("started", flush=True)
        i += 1
""")


@pytest.mark.parametrize("delay_s", [0.3, 0.7, 1.1])
def test_sigkill_mid_write_keeps_every_flushed_chunk(tmp_path, delay_s):
    p = tmp_path / "k.h5"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(p)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "started"
    time.sleep(delay_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with RunReader(p) as r:
        raw = r.read("raw")
        n_meta = r.meta.get("chunks_written", 0)
    assert raw.dtype == RAW_DTYPE
    assert len(raw) % 20000 == 0
    np.testing.assert_array_equal(raw["pulse"], np.arange(len(raw)))
    # the chunk being written when killed may be lost, no other
    assert len(raw) // 20000 >= n_meta >= len(raw) // 20000 - 1
    assert n_meta >= 1


def test_derived_range_index_reads_under_both_names_in_new_and_old_files(tmp_path):
    """/derived stores the range index as ``range_index``; files written before name it
    ``ion`` (same layout) and still open: both names read the same values from either."""
    import h5py

    from apt_daq.hits import DERIVED_DTYPE

    rows = np.zeros(5, DERIVED_DTYPE)
    rows["mass"] = [1.0, 16.0, 27.0, 58.0, 60.0]
    rows["range_index"] = [-1, 0, 2, 1, -1]
    new = tmp_path / "new.h5"
    with RunWriter(new, {"simulated": True}) as w:
        w.append(hits=np.zeros(5, HIT_DTYPE), derived=rows)
        w.finish("done")
    with h5py.File(new, "r") as f:
        assert f["derived"].dtype.names == ("mass", "range_index", "x", "y", "z")
    old = tmp_path / "old.h5"  # the same run as written before the rename
    with h5py.File(new, "r") as f, h5py.File(old, "w") as g:
        for key in f:
            f.copy(key, g)
        legacy = np.dtype([("mass", "<f4"), ("ion", "<i2"), ("x", "<f4"), ("y", "<f4"),
                           ("z", "<f4")])
        del g["derived"]
        g.create_dataset("derived", data=f["derived"][()].view(np.void).view(legacy))
        assert g["derived"].dtype.names[1] == "ion"
    for path in (new, old):
        with RunReader(path) as r:
            d = r.read("derived")
            assert d.dtype == DERIVED_DTYPE
            assert d["range_index"].tolist() == [-1, 0, 2, 1, -1]
            assert d["ion"].tolist() == [-1, 0, 2, 1, -1]
            assert d["mass"].tolist() == [1.0, 16.0, 27.0, 58.0, 60.0]

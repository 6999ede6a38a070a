"""``apt-daq import --format table`` (raw hit lists of other instruments) and the formats read
through ifes-apt-tc-data-modeling: units converted at the boundary, bad files one line and
exit 2, bounded memory, and a simulated run's hits that come back with the same composition."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from apt_daq import cli
from apt_daq.cli import main
from apt_daq.commands.import_ import import_file
from apt_daq.io.store import RunReader

ROOT = Path(__file__).resolve().parents[2]
N = 5000


@pytest.fixture
def truth() -> dict[str, np.ndarray]:
    """Hits in apt-daq units (float32 where the store is float32): TOF ns, V, mm, pulses with
    multi-hits (runs of equal pulse numbers)."""
    rng = np.random.default_rng(7)
    pulse = np.sort(rng.integers(0, 3 * N, N)).astype(np.uint64)
    return {
        "tof": rng.uniform(150.0, 900.0, N).astype(np.float32),
        "v_dc": rng.uniform(3000.0, 9000.0, N).astype(np.float32),
        "v_pulse": rng.uniform(0.0, 1500.0, N).astype(np.float32),
        "det_x": rng.uniform(-38.0, 38.0, N).astype(np.float32),
        "det_y": rng.uniform(-38.0, 38.0, N).astype(np.float32),
        "pulse": pulse,
    }


def group_sizes(pulse: np.ndarray) -> np.ndarray:
    _, inv, counts = np.unique(pulse, return_inverse=True, return_counts=True)
    return counts[inv]


def check_hits(out: Path, truth: dict[str, np.ndarray]) -> None:
    """The stored /hits equal the truth in apt-daq units within float32 rounding (one ulp:
    the file held s, kV, cm, the store ns, V, mm)."""
    with RunReader(out) as r:
        h = r.read("hits")
        assert r.meta["state"] == "imported"
        assert "calibration" not in r.meta  # no m/n: the stream computes it ("tof" mode)
        assert r.meta["imported"]["calibration"].startswith("tof")
    assert len(h) == N
    for f in ("tof", "v_dc", "v_pulse", "det_x", "det_y"):
        np.testing.assert_allclose(h[f], truth[f], rtol=2 * np.finfo(np.float32).eps, atol=0,
                                   err_msg=f)
    assert np.array_equal(h["pulse"], truth["pulse"])
    assert np.array_equal(h["multiplicity"], np.minimum(group_sizes(truth["pulse"]), 255))
    assert (h["multiplicity"] > 1).any()  # the truth has multi-hits
    assert np.isnan(h["laser_pj"]).all()


FIELDS = "tof=T:s,v_dc=VDC:kV,v_pulse=VP:kV,det_x=X:cm,det_y=Y:cm,pulse=PN"


def write_csv(path: Path, t: dict[str, np.ndarray], sep: str = ",") -> None:
    cols = [t["tof"].astype(np.float64) * 1e-9, t["v_dc"].astype(np.float64) / 1e3,
            t["v_pulse"].astype(np.float64) / 1e3, t["det_x"].astype(np.float64) / 10,
            t["det_y"].astype(np.float64) / 10]
    with open(path, "w") as fh:
        fh.write(sep.join(["T", "VDC", "VP", "X", "Y", "PN"]) + "\n")
        for i in range(len(t["tof"])):
            fh.write(sep.join([repr(float(c[i])) for c in cols] + [str(int(t["pulse"][i]))])
                     + "\n")


def test_csv_seconds_kilovolts_centimetres(tmp_path: Path, truth):
    src = tmp_path / "hits.csv"
    write_csv(src, truth)
    out = tmp_path / "run.h5"
    s = import_file(src, out, fields=FIELDS, flight_path_mm=110.0, t0_ns=12.5)
    check_hits(out, truth)
    assert s["ions"] == N and s["format"] == "table"
    with RunReader(out) as r:
        fm = r.meta["imported"]["field_map"]["fields"]
        assert fm["tof"] == {"column": "T", "unit": "s", "to": "ns"}
        assert fm["det_x"] == {"column": "X", "unit": "cm", "to": "mm"}
        assert r.instrument.flight_path_mm == 110.0 and r.instrument.t0_ns == 12.5


def test_tsv_through_a_yaml_map(tmp_path: Path, truth):
    src = tmp_path / "hits.tsv"
    write_csv(src, truth, sep="\t")
    fmap = tmp_path / "map.yaml"
    fmap.write_text(textwrap.dedent("""\
        fields:
          tof: {column: T, unit: s}
          v_dc: {column: VDC, unit: kV}
          v_pulse: "VP:kV"
          det_x: {column: X, unit: cm}
          det_y: {column: Y, unit: cm}
          pulse: {column: PN}
        """))
    out = tmp_path / "run.h5"
    assert main(["import", str(src), "--field-map", str(fmap), "-o", str(out),
                 "--flight-path-mm", "100"]) == 0
    check_hits(out, truth)


def test_npy_structured_and_by_index(tmp_path: Path, truth):
    rec = np.zeros(N, [("t_s", "<f8"), ("vdc_kv", "<f4"), ("vp_kv", "<f4"), ("x_cm", "<f8"),
                       ("y_cm", "<f8"), ("pn", "<u8")])
    rec["t_s"] = truth["tof"].astype(np.float64) * 1e-9
    rec["vdc_kv"] = truth["v_dc"] / np.float32(1e3)  # float32 kV: within float32 rounding
    rec["vp_kv"] = truth["v_pulse"] / np.float32(1e3)
    rec["x_cm"] = truth["det_x"].astype(np.float64) / 10
    rec["y_cm"] = truth["det_y"].astype(np.float64) / 10
    rec["pn"] = truth["pulse"]
    src = tmp_path / "hits.npy"
    np.save(src, rec)
    out = tmp_path / "a.h5"
    import_file(src, out, fields="tof=t_s:s,v_dc=vdc_kv:kV,v_pulse=vp_kv:kV,det_x=x_cm:cm,"
                "det_y=y_cm:cm,pulse=pn", flight_path_mm=100.0)
    check_hits(out, truth)
    # a 2-D float array, columns by index
    arr = np.stack([rec[n].astype(np.float64) for n in rec.dtype.names], axis=1)
    src2 = tmp_path / "plain.npy"
    np.save(src2, arr)
    out2 = tmp_path / "b.h5"
    import_file(src2, out2, fields="tof=0:s,v_dc=1:kV,v_pulse=2:kV,det_x=3:cm,det_y=4:cm,"
                "pulse=5", flight_path_mm=100.0, chunk=3)  # chunks cut multi-hits
    check_hits(out2, truth)


BIG_ENDIAN = np.dtype([("t", ">f8"), ("vdc", ">f4"), ("vp", ">f4"), ("x", ">f4"), ("y", ">f4"),
                       ("pn", ">u8")])
BINARY_MAP = """\
format: binary
header_bytes: 24
record:
  - {name: t, dtype: ">f8"}
  - {name: vdc, dtype: ">f4"}
  - {name: vp, dtype: ">f4"}
  - {name: x, dtype: ">f4"}
  - {name: y, dtype: ">f4"}
  - {name: pn, dtype: ">u8"}
fields:
  tof: {column: t, unit: s}
  v_dc: {column: vdc, unit: kV}
  v_pulse: {column: vp, unit: kV}
  det_x: {column: x, unit: cm}
  det_y: {column: y, unit: cm}
  pulse: {column: pn}
"""


def write_binary(path: Path, t: dict[str, np.ndarray]) -> None:
    rec = np.zeros(len(t["tof"]), BIG_ENDIAN)
    rec["t"] = t["tof"].astype(np.float64) * 1e-9
    rec["vdc"] = t["v_dc"] / np.float32(1e3)
    rec["vp"] = t["v_pulse"] / np.float32(1e3)
    rec["x"] = t["det_x"] / np.float32(10)
    rec["y"] = t["det_y"] / np.float32(10)
    rec["pn"] = t["pulse"]
    with open(path, "wb") as fh:
        fh.write(b"INSTRUMENT-X HEADER v1\0\0")  # 24 bytes to skip
        rec.tofile(fh)


def test_big_endian_binary_records(tmp_path: Path, truth):
    src = tmp_path / "hits.bin"
    write_binary(src, truth)
    fmap = tmp_path / "map.yaml"
    fmap.write_text(BINARY_MAP)
    out = tmp_path / "run.h5"
    import_file(src, out, field_map=fmap, flight_path_mm=100.0, chunk=1000)
    check_hits(out, truth)
    with RunReader(out) as r:
        assert r.meta["imported"]["field_map"]["record"][0] == ["t", ">f8"]
        assert r.meta["imported"]["field_map"]["header_bytes"] == 24


def test_mass_column_is_file_mode(tmp_path: Path, truth):
    """With an m/n column the file's m/n is authoritative ("file" mode, as pipeline/ions.py
    decides for an imported run with m/n)."""
    m = np.linspace(1.0, 100.0, N)
    src = tmp_path / "ions.csv"
    with open(src, "w") as fh:
        fh.write("mq,T\n")
        for i in range(N):
            fh.write(f"{float(m[i])!r},{float(truth['tof'][i])!r}\n")
    out = tmp_path / "run.h5"
    import_file(src, out, fields="mass=mq:Da,tof=T:ns")
    with RunReader(out) as r:
        assert r.meta["calibration"]["mode"] == "file"
        assert np.array_equal(r.read("derived")["mass"], m.astype(np.float32))
        assert np.array_equal(r.read("hits")["pulse"], np.arange(N))  # one pulse per hit


# ------------------------------------------------------------------------ bad input: one line
@pytest.fixture
def wide_errors(monkeypatch):
    """The CLI's error console without line wrapping, so 'one line' can be checked."""
    monkeypatch.setattr(cli, "err_console", Console(stderr=True, width=100_000))


def one_error_line(capsys, *expect: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for e in expect:
        assert e in lines[0], (e, lines[0])
    return lines[0]


def test_bad_inputs_exit_2_with_one_line(tmp_path: Path, truth, capsys, wide_errors):
    csv = tmp_path / "hits.csv"
    write_csv(csv, truth)
    out = tmp_path / "run.h5"

    def run(*args: str) -> int:
        return main(["import", *args, "-o", str(out)])

    # an unknown unit
    assert run(str(csv), "--fields", "tof=T:sec,v_dc=VDC:kV") == 2
    one_error_line(capsys, "unknown unit 'sec'", "s, ms, us")
    # tof and v_dc are required (or mass)
    assert run(str(csv), "--fields", "tof=T:s,det_x=X:cm") == 2
    one_error_line(capsys, "v_dc not mapped")
    # a column the file does not have
    assert run(str(csv), "--fields", "tof=T:s,v_dc=VOLTS:kV") == 2
    one_error_line(capsys, str(csv), "column 'VOLTS' (for v_dc) is not in the file", "'VDC'")
    # an unknown field
    assert run(str(csv), "--fields", "tof=T:s,v_dc=VDC:kV,laser=X") == 2
    one_error_line(capsys, "unknown apt-daq field 'laser'")
    # a non-finite value in a CSV: the row and line
    bad = tmp_path / "nan.csv"
    text = csv.read_text().splitlines()
    parts = text[4].split(",")
    parts[1] = "nan"
    text[4] = ",".join(parts)
    bad.write_text("\n".join(text) + "\n")
    assert run(str(bad), "--fields", FIELDS) == 2
    one_error_line(capsys, str(bad), "row 3 (line 5)", "v_dc (VDC)", "not a finite number")
    # a text cell in a number column
    text[6] = text[6].replace(text[6].split(",")[0], "abc", 1)
    bad.write_text("\n".join(text) + "\n")
    assert run(str(bad), "--fields", FIELDS) == 2
    one_error_line(capsys, str(bad), "abc")
    # a truncated binary file: the record and its byte offset
    fmap = tmp_path / "map.yaml"
    fmap.write_text(BINARY_MAP)
    binf = tmp_path / "hits.bin"
    write_binary(binf, truth)
    with open(binf, "r+b") as fh:
        fh.truncate(24 + 100 * 32 + 5)
    assert run(str(binf), "--field-map", str(fmap)) == 2
    one_error_line(capsys, str(binf), "inside record 100", "byte offset 3224")
    # a non-finite value in a binary file: the record and its offset
    write_binary(binf, truth)
    rec = np.memmap(binf, BIG_ENDIAN, "r+", offset=24, shape=(N,))
    rec["x"][1234] = np.inf
    rec.flush()
    del rec
    assert run(str(binf), "--field-map", str(fmap)) == 2
    one_error_line(capsys, "record 1234 (byte offset 39512)", "det_x (x)", "inf")
    # a record layout that is not numbers
    fmap.write_text(BINARY_MAP.replace('">f8"', '"U8"', 1))
    assert run(str(binf), "--field-map", str(fmap)) == 2
    one_error_line(capsys, "only scalar integers and floats")
    # a negative pulse number
    arr = np.zeros((10, 3))
    arr[:, 0], arr[:, 1], arr[:, 2] = 300.0, 5000.0, np.arange(10) - 3
    npy = tmp_path / "neg.npy"
    np.save(npy, arr)
    assert run(str(npy), "--fields", "tof=0,v_dc=1,pulse=2") == 2
    one_error_line(capsys, "row 0", "pulse (2) = -3.0 is not a count")
    assert not out.exists()  # nothing half-written
    assert not list(tmp_path.glob(".run.h5*"))


# ------------------------------------------------------------------------------- memory
MEMORY_SCRIPT = """
import resource, sys
from apt_daq.commands.import_ import import_file
small, big, fmap, tmp = sys.argv[1:5]
import_file(small, tmp + "/warm.h5", field_map=fmap, flight_path_mm=100.0, chunk=100_000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after imports, numba, h5py
import_file(big, tmp + "/big.h5", field_map=fmap, flight_path_mm=100.0, chunk=100_000)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024)
"""


def test_two_million_rows_in_bounded_memory(tmp_path: Path):
    """A 2 M-row binary file (64 MB) imports with a peak RSS growth of a few chunks, well under
    the file's size: the file is read through a memory map of one chunk at a time."""
    n = 2_000_000
    rng = np.random.default_rng(1)
    rec = np.zeros(n, BIG_ENDIAN)
    rec["t"] = rng.uniform(2e-7, 9e-7, n)
    rec["vdc"] = rng.uniform(3.0, 9.0, n)
    rec["x"] = rng.uniform(-3.8, 3.8, n)
    rec["y"] = rng.uniform(-3.8, 3.8, n)
    rec["pn"] = np.arange(n)
    src = tmp_path / "big.bin"
    with open(src, "wb") as fh:
        fh.write(b"\0" * 24)
        rec.tofile(fh)
    del rec
    size = src.stat().st_size
    # a small file of the same layout to warm up on
    small = tmp_path / "small.bin"
    with open(src, "rb") as a, open(small, "wb") as b:
        b.write(a.read(24 + 32 * 300_000))
    fmap = tmp_path / "map.yaml"
    fmap.write_text(BINARY_MAP)
    env = dict(os.environ, NUMBA_CACHE_DIR=os.environ["NUMBA_CACHE_DIR"])
    p = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(small), str(src), str(fmap),
                        str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    growth = int(p.stdout.split()[-1])
    with RunReader(tmp_path / "big.h5") as r:
        assert r.count("hits") == n
        assert r.read("hits", n - 1)["pulse"][0] == n - 1
    assert growth < size / 3, f"peak RSS grew by {growth / 2**20:.1f} MiB for a " \
                                f"{size / 2**20:.1f} MiB file"


# ---------------------------------------------------------------------- round trip (simulated)
def test_simulated_run_round_trip_through_csv(tmp_path: Path):
    """A simulated run's /hits written to CSV (kV, cm) and imported back with the instrument's
    t0 and flight length: analyze's composition is the original run's (same hits)."""
    run = tmp_path / "x.h5"
    env = dict(os.environ, NUMBA_CACHE_DIR=os.environ["NUMBA_CACHE_DIR"])
    subprocess.run([sys.executable, "-m", "apt_daq.cli", "run",
                    str(ROOT / "configs/runs/nmc811-cr-5pj.yaml"), "-o", str(run), "--ions",
                    "50000", "--quiet"], check=True, env=env, cwd=tmp_path, timeout=300,
                   capture_output=True)
    with RunReader(run) as r:
        h = r.read("hits")
    src = tmp_path / "hits.csv"
    with open(src, "w") as fh:
        fh.write("tof_ns,vdc_kv,vp_v,x_cm,y_cm,pulse\n")
        for row in h:
            fh.write(f"{float(row['tof'])!r},{float(row['v_dc']) / 1e3!r},"
                     f"{float(row['v_pulse'])!r},{float(row['det_x']) / 10!r},"
                     f"{float(row['det_y']) / 10!r},{int(row['pulse'])}\n")
    back = tmp_path / "back.h5"
    rrng = ROOT / "configs/ranges/nmc811.rrng"
    assert main(["import", str(src), "-o", str(back), "--fields",
                 "tof=tof_ns:ns,v_dc=vdc_kv:kV,v_pulse=vp_v:V,det_x=x_cm:cm,det_y=y_cm:cm,"
                 "pulse=pulse", "--instrument", str(ROOT / "configs/instruments/leap5000xs.yaml"),
                 "--ranges", str(rrng)]) == 0
    from apt_daq.analysis.report import analyze_run

    a = analyze_run(run, rrng, "none", store=False)
    b = analyze_run(back, None, "none", store=False)
    assert b["mass_source"] == "TOF and voltage, calibrated"
    assert b["ranged_ions"] == a["ranged_ions"] > 30_000
    for el, v in a["composition"].items():
        # same hits: identical up to float32 rounding of the unit conversion at the edges
        assert b["composition"][el]["fraction"] == pytest.approx(v["fraction"], abs=1e-4), el
    json.dumps(b)


# ------------------------------------------------------------------ formats only ifes reads
def write_apyt_raw(path: Path, t: dict[str, np.ndarray]) -> None:
    """Stuttgart APyT raw hits, the layout ifes' reader documents: 8 little-endian 4-byte
    fields (U_base, U_pulse, U_reflectron V; x_det, y_det mm; tof ns; epoch i4; pulse u4)."""
    rec = np.zeros(len(t["tof"]), [("vb", "<f4"), ("vp", "<f4"), ("vr", "<f4"), ("x", "<f4"),
                                   ("y", "<f4"), ("tof", "<f4"), ("epoch", "<i4"),
                                   ("pn", "<u4")])
    rec["vb"], rec["vp"] = t["v_dc"], t["v_pulse"]
    rec["x"], rec["y"], rec["tof"] = t["det_x"], t["det_y"], t["tof"]
    rec["pn"] = t["pulse"]
    rec.tofile(path)


ENV_RANGES = """\
# GPM ENV file
# Definition of ranges
Li 6.9 7.15 1 0 0
O 15.9 16.1 0 1 0
Ni 28.85 29.1 0 0 1
# Atom probe definition
"""


def test_ifes_apyt_raw_hits(tmp_path: Path, truth):
    pytest.importorskip("ifes_apt_tc_data_modeling")
    src = tmp_path / "run.raw"
    write_apyt_raw(src, truth)
    env = tmp_path / "r.env"
    env.write_text(ENV_RANGES)
    out = tmp_path / "run.h5"
    assert main(["import", str(src), "-o", str(out), "--flight-path-mm", "100",
                 "--ranges", str(env)]) == 0  # format from the extension: raw
    check_hits(out, truth)  # raw holds V, mm, ns: exact
    with RunReader(out) as r:
        assert r.meta["imported"]["format"] == "raw"
        rows = r.meta["ranges"]["rows"]
        assert [x["name"] for x in rows] == ["Li+", "O+", "Ni2+"]  # charges inferred
        assert rows[2]["lo_da"] == 28.85
    # analyze --ranges takes the same files import --ranges does (it refused .env, .analysis
    # and .analysisset with exit 2: an outside audit with ifes's real range files)
    assert main(["analyze", str(out), "--ranges", str(env), "--json", "--no-store"]) == 0


def test_ifes_ato_v3(tmp_path: Path):
    """Rouen ATO v3: 8-byte header (version 3 in the second word), 14 little-endian float32 per
    ion; x, y, z in angstrom (ifes converts to nm), m/n in the 4th field."""
    pytest.importorskip("ifes_apt_tc_data_modeling")
    n = 1000
    rng = np.random.default_rng(3)
    rec = np.zeros((n, 14), "<f4")
    xyz_nm = rng.uniform(-20, 20, (n, 3)).astype(np.float32)
    rec[:, :3] = xyz_nm * np.float32(10)
    rec[:, 3] = rng.uniform(1, 120, n)
    src = tmp_path / "data.ato"
    with open(src, "wb") as fh:
        np.array([0, 3], "<u4").tofile(fh)
        rec.tofile(fh)
    out = tmp_path / "run.h5"
    assert main(["import", str(src), "-o", str(out)]) == 0
    with RunReader(out) as r:
        d = r.read("derived")
        assert r.meta["calibration"]["mode"] == "file"
        assert r.meta["imported"]["format"] == "ato"
    assert np.array_equal(d["mass"], rec[:, 3])
    np.testing.assert_allclose(np.stack([d["x"], d["y"], d["z"]], 1), xyz_nm, rtol=1e-6)


def test_ifes_truncated_file_is_one_line(tmp_path: Path, capsys, wide_errors):
    pytest.importorskip("ifes_apt_tc_data_modeling")
    src = tmp_path / "bad.raw"
    src.write_bytes(b"\0" * 33)
    assert main(["import", str(src), "-o", str(tmp_path / "x.h5")]) == 2
    one_error_line(capsys, str(src), "not a Stuttgart APyT raw hits file", "8 * 4B")

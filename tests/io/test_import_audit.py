"""What an import says and stores, judged from the outside on files built here with numpy
(the EPOS layout: 11 big-endian 4-byte words, psl and ipp the last two; a CSV hit table):

- the flight length the summary names is the one /meta keeps (one estimate: the reader's quick
  one, V_dc alone and no detector position, said 324 mm of pyccapt's calcite EPOS while the
  run kept 322.668 mm);
- the pulse count of absolute pulse numbers is the pulses the file spans (last - first + 1),
  of pulse deltas (EPOS psl) their sum, in the import's /meta and in ``apt-daq info``;
- a header-only or empty CSV is one line naming the file and saying it holds no ions, by every
  route (a hit table, the ifes CSV reader by extension or by --format csv);
- a file whose every m/n is 0 or NaN is one line saying so.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from apt_daq.cli import main
from apt_daq.io.store import RunReader

E, U = 1.602176634e-19, 1.66053906660e-27
L_MM = 300.0


def write_epos(path: Path, n: int = 20_000, seed: int = 5, *, psl: np.ndarray | None = None,
               mass: np.ndarray | None = None) -> None:
    """A straight-flight EPOS: m = 2 e (V_dc + V_pulse) t^2 / (L^2 + x^2 + y^2), V_pulse 20 %
    of V_dc and hits up to 35 mm off axis (both left out by a quick V_dc, on-axis estimate)."""
    rng = np.random.default_rng(seed)
    m = rng.choice([12.0, 19.9813, 55.9575], n, p=[0.2, 0.6, 0.2]) * (1 + rng.normal(0, 3e-4, n))
    v_dc = np.linspace(3000.0, 5000.0, n)
    v_pulse = 0.2 * v_dc
    r, phi = 35.0 * np.sqrt(rng.random(n)), 2 * np.pi * rng.random(n)
    x, y = r * np.cos(phi), r * np.sin(phi)
    l_eff_m = np.sqrt(L_MM**2 + x**2 + y**2) * 1e-3
    t_s = l_eff_m * np.sqrt(m * U / (2 * E * (v_dc + v_pulse)))
    rec = np.zeros((n, 11), ">f4")
    rec[:, 0:3] = rng.normal(0, 10, (n, 3))
    rec[:, 3] = m if mass is None else mass
    rec[:, 4], rec[:, 5], rec[:, 6], rec[:, 7], rec[:, 8] = t_s * 1e9, v_dc, v_pulse, x, y
    ints = rec.view(">i4")
    ints[:, 9] = 1 if psl is None else psl
    ints[:, 10] = 1
    rec.tofile(path)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ------------------------------------------------------------------ 1. one flight length
def test_the_flight_length_the_import_names_is_the_one_it_stores(tmp_path: Path, capsys):
    epos, h5 = tmp_path / "a.epos", tmp_path / "a.h5"
    write_epos(epos)
    assert main(["import", str(epos), "-o", str(h5)]) == 0
    out = capsys.readouterr().out
    with RunReader(h5) as r:
        stored = float(r.instrument.flight_path_mm)
        imp = r.meta["imported"]
    assert stored == pytest.approx(L_MM, rel=2e-3)
    said = {"printed": out, "voltage": imp["voltage"], "flight_path": imp["flight_path"]}
    for where, text in said.items():
        named = [float(x) for x in re.findall(r"(\d+(?:\.\d+)?) mm", text)]
        assert named, (where, text)  # each place names the flight length ...
        for mm in named:  # ... and it is the stored one (was 275 mm in the voltage note)
            assert mm == pytest.approx(stored, abs=5e-4), (where, text)


# ------------------------------------------------------------------ 2. pulses spanned
def test_absolute_pulse_numbers_count_the_pulses_the_file_spans(tmp_path: Path, capsys):
    # a hit table whose pulse counter stood at 2,252,793 when the file began (as APyT's raw)
    n, k = 500, 1.9297e-10
    rng = np.random.default_rng(2)
    pn = 2_252_793 + np.cumsum(rng.integers(1, 40, n))
    m = rng.choice([27.977, 13.988], n)
    v = np.linspace(4000.0, 5000.0, n)
    t_s = (L_MM * 1e-3) * np.sqrt(m / (k * v)) * 1e-9
    csv = tmp_path / "hits.csv"
    lines = ["T,VDC,PN"] + [f"{a:.6e},{b / 1000:.6f},{c}" for a, b, c in zip(t_s, v, pn,
                                                                        strict=True)]
    csv.write_text("\n".join(lines) + "\n")
    h5 = tmp_path / "hits.h5"
    assert main(["import", str(csv), "-o", str(h5), "--flight-path-mm", "300",
                 "--fields", "tof=T:s,v_dc=VDC:kV,pulse=PN"]) == 0
    capsys.readouterr()
    spanned = int(pn[-1] - pn[0] + 1)
    with RunReader(h5) as r:
        assert r.meta["imported"]["pulse_count"] == spanned  # was 2,252,793 + ... (the last)
    assert main(["info", "--json", str(h5)]) == 0
    assert json.loads(capsys.readouterr().out)["pulses"] == spanned


@pytest.mark.parametrize("fmt", [None, "ifes-epos"])
def test_pulse_deltas_count_from_the_acquisitions_start(tmp_path: Path, capsys, fmt):
    # EPOS psl: the first ion came 1000 pulses into the run: the sum of psl, by both readers
    n = 2000
    psl = np.full(n, 3, np.int64)
    psl[0] = 1000
    epos, h5 = tmp_path / "p.epos", tmp_path / "p.h5"
    write_epos(epos, n, psl=psl)
    if fmt:
        pytest.importorskip("ifes_apt_tc_data_modeling")
    assert main(["import", str(epos), "-o", str(h5), *(["--format", fmt] if fmt else [])]) == 0
    capsys.readouterr()
    with RunReader(h5) as r:
        assert r.meta["imported"]["pulse_count"] == int(psl.sum())
    assert main(["info", "--json", str(epos)]) == 0
    assert json.loads(capsys.readouterr().out)["pulses"] == int(psl.sum())


# ------------------------------------------------------------------ 3. no ions
FIELDS = "tof=T:s,v_dc=VDC:kV,det_x=X:cm,det_y=Y:cm,pulse=PN"


@pytest.mark.parametrize("content, how", [
    ("T,VDC,X,Y,PN\n", ["--format", "table", "--fields", FIELDS]),
    ("T,VDC,X,Y,PN", ["--format", "table", "--fields", FIELDS]),  # no newline after it
    ("T,VDC,X,Y,PN\n", []),  # .csv: the ifes CSV reader
    ("x,y,z,mass\n", ["--format", "csv"]),
    ("", ["--format", "csv"]),
    ("", ["--fields", FIELDS]),
])
def test_a_csv_without_rows_holds_no_ions(tmp_path: Path, capsys, content: str, how: list):
    csv, h5 = tmp_path / "header_only.csv", tmp_path / "e.h5"
    csv.write_text(content)
    assert main(["import", str(csv), "-o", str(h5), *how]) == 2
    line = one_error_line(capsys)
    assert "header_only.csv" in line and "holds no ions" in line
    assert not re.search(r"ifes|NoneType|Traceback|Empty CSV|pyarrow", line), line
    assert not h5.exists()


# ------------------------------------------------------------------ 5. no m/n
@pytest.mark.parametrize("value", [0.0, np.nan])
def test_a_file_whose_every_mn_is_0_or_nan_is_refused(tmp_path: Path, capsys, value: float):
    epos, h5 = tmp_path / "m.epos", tmp_path / "m.h5"
    write_epos(epos, 3000, mass=np.full(3000, value))
    assert main(["import", str(epos), "-o", str(h5)]) == 2
    line = one_error_line(capsys)
    assert "m.epos" in line and "every m/n" in line and "0 or NaN" in line
    assert not h5.exists()

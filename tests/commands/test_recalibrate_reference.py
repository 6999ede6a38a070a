"""``apt-daq analyze --recalibrate`` on a reference peak nobody named: the fit puts the most
counted central range at the m/n its name means, so a misnamed range moves every other peak.
The truth is built here with numpy, not by apt-daq: a straight-flight EPOS (m = 2 e V t^2 /
L_eff^2, L = 300 mm) of 28Si+ (60 %), 28Si2+ and 16O+ (20 % each), imported at its own
flight length, so the file's m/n and the m/n from TOF agree before any fit.

The range file names the 28Si+ range "Ni" (58Ni2+ = 28.968 Da lies inside [27.5, 29.2)): a fit
on it scales every m/n by 28.968 / 27.977 (+3.5 %) and puts Si2+ at 14.48 and O+ at 16.56 Da,
out of their ranges; it must be refused in one line naming the reference and the peaks it
moved. Named right, the same run recalibrates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from apt_daq.cli import main

E, U = 1.602176634e-19, 1.66053906660e-27
L_MM = 300.0
SI, SI2, OX = 27.976927, 13.988463, 15.994915
GOOD = """[Ions]
Number=2
Ion1=Si
Ion2=O
[Ranges]
Number=3
Range1=13.8000 14.2000 Vol:0.02 Si:1 Color:999999
Range2=15.8000 16.2000 Vol:0.01 O:1 Color:FF0000
Range3=27.5000 28.4000 Vol:0.02 Si:1 Color:999999
"""
# the most counted range (28Si+) named Ni, its window stretched to hold 58Ni2+ (28.968 Da)
MISNAMED = GOOD.replace("Ion1=Si", "Ion1=Si\nIon3=Ni").replace("Number=2", "Number=3").replace(
    "Range3=27.5000 28.4000 Vol:0.02 Si:1", "Range3=27.5000 29.2000 Vol:0.01 Ni:1")


def write_epos(path: Path, n: int = 60_000, seed: int = 11) -> None:
    rng = np.random.default_rng(seed)
    m = rng.choice([SI, SI2, OX], n, p=[0.6, 0.2, 0.2]) * (1 + rng.normal(0, 2e-4, n))
    v = np.linspace(3000.0, 6000.0, n)
    r, phi = 30.0 * np.sqrt(rng.random(n)), 2 * np.pi * rng.random(n)
    x, y = r * np.cos(phi), r * np.sin(phi)
    t_s = np.sqrt(L_MM**2 + x**2 + y**2) * 1e-3 * np.sqrt(m * U / (2 * E * v))
    rec = np.zeros((n, 11), ">f4")
    rec[:, 0:3] = rng.normal(0, 10, (n, 3))
    rec[:, 3], rec[:, 4], rec[:, 5], rec[:, 7], rec[:, 8] = m, t_s * 1e9, v, x, y
    ints = rec.view(">i4")
    ints[:, 9] = 1
    ints[:, 10] = 1
    rec.tofile(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("refit")
    epos, h5 = d / "si.epos", d / "si.h5"
    write_epos(epos)
    assert main(["import", str(epos), "-o", str(h5), "--flight-path-mm", str(L_MM)]) == 0
    return h5


def test_a_refit_on_a_misnamed_reference_is_refused(run: Path, tmp_path: Path, capsys):
    rrng = tmp_path / "misnamed.rrng"
    rrng.write_text(MISNAMED)
    capsys.readouterr()
    assert main(["analyze", str(run), "--recalibrate", "--no-store", "--roi", "none",
                 "--ranges", str(rrng)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    line = err[0]
    assert "Ni2+" in line and "reference" in line  # the reference it fitted on
    assert "O+" in line and "Si2+" in line  # the peaks it moved
    assert "--reference" in line


def test_a_refit_on_a_reference_named_right_is_kept(run: Path, tmp_path: Path, capsys):
    rrng = tmp_path / "good.rrng"
    rrng.write_text(GOOD)
    capsys.readouterr()
    assert main(["analyze", str(run), "--recalibrate", "--no-store", "--roi", "none",
                 "--ranges", str(rrng), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["calibration"]["reference"] == "Si+"
    # every ion stays in its range: the truth is 60 / 20 / 20 % Si+, Si2+, O+
    for ion, share in (("Si+", 0.6), ("Si2+", 0.2), ("O+", 0.2)):
        assert s["ion_counts"][ion] == pytest.approx(share * 60_000, rel=0.03)

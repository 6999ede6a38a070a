"""A raw-hit import with no instrument takes a detector wide enough for its hits (audit of
Dec 6: APyT's TAP file has hits out to +-70 mm; the nominal 80 mm detector clipped 45 % of
them from the hit map, and set the reconstruction's detector area and the bowl fit's cells).
The hits are plain numpy, uniform over a disc of a known radius, written as a CSV in s, kV and
cm; the detector is judged by what share of them it holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from apt_daq.commands.import_ import import_file
from apt_daq.io.store import RunReader

FIELDS = "tof=T:s,v_dc=VDC:kV,det_x=X:cm,det_y=Y:cm"


def hits_csv(path: Path, radius_mm: float, n: int = 20_000) -> np.ndarray:
    rng = np.random.default_rng(7)
    r = radius_mm * np.sqrt(rng.uniform(0, 1, n))
    phi = rng.uniform(0, 2 * np.pi, n)
    x, y = r * np.cos(phi), r * np.sin(phi)
    tof = rng.uniform(300.0, 900.0, n)
    v = np.linspace(4000.0, 6000.0, n)
    with open(path, "w") as fh:
        fh.write("T,VDC,X,Y\n")
        for i in range(n):
            fh.write(f"{tof[i] * 1e-9:.9g},{v[i] / 1e3:.9g},{x[i] / 10:.9g},{y[i] / 10:.9g}\n")
    return np.hypot(x, y)


@pytest.mark.parametrize(("radius_mm", "wide"), [(70.0, True), (35.0, False)])
def test_the_detector_holds_the_hits(tmp_path: Path, radius_mm: float, wide: bool) -> None:
    src, out = tmp_path / "hits.csv", tmp_path / "run.h5"
    r = hits_csv(src, radius_mm)
    s = import_file(src, out, fields=FIELDS, flight_path_mm=300.0, t0_ns=0.0)
    with RunReader(out) as rr:
        d = rr.instrument.detector_diameter_mm
    held = np.mean(r <= 0.5 * d)
    assert held >= 0.999, (d, held)
    if wide:  # no wider than the hits need (rounded up to the mm)
        assert d <= 2 * radius_mm + 1 and "from the hits" in s["detector"]
    else:  # hits inside the nominal detector: the nominal stays
        assert d == 80.0 and "detector" not in s

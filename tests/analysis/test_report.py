"""analyze_run on synthetic run files with truth: corrections, ranging, composition, truth scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from apt_daq.analysis.report import analyze, analyze_run
from apt_daq.errors import UserError

from .synth import NMC_IONS, make_run


@pytest.fixture(scope="module")
def distorted(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "d.h5", n=60_000, distort=True, seed=2)


def test_json_keys_and_corrections(distorted: Path) -> None:
    s = analyze_run(distorted, roi="none")
    for key in (
        "ions",
        "ranged_ions",
        "composition",
        "ion_counts",
        "ratios",
        "mrp",
        "fda",
        "truth",
    ):
        assert key in s
    assert s["ranges"].endswith("nmc811.rrng")  # the run file's analysis.ranges, resolved
    # the fitted voltage/bowl corrections undo a +-1 % voltage and 0.6 % bowl distortion:
    # the resolving power returns to that of the timing spread alone, m/dm = 1 / (2.3548 * 4e-4)
    for peak in s["mrp"]:
        assert peak["mrp50"] == pytest.approx(1062, rel=0.1), peak
    assert s["truth"]["ranged_as_true"] > 0.99
    # composition against the truth of the detected ions, within 3 counting errors
    truth = s["truth"]["composition_detected"]
    for el, v in s["composition"].items():
        assert v["fraction"] == pytest.approx(truth.get(el, 0.0), abs=3 * v["error"] + 2e-3), el
    assert s["truth"]["position_error"]["rms_xy_nm"] < 1e-2
    assert s["fda"]["Li+"]["mu"] < 0.25  # species drawn at random: no clustering


def test_ratios_match_generated_fractions(distorted: Path) -> None:
    s = analyze_run(distorted, roi="none")
    o2, o1 = NMC_IONS["O2+"], NMC_IONS["O+"]
    # 64Ni2+ sits under O2+ and 17O is not ranged: within counting error + 1 %
    assert s["ratios"]["O2+/O+"] == pytest.approx(o2 / o1, rel=0.05)
    assert "Mn2+/Mn+" not in s["ratios"]  # no Mn+ ions generated
    assert s["ratios"]["Ni/(Ni+Co+Mn)"] == pytest.approx(0.33 / 0.43, abs=0.02)


def test_roi_cylinder_reduces_ions(distorted: Path) -> None:
    full = analyze_run(distorted, roi="none")
    roi = analyze_run(distorted, roi="cylinder:25")
    assert roi["ions"] < full["ions"] == full["ions_total"]
    # uniform detector coverage: the ROI holds the area fraction of the field of view
    a = analyze(distorted, roi="cylinder:25")
    assert a.profile["z_nm"].size > 0


def test_explicit_ranges_and_missing_ranges(tmp_path: Path) -> None:
    p = make_run(tmp_path / "r.h5", n=20_000, ranges="/nonexistent/x.rrng")
    s = analyze_run(p, roi="none")  # falls back to ranging with no range file
    assert "found on the calibrated spectrum" in s["ranges"]
    assert s["truth"]["ranged_as_true"] > 0.95
    with pytest.raises(UserError):
        analyze_run(p, ranges_path=tmp_path / "none.rrng")
    assert np.isfinite(s["composition"]["Li"]["fraction"])

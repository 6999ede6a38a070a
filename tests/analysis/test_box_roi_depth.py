"""A box ROI given without a depth (``box:WX,WY,WZ``) is centred on the middle of the WHOLE
run's depth range, judged against numpy on apav's real LEAP Si EPOS (945 211 ions, two of the
analysis' 524 288-ion chunks), read here from the published layout.

Before (audit Dec 6): each chunk centred the box on its own median depth, so on a run of more
than one chunk the "box" was a column of boxes (64 616 ions instead of 37 267 on the Si POS;
on 10^7 ions a column through the whole depth), and ``plot`` (whole-run median) disagreed.
"""

from __future__ import annotations

import numpy as np
import pytest

from .test_apav_si import EPOS

pytestmark = pytest.mark.skipif(not EPOS.exists(), reason="apav's test data not installed")


@pytest.fixture(scope="module")
def si_run(tmp_path_factory):
    from apt_daq.cli import main

    out = tmp_path_factory.mktemp("si_box") / "si.h5"
    assert main(["import", str(EPOS), "-o", str(out)]) == 0
    xyz = np.fromfile(EPOS, dtype=">f4").reshape(-1, 11)[:, :3].astype(np.float64)
    return out, xyz


@pytest.mark.parametrize("size", [(10.0, 10.0, 20.0), (30.0, 20.0, 60.0)])
def test_box_without_depth_is_centred_on_the_runs_depth_range(si_run, size) -> None:
    from apt_daq.analysis.report import analyze

    path, xyz = si_run
    x, y, z = xyz.T
    mid = 0.5 * (z.min() + z.max())  # the EPOS's z: the depth range of its reconstruction
    wx, wy, wz = size
    want = np.count_nonzero((np.abs(x) <= wx / 2) & (np.abs(y) <= wy / 2)
                            & (np.abs(z - mid) <= wz / 2))
    res = analyze(path, roi=f"box:{wx:g},{wy:g},{wz:g}", store=False)
    # float32 positions against the float64 edges: a handful of ions on the faces may differ
    assert abs(res.summary["ions"] - want) <= 3, (res.summary["ions"], want)
    # the description names where the box was put; the spec reads back the same box
    assert res.summary["roi"].startswith(f"box {wx:g} x {wy:g} x {wz:g} nm at (0, 0, ")
    *size_back, cx, cy, cz = map(float, res.summary["roi_spec"].split(":")[1].split(","))
    assert size_back == [wx, wy, wz] and (cx, cy) == (0.0, 0.0) and abs(cz - mid) < 1e-3

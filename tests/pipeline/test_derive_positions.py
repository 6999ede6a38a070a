"""The ion stream's one pass over hit records (derive with a reconstructor: m/n, range and
x, y, z together) gives exactly the positions of Reconstructor.process (bas_kernel over
columns) and the m/n and ranges of derive without one, for both projections, across chunks
(the cumulative depth carried), with hits at V <= 0 and a NaN voltage among them."""

from __future__ import annotations

import numpy as np
import pytest

from apt_daq.config import InstrumentConfig, ReconstructionConfig
from apt_daq.hits import HIT_DTYPE
from apt_daq.pipeline.corrections import Calibration
from apt_daq.pipeline.process import derive
from apt_daq.pipeline.ranging import RangeLookup, ranges_for_ions
from apt_daq.pipeline.reconstruction import Reconstructor
from apt_daq.pipeline.tof import flight_time_ns


@pytest.mark.parametrize("method", ["bas", "geiser"])
def test_derive_positions_equal_process(method):
    rng = np.random.default_rng(7)
    inst = InstrumentConfig()
    cfg = ReconstructionConfig(method=method)
    a, b = Reconstructor(inst, cfg), Reconstructor(inst, cfg)
    cal = Calibration((0.998, 0.0005, -1e-5), (1.0, 1e-4, -1e-4, 2e-4, 0.0, 2e-4),
                      t0_ns=float(inst.t0_ns), flight_path_mm=float(inst.flight_path_mm))
    lookup = RangeLookup.build(ranges_for_ions(["Li+", "O+", "Ni+"]))
    for n in (5000, 1, 3000):
        h = np.zeros(n, HIT_DTYPE)
        h["det_x"], h["det_y"] = rng.uniform(-45, 45, (2, n)).astype(np.float32)
        h["v_dc"] = rng.uniform(2000, 9000, n).astype(np.float32)
        h["v_pulse"] = rng.uniform(0, 300, n).astype(np.float32)
        h["tof"] = flight_time_ns(rng.choice([7.016, 15.995, 57.935], n), h["v_dc"],
                                  inst.flight_path_mm, h["det_x"], h["det_y"], inst.t0_ns)
        h["v_dc"][rng.random(n) < 0.02] = -400.0  # V <= 0
        if n == 3000:  # the last chunk: a NaN voltage makes every later depth NaN (both)
            h["v_dc"][n // 2] = np.nan
        t0, lf = float(inst.t0_ns), float(inst.flight_path_mm)
        plain = derive(h, cal, t0, lf, lookup)
        out = derive(h, cal, t0, lf, lookup, b)
        x, y, z = a.process(h)
        for col, ref in (("x", x), ("y", y), ("z", z), ("mass", plain["mass"]),
                         ("ion", plain["ion"])):
            np.testing.assert_array_equal(out[col], ref)
        assert np.isnan(plain["x"]).all()
        np.testing.assert_equal(b.z_nm, a.z_nm)
        assert a.ions == b.ions
        assert n == 1 or (np.isnan(out["x"]).sum() >= 1 and np.isfinite(out["z"]).sum() > 0.4 * n
                          and (out["ion"] >= 0).mean() > 0.2)

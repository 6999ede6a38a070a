"""The stream's reconstruction over hit records (Reconstructor.process_into,
bas_records_kernel) gives exactly the positions of Reconstructor.process (bas_kernel over
columns), for both projections, across chunks (the cumulative depth carried), with hits at
V <= 0 and a NaN voltage among them."""

from __future__ import annotations

import numpy as np
import pytest

from apt_daq.config import InstrumentConfig, ReconstructionConfig
from apt_daq.hits import DERIVED_DTYPE, HIT_DTYPE
from apt_daq.pipeline.reconstruction import Reconstructor


@pytest.mark.parametrize("method", ["bas", "geiser"])
def test_process_into_equals_process(method):
    rng = np.random.default_rng(7)
    inst = InstrumentConfig()
    cfg = ReconstructionConfig(method=method)
    a, b = Reconstructor(inst, cfg), Reconstructor(inst, cfg)
    for n in (5000, 1, 3000):
        h = np.zeros(n, HIT_DTYPE)
        h["det_x"], h["det_y"] = rng.uniform(-45, 45, (2, n)).astype(np.float32)
        h["v_dc"] = rng.uniform(2000, 9000, n).astype(np.float32)
        h["v_pulse"] = rng.uniform(0, 300, n).astype(np.float32)
        h["v_dc"][rng.random(n) < 0.02] = -h["v_pulse"][:1].max() - 1.0  # V <= 0
        if n == 3000:  # the last chunk: a NaN voltage makes every later depth NaN (both)
            h["v_dc"][n // 2] = np.nan
        out = np.zeros(n, DERIVED_DTYPE)
        x, y, z = a.process(h)
        b.process_into(h, out)
        for col, ref in (("x", x), ("y", y), ("z", z)):
            np.testing.assert_array_equal(out[col], ref)
        np.testing.assert_equal(b.z_nm, a.z_nm)
        assert a.ions == b.ions
        assert n == 1 or (np.isnan(out["x"]).sum() >= 1 and np.isfinite(out["z"]).sum() > 0.4 * n)

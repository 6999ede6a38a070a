"""The hit map's 2-D histogram kernel is np.histogram2d (its numpy twin), bin for bin: values on
the edges, the last edge, outside the edges and NaN included (analyze's hit map uses it)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_daq.pipeline.histogram import hist2d_kernel


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), half_mm=st.floats(1.0, 60.0), nb=st.integers(1, 200))
def test_hist2d_kernel_is_numpy_histogram2d(seed: int, half_mm: float, nb: int) -> None:
    rng = np.random.default_rng(seed)
    edges = np.linspace(-half_mm, half_mm, nb + 1)
    n = 5000
    x = rng.uniform(-1.1 * half_mm, 1.1 * half_mm, n).astype(np.float32)
    y = rng.normal(0.0, 0.5 * half_mm, n).astype(np.float32)
    on_edge = rng.random(n) < 0.1  # float32 of an edge: on it or just beside it
    x[on_edge] = edges[rng.integers(0, nb + 1, int(on_edge.sum()))]
    y[: nb + 1] = edges
    x[rng.random(n) < 0.01] = np.nan
    want = np.histogram2d(x, y, [edges, edges])[0].astype(np.int64)
    got = hist2d_kernel(x, y, edges, np.zeros((nb, nb), np.int64))
    assert np.array_equal(got, want)

"""The element search's shortcuts change no result (apt_daq.pipeline.autorange.identify).

- The groups of a selection (columns connected through shared rows) are scipy's connected
  components of the same graph.
- A trial whose cost is known to be at or above what the search would accept is not costed in
  full (``evaluate(..., bound)``); the search with that shortcut selects the same ions at the
  same cost as the search that costs every trial, on apav's real LEAP Si run and on a
  synthetic spectrum whose minor element the search swaps out whole.
- A range file's colours do not depend on the process that wrote it (they came from
  ``hash()``, which Python salts per process: calcite's range file differed in 60 colours
  between two runs).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from apt_daq.pipeline.autorange import autorange, identify

from .test_autorange import synthetic_masses


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 40).flatmap(lambda n: st.tuples(
    st.just(n), st.integers(0, 2**32 - 1), st.floats(0.0, 0.3),
    st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))))
def test_groups_are_the_connected_components(case):
    n, seed, density, sel = case
    rng = np.random.default_rng(seed)
    adj = rng.random((n, n)) < density
    adj = adj | adj.T | np.eye(n, dtype=bool)
    sel = sorted(sel)
    pos, starts = identify._components(adj, np.asarray(sel, dtype=np.int64))
    groups = [tuple(sel[i] for i in pos[a:b]) for a, b in itertools.pairwise(starts)]
    _, label = connected_components(csr_matrix(adj[np.ix_(sel, sel)]), directed=False)
    want: dict[int, list[int]] = {}
    for k, lab in zip(sel, label, strict=True):
        want.setdefault(int(lab), []).append(k)
    # each group sorted, the groups in the order of their first column, every column once
    assert groups == sorted((tuple(g) for g in want.values()), key=lambda g: g[0])


def _both_ways(monkeypatch: pytest.MonkeyPatch, run):
    """``run()`` with the bound shortcut, then with every trial costed in full."""
    fits: list[identify.Fit] = []
    select = identify.select

    def keep(*a, **k):
        fits.append(select(*a, **k))
        return fits[-1]

    monkeypatch.setattr("apt_daq.pipeline.autorange.select", keep)
    fast = run()
    evaluate = identify._Problem.evaluate
    monkeypatch.setattr(identify._Problem, "evaluate",
                        lambda self, sel, bound=np.inf: evaluate(self, sel))
    full = run()
    assert len(fits) == 2 * (len(fits) // 2) and fits
    half = len(fits) // 2
    for a, b in zip(fits[:half], fits[half:], strict=True):
        assert a.selected == b.selected
        assert a.cost == b.cost and a.chi2 == b.chi2
        assert np.array_equal(a.x, b.x)
        assert a.delta_cost == b.delta_cost
    return fast, full


def test_the_bound_changes_no_selection_on_a_real_leap_run(apav_data, monkeypatch):
    from apt_daq.commands.range_ import spectrum_of_file

    spec = spectrum_of_file(apav_data / "Si.epos")
    fast, full = _both_ways(monkeypatch, lambda: autorange(spec))
    assert [(r.ion, r.lo_da, r.hi_da) for r in fast.ranges] == [
        (r.ion, r.lo_da, r.hi_da) for r in full.ranges]


def test_the_bound_changes_no_selection_where_an_element_is_swapped_out(monkeypatch):
    # Ga+ and Ga2+ beside an NMC-like matrix: MnN+ / (MnN)2+ compete for 69 and 34.5 Da, the
    # search's element removal decides (identify._drop_element)
    ions = {"O+": 20_000, "O2+": 40_000, "Li+": 30_000, "Ni2+": 20_000, "Ni+": 4_000,
            "Mn2+": 3_000, "Co2+": 2_000, "Ga+": 900, "Ga2+": 400}
    masses = synthetic_masses(ions, seed=3)
    fast, full = _both_ways(monkeypatch, lambda: autorange(masses))
    assert fast.table.names == full.table.names
    assert {"Ga+", "Ga2+"} <= set(fast.table.names)


def test_range_colours_are_the_same_in_every_process():
    code = ("from apt_daq.rangetable import default_colour; "
            "print(default_colour({'Tc': 2, 'Pm': 1}))")
    out = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout
           for seed in ("1", "2", "3")}
    assert len(out) == 1, out

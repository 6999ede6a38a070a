"""A range's background and peak are read from its own bins, not the whole spectrum's.

``peaks.centre_span`` finds the bins whose centres lie in [x0, x1) from the few centres near
x0 and x1; the reference is ``np.searchsorted`` on every centre (what the background, peak and
composition code computed, per range, before). ``unranged_bins`` is held to an explicit
membership test of each bin. The last test is the case that made it matter: a range file
with a range near 10 kDa (the readers' limit) sizes ``analyze``'s spectra to 10 M and 20 M
bins; a pass over every bin per range took 16 s and 1.4 GB on a 54k-ion run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_daq.pipeline.peaks import centre_span, unranged_bins

_x = st.one_of(st.floats(-5.0, 60.0), st.sampled_from([-np.inf, np.inf, np.nan]))


@st.composite
def _edges(draw) -> np.ndarray:
    widths = draw(st.lists(st.floats(1e-4, 3.0), min_size=1, max_size=60))
    return draw(st.floats(-2.0, 10.0)) + np.concatenate([[0.0], np.cumsum(widths)])


@settings(max_examples=300, deadline=None)
@given(_edges(), _x, _x)
def test_centre_span_is_searchsorted_on_every_centre(edges: np.ndarray, x0: float, x1: float):
    c = 0.5 * (edges[1:] + edges[:-1])
    a, b = np.searchsorted(c, x0), np.searchsorted(c, x1)
    want = np.arange(len(c))[a:b]  # numpy's slice: empty when b <= a
    s = centre_span(edges, x0, x1)
    assert np.array_equal(np.arange(len(c))[s], want)


@settings(max_examples=200, deadline=None)
@given(_edges(), st.lists(st.tuples(st.floats(-3.0, 60.0), st.floats(0.0, 4.0)), max_size=6))
def test_unranged_bins_are_the_bins_in_no_range(edges: np.ndarray, spans) -> None:
    lo = np.array([a for a, _ in spans])
    hi = lo + np.array([w for _, w in spans])
    c = 0.5 * (edges[1:] + edges[:-1])
    inside = [any(lo_ <= ci < hi_ for lo_, hi_ in zip(lo, hi, strict=True)) for ci in c]
    assert np.array_equal(unranged_bins(edges, lo, hi), ~np.array(inside, bool))


_CHILD = """
import contextlib, io, json, sys, time
from apt_daq.bench.stream import peak_rss_mb
from apt_daq.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = main(["analyze", sys.argv[1], "--ranges", sys.argv[2], "--json", "--no-store"])
print(json.dumps({"rc": rc, "rss_mb": peak_rss_mb(), "summary": json.loads(out.getvalue())}))
"""


@pytest.mark.slow
def test_a_range_near_10_kda_costs_its_spectrum_not_a_pass_per_range(tmp_path: Path) -> None:
    """Peak RSS of ``analyze`` with one added range at 9.99 kDa under 1100 MB: the spectra
    it sizes (1 mDa and 0.5 mDa bins to ~10 kDa, counts and edges: ~480 MB) on a process of
    ~330 MB without them; the old per-range passes' temporaries (a float64 centre per bin and
    masks, for each of 42 ranges) reached 1279 MB here (measured). The ranges below are
    analysed alike."""
    from apt_daq.bench.stream import build_run
    from apt_daq.cli import main

    run, rrng, high = tmp_path / "r.h5", tmp_path / "r.rrng", tmp_path / "high.rrng"
    build_run(run, 200_000, calibrated=False)
    assert main(["export", str(run), "--format", "rrng", "-o", str(rrng)]) == 0
    text = rrng.read_text()
    m = re.search(r"\[Ranges\]\s*Number=(\d+)", text)
    n = int(m.group(1))
    text = text[: m.start(1)] + str(n + 1) + text[m.end(1) :]
    high.write_text(text.rstrip("\n") + f"\nRange{n + 1}=9990.0 9999.0 Vol:0.01 Ni:1\n")

    def analyse(ranges: Path) -> dict:
        res = subprocess.run([sys.executable, "-c", _CHILD, str(run), str(ranges)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        return json.loads(res.stdout.strip().splitlines()[-1])

    base, top = analyse(rrng), analyse(high)
    assert base["rc"] == top["rc"] == 0
    assert top["rss_mb"] < 1100, f"peak RSS {top['rss_mb']:.0f} MB (without the range: " \
        f"{base['rss_mb']:.0f} MB)"
    assert top["summary"]["composition"] == base["summary"]["composition"]

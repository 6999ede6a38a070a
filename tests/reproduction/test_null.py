"""The physics-free null model of the reproduction and the provenance column (fast: no
simulation)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from apt_daq.reproduce import Context, fig2, fig4, null_rows
from apt_daq.reproduce.common import RunSpec
from apt_daq.reproduce.null import O2_O, analyze_null, null_stream
from apt_daq.reproduce.table import PROVENANCE, Row, markdown


@pytest.fixture(scope="module")
def nctx(tmp_path_factory) -> Context:
    return Context(Path(tmp_path_factory.mktemp("null")), ions=20_000, seed=0, workers=1,
                   null=True, null_model=False)


def test_null_stream_is_stoichiometric_with_the_configured_shell() -> None:
    spec = RunSpec.make("t-null", "nmc811-cr-5pj.yaml", run__stop__ions=60_000, run__seed=1)
    s = null_stream(spec, None)
    names = list(s["names"])
    sp = s["sp"]
    r = np.hypot(s["x"], s["y"])
    shell = np.isin(sp, [names.index(n) for n in ("Cr+", "Cr2+", "CrO+", "Ga+")])
    # the shell is exactly outside rho_b = R0 cos a - t / cos a
    cos_a = math.cos(math.radians(8.0))
    rho_b = 45.0 * cos_a - 20.0 / cos_a
    assert r[shell].min() > rho_b and r[~shell].max() <= rho_b
    core = sp[~shell]
    n = {k: int(np.sum(core == names.index(k))) for k in names}
    assert n["O2+"] / n["O+"] == pytest.approx(O2_O, rel=0.05)
    li = n["Li+"]
    tm = sum(n[k] for k in ("Ni+", "Ni2+", "Co+", "Co2+", "Mn+", "Mn2+"))
    assert li / (li + tm) == pytest.approx(0.5, abs=0.01)
    # through the pipeline's functions and the run's range file: the nominal composition
    a = analyze_null(spec, "cylinder:25", None)
    assert a.composition.fraction("Li") == pytest.approx(0.25, abs=0.01)
    assert a.composition.fraction("O") == pytest.approx(0.50, abs=0.01)
    assert a.composition.fraction("Cr") == 0.0


def test_null_model_fails_the_physics_and_passes_the_construction(nctx) -> None:
    rows, _ = fig4.reproduce(nctx)
    by = {r.quantity.split(" (")[0].split(",")[0]: r for r in rows}
    # fixed at 2.61 in the null model (~600 O ions in the ROI here: counting noise ~7 %)
    assert by["O2+/O+ at 5 pJ"].value < 0.2
    assert not by["MRP"].passed  # no thermal tails: coated and uncoated peaks alike
    assert not by["Li+ FDA mu"].passed  # random order: no Li clustering
    # nor O2+ clustering: compared by chi2 beyond noise, the coated dataset's greater length
    # does not pass it (by mu it did: a longer random dataset reads a lower mu)
    assert not by["O2+ FDA"].passed
    rows2, _ = fig2.reproduce(nctx)
    assert all(r.passed for r in rows2)  # the shell geometry is configured
    assert all(r.label == "by construction" for r in rows2)
    assert all(r.label in PROVENANCE for r in rows + rows2)


def test_null_rows_and_markdown_columns() -> None:
    a = [Row("4", "q", "p", "1", "t", True, provenance="calibrated: x")]
    b = [Row("4", "q", "p", "2", "t", False)]
    null_rows(a, b)
    assert a[0].null_model is False and a[0].null_simulated == "2"
    md = markdown(a)
    assert "| provenance | null model |" in md and "| calibrated: x | fails (2) |" in md
    assert "null model passes 0/1" in md
    with pytest.raises(RuntimeError):
        null_rows(a, [*b, *b])
    with pytest.raises(ValueError):
        Row("4", "q", "p", "1", "t", True, provenance="guessed")

"""The run figures as a scientist reads them (issue 19, "Figures").

One simulated 200 000-ion run of the shipped NMC811 + Cr config, analysed once; each test
checks one of the problems the issue lists: the spectrum's y label, colours per ion, shading
under the peak only, peak labels, isotope markers, a legend off the data, a profile with enough
points and counting errors, colour bars and axis labels on the slices, SVG/PDF output and
``--only``, figures returned as Figures, and no backend forced on import.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from apt_daq.cli import main

ROOT = Path(__file__).resolve().parents[2]
RUN_YAML = ROOT / "configs" / "runs" / "nmc811-cr-5pj.yaml"
MAIN_IONS = ("Li+", "O+", "O2+", "Ni2+", "Cr2+")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fig") / "run.h5"
    assert main(["run", str(RUN_YAML), "--ions", "200000", "-o", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def res(run: Path):
    from apt_daq.analysis.report import analyze

    return analyze(run, store=False)


@pytest.fixture(scope="module")
def spectrum(res):
    from apt_daq.plots import mass_spectrum

    fig = mass_spectrum(res.spectrum.counts, res.spectrum.edges, res.ranges, title="t")
    fig.draw_without_rendering()
    return fig


def _gid(fig: Figure, prefix: str) -> dict:
    ax = fig.axes[0]
    return {a.get_gid()[len(prefix) :]: a for a in ax.get_children()
            if isinstance(a.get_gid(), str) and a.get_gid().startswith(prefix)}  # fmt: skip


def _rebinned(res, bin_da: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    k = round(bin_da / (res.spectrum.edges[1] - res.spectrum.edges[0]))
    n = len(res.spectrum.counts) // k * k
    return res.spectrum.counts[:n].reshape(-1, k).sum(1), res.spectrum.edges[: n + 1 : k]


# ---------------------------------------------------------------- spectrum


def test_spectrum_y_label_names_the_bin_width(spectrum) -> None:
    assert spectrum.axes[0].get_ylabel() == "counts / 0.01 Da"  # was "counts / 0.001x10 Da"
    assert spectrum.axes[0].get_yscale() == "log"


def test_ranges_shaded_per_ion_in_distinct_colours(res, spectrum) -> None:
    fills = _gid(spectrum, "range:")
    assert set(fills) == set(res.ranges.ions)
    rgb = {n: np.array(to_rgb(fills[n].get_facecolor())) for n in ("Ni+", "Ni2+", "NiO+")}
    for a, b in itertools.combinations(rgb, 2):  # the issue: all three were the same green
        assert np.abs(rgb[a] - rgb[b]).sum() > 0.3, (a, b, rgb[a], rgb[b])
    every = [to_rgb(f.get_facecolor()) for f in fills.values()]
    assert len(set(every)) == len(every), "two ions share a colour"


def test_shading_only_under_the_peak(res, spectrum) -> None:
    ax = spectrum.axes[0]
    # no full-height band (axvspan) anywhere: every range fill stays below its own counts
    c, e = _rebinned(res)
    fills = _gid(spectrum, "range:")
    assert not [p for p in ax.patches if p.get_transform() == ax.get_xaxis_transform()]
    for name, f in fills.items():
        xy = f.get_path().vertices
        lo, hi = xy[:, 0].min(), xy[:, 0].max()
        sel = (e[:-1] < hi) & (e[1:] > lo)
        assert xy[:, 1].max() <= max(c[sel].max(), 0.5) * (1 + 1e-9), name


def test_main_peaks_labelled_without_overlap(spectrum) -> None:
    from apt_daq.isotopes import isotopologues

    labels = _gid(spectrum, "label:")
    assert set(MAIN_IONS) <= set(labels), sorted(labels)
    boxes = [t.get_window_extent() for t in labels.values()]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    ax_box = spectrum.axes[0].get_window_extent()
    for name, t in labels.items():  # at its apex: centred on the peak, inside the axes
        bb = t.get_window_extent()
        assert ax_box.x0 <= bb.x0 and bb.x1 <= ax_box.x1 and bb.y1 <= ax_box.y1, name
    m58 = max(isotopologues({"Ni": 1}, 2), key=lambda t: t[1])[0]  # 58Ni2+, 28.97 Da
    assert abs(labels["Ni2+"].get_position()[0] - m58) < 0.02


def test_isotope_markers_at_predicted_positions(spectrum) -> None:
    from apt_daq.isotopes import isotopologues

    marks = _gid(spectrum, "isotopes:")
    assert {"Ni+", "Ni2+", "Li+", "O2+"} <= set(marks)
    x = np.asarray(marks["Ni+"].get_xdata())
    want = [m for m, p in isotopologues({"Ni": 1}, 1) if p > 0.01]  # 58, 60, 61, 62, 64
    for m in want:
        assert np.min(np.abs(x - m)) < 1e-6, m
    ni2 = np.asarray(marks["Ni2+"].get_xdata())
    assert np.min(np.abs(ni2 - want[0] / 2)) < 1e-6


def test_legend_does_not_cover_the_data(spectrum) -> None:
    ax = spectrum.axes[0]
    assert ax.get_legend() is None  # none inside the axes
    data = ax.get_window_extent()
    x60, x80 = ax.transData.transform([[60, 1], [80, 1]])[:, 0]
    for leg in spectrum.legends:
        bb = leg.get_window_extent()
        assert not bb.overlaps(data), "a legend over the axes"
        assert bb.x1 <= x60 or bb.x0 >= x80 or bb.y1 <= data.y0 or bb.y0 >= data.y1


# ---------------------------------------------------------------- profile, slices


def test_profile_has_enough_points_with_counting_errors(res) -> None:
    from apt_daq.plots import profile_plot, run_profile

    prof = run_profile(res)
    # the issue: 4 points for a 200k-ion run. 30 points, or as many 0.1 nm bins as the depth
    # holds (thinner is below the method's depth resolution, about one atomic plane: this
    # run's ROI spans ~2.6 nm since the reconstruction takes the run's own field)
    z = np.asarray(prof["z_nm"])
    depth = float(z.max() - z.min()) + float(prof.get("bin_nm", 0.1))
    assert len(z) >= 20 and len(z) >= min(30, int(depth / 0.1 + 1e-6))
    n = prof["atoms"]
    for el in ("O", "Li", "Ni"):
        f = prof["fraction"][el]
        np.testing.assert_allclose(prof["error"][el], np.sqrt(f * (1 - f) / n), rtol=1e-9)
    fig = profile_plot(prof)
    conts = fig.axes[0].containers
    assert conts and all(len(c.lines[0].get_xdata()) == len(prof["z_nm"]) for c in conts)
    assert all(c.has_yerr for c in conts)
    # the composition the profile averages to is the analysis' own (same ROI, same ions)
    tot = {el: float((prof["fraction"][el] * n).sum() / n.sum()) for el in ("O", "Li", "Ni")}
    for el, v in tot.items():
        assert v == pytest.approx(res.summary["composition"][el]["fraction"], abs=0.01)


def test_slices_have_a_colour_bar_and_nm_axes(res) -> None:
    from apt_daq.plots import slices_plot

    fig = slices_plot(res.slices, res.ranges)
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(bars) == 1
    fig.draw_without_rendering()
    ticks = [t.get_text() for t in bars[0].get_yticklabels()]
    assert len(ticks) == len(res.ranges.ions) and "Ni$^{2+}$" in ticks
    xz, xy = (a for a in fig.axes if a.get_label() != "<colorbar>")
    assert xz.get_xlabel() == "x (nm)" and xy.get_xlabel() == "x (nm)"
    assert xy.get_ylabel() == "y (nm)"
    z = xz.get_ylabel()
    assert z.startswith("z") and "depth" in z and z.endswith("(nm)")  # was a bare "z (nm)"
    assert xz.yaxis_inverted()  # depth grows downwards, as the label says


# ---------------------------------------------------------------- the command


def test_plot_formats_and_only(run: Path, tmp_path: Path) -> None:
    for fmt, magic in (("svg", b"<?xml"), ("pdf", b"%PDF")):
        out = tmp_path / fmt
        assert main(["plot", str(run), "-o", str(out), "--format", fmt]) == 0
        files = sorted(p.name for p in out.iterdir())
        assert files == sorted(f"{n}.{fmt}" for n in ("spectrum", "hitmap", "fda", "profile", "multihit",
                                                      "slices"))  # fmt: skip
        for p in out.iterdir():
            assert p.stat().st_size > 5_000 and p.read_bytes().startswith(magic), p
    out = tmp_path / "only"
    assert main(["plot", str(run), "-o", str(out), "--only", "slices", "--only", "hitmap"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["hitmap.png", "slices.png"]


def test_plot_help_lists_the_figure_names(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    text = capsys.readouterr().out
    for name in ("spectrum", "hitmap", "fda", "profile", "slices", "svg", "pdf", "--only"):
        assert name in text


# ---------------------------------------------------------------- Figures, no backend


def test_every_plot_function_returns_a_figure(res) -> None:
    import matplotlib.pyplot as plt

    from apt_daq import plots
    from apt_daq.campaign_plots import calibration_figure

    before = plt.get_fignums()
    every = plots.figures(res)  # once: each call draws the full spectrum again (~5 s)
    figs = [
        plots.mass_spectrum(res.spectrum.counts, res.spectrum.edges, res.ranges),
        plots.hit_map(*res.hitmap),
        plots.fda_plot(res.fda),
        plots.profile_plot(res.profile),
        plots.slices_plot(res.slices, res.ranges),
        calibration_figure([]),
        *every.values(),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    assert set(every) == set(plots.FIGURES)
    # not registered with pyplot: a figure returned in Jupyter shows once, and is not leaked;
    # it shows through IPython's rich display, pyplot or not
    assert plt.get_fignums() == before
    assert figs[1]._repr_png_().startswith(b"\x89PNG")


@pytest.mark.parametrize("module", ["apt_daq.plots", "apt_daq.campaign_plots"])
def test_import_and_draw_leave_the_backend_alone(module: str, tmp_path: Path) -> None:
    code = f"""
import matplotlib
assert matplotlib.rcParams._get_backend_or_none() is None  # nothing chosen yet
import {module}
assert matplotlib.rcParams._get_backend_or_none() is None, matplotlib.get_backend()
matplotlib.use("pdf")  # as a notebook or an application would pick its own
before = matplotlib.get_backend()
import importlib
importlib.reload({module})
from apt_daq.campaign_plots import calibration_figure
calibration_figure([], out={str(tmp_path / "c.png")!r})
from apt_daq.plots import hit_map
import numpy as np
hit_map(np.ones((4, 4)), np.arange(5.0), np.arange(5.0), {str(tmp_path / "h.png")!r})
after = matplotlib.get_backend()
assert before == after, (before, after)
print("ok", before)
"""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "ok pdf"
    assert (tmp_path / "c.png").stat().st_size > 0 and (tmp_path / "h.png").stat().st_size > 0

"""Matplotlib figures of an analysed run: mass spectrum, hit map, FDA, profile and slices.

Every function returns a :class:`matplotlib.figure.Figure` (a :class:`RunFigure`) built
without pyplot: nothing here selects a backend or registers the figure with pyplot, so the
functions work the same in a script, a headless CLI (figures are saved through the file
format's own renderer) and Jupyter (a returned figure shows once, as the cell's result). Give ``path`` to also save it; the
format follows the suffix (``.png``, ``.svg``, ``.pdf``).

:func:`figures` draws all of a :class:`apt_daq.analysis.report.RunAnalysis` (by the names of
:data:`FIGURES`), :func:`plot_all` saves them, as ``apt-daq plot`` does.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps, patheffects
from matplotlib.colors import BoundaryNorm, ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from apt_daq.analysis.fda import FdaResult
from apt_daq.analysis.multihit import saxey_plot
from apt_daq.analysis.profile import (  # re-exported: profiles drawn here are computed there
    PROFILE_MIN_POINTS,
    depth_profile,
    profile_bins,
)
from apt_daq.errors import UserError
from apt_daq.rangetable import RangeTable

FIGURES: dict[str, str] = {
    "spectrum": "mass spectrum, log counts, ranges shaded per ion, peak labels, isotope markers",
    "hitmap": "detector hit map with colour bar",
    "fda": "frequency distribution analysis against the binomial (when the run has FDA ions)",
    "profile": "concentration profile along z in the ROI, with counting errors",
    "slices": "XZ and XY slices, ions coloured by species, with a colour key",
    "multihit": "correlation (Saxey) histogram of multi-hit pairs; events by multiplicity",
}
"""Figure names (``apt-daq plot --only NAME``) and what each shows."""

FORMATS = ("png", "svg", "pdf")
SPECTRUM_BIN_DA = 0.01
DPI = 150


# ---------------------------------------------------------------- helpers


class RunFigure(Figure):
    """A :class:`~matplotlib.figure.Figure` that Jupyter shows as the cell's result (IPython's
    rich display, ``_repr_png_``) without pyplot: the figures here are not registered with
    pyplot, so nothing shows them twice, leaks them, or needs a backend chosen for them. When
    pyplot's inline backend is active its own display of Figures takes precedence."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100)
        return buf.getvalue()


def _save(fig: Figure, path: str | Path | None) -> None:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)


def ion_label(name: str) -> str:
    """An ion name as mathtext: ``"Ni2+"`` -> Ni$^{2+}$, ``"O2+"`` -> O$_{2}$$^{+}$."""
    from apt_daq.isotopes import parse_ion

    try:
        formula, charge = parse_ion(name)
    except ValueError:
        return name
    text = "".join(el + (f"$_{{{n}}}$" if n > 1 else "") for el, n in formula.items())
    return text + f"$^{{{charge if charge > 1 else ''}+}}$"


def _palette(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` distinct colours: tab10, then the light half of tab20, then Dark2, then a hue wheel."""
    base = list(colormaps["tab10"].colors)
    base += [colormaps["tab20"].colors[i] for i in range(1, 20, 2)]
    base += list(colormaps["Dark2"].colors)
    out = [to_rgba(c) for c in base[:n]]
    for k in range(len(out), n):  # beyond 28 ions: golden-ratio hues
        out.append(to_rgba(colormaps["hsv"]((k * 0.618034) % 1.0)))
    return out


def ion_colours(ranges: RangeTable) -> dict[str, tuple[float, float, float, float]]:
    """A colour per ion (not per element): the range file's colours when they already tell
    every ion apart, else a qualitative palette in the order of :attr:`RangeTable.ions`."""
    ions = ranges.ions
    own = {n: ranges.colour[ranges.names.index(n)].upper() for n in ions}
    if len(set(own.values())) == len(ions):
        return {n: to_rgba("#" + c) for n, c in own.items()}
    return dict(zip(ions, _palette(len(ions)), strict=True))


def _overlaps(box, boxes) -> bool:
    return any(box.overlaps(b) for b in boxes)


# ---------------------------------------------------------------- spectrum


def _width_text(w: float) -> str:
    return np.format_float_positional(float(f"{w:.6g}"), trim="-")


def mass_spectrum(counts: np.ndarray, edges: np.ndarray, ranges: RangeTable | None = None,
                  path: str | Path | None = None, *, bin_da: float = SPECTRUM_BIN_DA,
                  title: str = "", isotopes: bool = True) -> Figure:  # fmt: skip
    """Log-scale spectrum in bins of ``bin_da`` (the histogram's bins summed), ranges shaded
    under their peak in one colour per ion, each ion labelled at its highest peak, and
    markers at the predicted isotope positions of every ranged ion (height: the ion's
    measured apex times the natural abundance ratio). The ion key sits outside the axes."""
    width = float(edges[1] - edges[0])
    rebin = max(1, round(bin_da / width))
    n = len(counts) // rebin * rebin
    c = np.asarray(counts[:n], dtype=np.float64).reshape(-1, rebin).sum(axis=1)
    e = np.asarray(edges[: n + 1 : rebin], dtype=np.float64)
    floor = 0.5
    top = max(1.0, float(c.max()) if len(c) else 1.0)

    fig = RunFigure(figsize=(12, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.stairs(np.maximum(c, floor), e, baseline=None, color="k", lw=0.5, zorder=3)
    ax.set_yscale("log")
    ax.set_ylim(floor, top * 15)  # head room for the labels
    # to the last peak (ranged or not), not the sparse background beyond it: the spectrum
    # reaches every m/n, and detector background stretches over hundreds of Da
    nz = np.flatnonzero(c)
    right = e[min(len(e) - 1, nz[-1] + 2)] if len(nz) else e[-1]
    if len(c) > 8:
        from apt_daq.pipeline.peaks import find_peaks

        pk = find_peaks(c, e)
        right = min(right, float(pk.max()) + 2) if len(pk) else right
    if ranges is not None and len(ranges):
        right = max(right, float(ranges.hi_da.max()) + 2)
    ax.set_xlim(0, right)
    ax.set_xlabel("mass-to-charge-state ratio (Da)")
    ax.set_ylabel(f"counts / {_width_text(width * rebin)} Da")
    ax.set_title(title or "mass spectrum")

    handles: list[Any] = []
    peaks: list[tuple[float, float, float, str]] = []  # (apex counts, apex m, range index, ion)
    if ranges is not None and len(ranges):
        colours = ion_colours(ranges)
        best: dict[str, tuple[float, float, int]] = {}
        for i, name in enumerate(ranges.names):
            lo, hi = float(ranges.lo_da[i]), float(ranges.hi_da[i])
            a = max(0, int(np.searchsorted(e, lo, side="right")) - 1)
            b = min(len(c), int(np.searchsorted(e, hi, side="left")))
            if b <= a:
                continue
            sub_e = e[a : b + 1].copy()
            sub_e[0], sub_e[-1] = max(sub_e[0], lo), min(sub_e[-1], hi)
            ax.stairs(np.maximum(c[a:b], floor), sub_e, baseline=floor, fill=True,
                      color=colours[name], alpha=0.75, lw=0, zorder=2, gid=f"range:{name}")
            # the peak's own outline in the ion's colour: a ranged peak is a few bins wide,
            # far narrower than a pixel of the full spectrum, so the fill alone is not seen
            ax.stairs(np.maximum(c[a:b], floor), sub_e, baseline=floor, color=colours[name],
                      lw=1.2, zorder=4)
            k = a + int(np.argmax(c[a:b]))
            if name not in best or c[k] > best[name][0]:
                best[name] = (float(c[k]), 0.5 * (e[k] + e[k + 1]), i)
        for name in ranges.ions:
            handles.append(Patch(color=colours[name], alpha=0.75, label=ion_label(name)))
        if isotopes:
            _isotope_markers(ax, ranges, best, colours, floor, c, e)
            handles.append(Line2D([], [], ls="none", marker="_", ms=10, mew=2, color="white",
                                  label="isotopes, predicted", path_effects=[
                                      patheffects.withStroke(linewidth=3.5, foreground="0.15")]))
        peaks = [(h, m, i, nm) for nm, (h, m, i) in best.items()]
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False,
                   title="ions", title_fontsize=8)
    if peaks:
        _label_peaks(fig, ax, peaks, c, e, floor)
    _save(fig, path)
    return fig


def _isotope_markers(ax, ranges: RangeTable, best: dict, colours: dict, floor: float,
                     c: np.ndarray, e: np.ndarray) -> None:
    from apt_daq.isotopes import isotopologues
    from apt_daq.pipeline.peaks import pattern_scale

    for name, (apex, m_apex, i) in best.items():
        if apex < 2 * floor:
            continue
        try:
            pattern = isotopologues(ranges.composition[i], int(ranges.charge[i]), 1e-5)
        except (ValueError, KeyError):
            continue
        if not pattern:
            continue
        m = np.array([p[0] for p in pattern])
        p = np.array([p[1] for p in pattern])
        h = p * pattern_scale(m, p, apex, m_apex, c, e)
        keep = h >= 2 * floor
        if keep.any():
            ax.plot(m[keep], h[keep], ls="none", marker="_", ms=10, mew=2, color=colours[name],
                    zorder=5, gid=f"isotopes:{name}",
                    path_effects=[patheffects.withStroke(linewidth=3.5, foreground="0.15")])


def _label_peaks(fig: Figure, ax, peaks: list, c: np.ndarray, e: np.ndarray,
                 floor: float) -> None:  # fmt: skip
    """Ion names at the apex of each ion's highest peak, tallest first; a label that would
    overlap one already placed moves up (with a leader line) or, if it cannot, is left out."""
    bg = float(np.median(c[c > 0])) if (c > 0).any() else 0.0
    fig.draw_without_rendering()  # the layout, so display coordinates hold
    to_data = ax.transData.inverted()
    ax_box = ax.get_window_extent()
    placed: list[Any] = []
    for apex, m, _i, name in sorted(peaks, key=lambda t: -t[0]):
        if apex < max(10.0, 10.0 * bg):
            continue
        t = ax.text(m, apex, ion_label(name), ha="center", va="bottom", fontsize=8, zorder=5,
                    gid=f"label:{name}",
                    bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
        box = t.get_window_extent()
        # clear the spectrum under the label's width, not only its own apex
        x0, x1 = to_data.transform([[box.x0, 0], [box.x1, 0]])[:, 0]
        a = max(0, int(np.searchsorted(e, x0)) - 1)
        b = min(len(c), int(np.searchsorted(e, x1)) + 1)
        under = max(apex, float(c[a:b].max()) if b > a else apex)
        y0 = ax.transData.transform([[m, under]])[0, 1] + 3
        ok = False
        for level in range(4):
            y = y0 + level * (box.height + 2)
            t.set_y(to_data.transform([[0, y]])[0, 1])
            box = t.get_window_extent()
            if box.y1 > ax_box.y1 or box.x0 < ax_box.x0 or box.x1 > ax_box.x1:
                break
            if not _overlaps(box, placed):
                ok = True
                break
        if not ok:
            t.remove()
            continue
        placed.append(box)
        y_text = to_data.transform([[0, box.y0]])[0, 1]
        if y_text > apex * 1.6:  # moved up: a leader line down to its apex
            ax.plot([m, m], [apex * 1.1, y_text], color="0.5", lw=0.5, zorder=4)


# ---------------------------------------------------------------- hit map, FDA


def hit_map(counts: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray,
            path: str | Path | None = None) -> Figure:  # fmt: skip
    fig = RunFigure(figsize=(6, 5), layout="constrained")
    ax = fig.add_subplot()
    im = ax.pcolormesh(x_edges, y_edges, counts.T, cmap="viridis", shading="flat")
    ax.set_aspect("equal")
    ax.set_xlabel("detector x (mm)")
    ax.set_ylabel("detector y (mm)")
    ax.set_title("detector hit map")
    dx = float(x_edges[1] - x_edges[0])
    fig.colorbar(im, ax=ax, label=f"hits per {dx:.2g} x {dx:.2g} mm pixel")
    _save(fig, path)
    return fig


def fda_plot(results: dict[str, FdaResult], path: str | Path | None = None) -> Figure:
    """Observed block-composition distribution (solid) and its binomial (dashed), per species."""
    fig = RunFigure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for i, (sp, r) in enumerate(results.items()):
        col = f"C{i}"
        k = np.arange(len(r.observed))
        ax.plot(k, r.observed, "-", color=col, label=f"{ion_label(sp)}: $\\mu$ = {r.mu:.2f}")
        ax.plot(k, r.expected, "--", color=col)
        if r.blocks:
            hi = np.flatnonzero((r.observed > 0) | (r.expected > 0.5))
            if len(hi):
                ax.set_xlim(0, max(ax.get_xlim()[1] if i else 0, hi[-1] + 2))
    block = next(iter(results.values())).block_ions if results else 100
    ax.set_xlabel(f"ions of the species per block of {block}")
    ax.set_ylabel("blocks")
    ax.set_title("frequency distribution (dashed: binomial)")
    if results:
        ax.legend()
    _save(fig, path)
    return fig


# ---------------------------------------------------------------- profile


def profile_plot(profile: dict, path: str | Path | None = None,
                 elements: list[str] | None = None, title: str = "") -> Figure:  # fmt: skip
    """Concentration (at.%) against depth, one series per element above 0.5 at.%, with the
    counting error of each bin as error bars."""
    fig = RunFigure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    z = np.asarray(profile["z_nm"])
    for k, el in enumerate(elements or list(profile["fraction"])):
        f = np.asarray(profile["fraction"][el])
        if len(f) and np.nanmax(f) > 0.005:
            ax.errorbar(z, 100 * f, yerr=100 * np.asarray(profile["error"][el]), label=el,
                        color=f"C{k % 10}", marker="o", ms=3, lw=1, elinewidth=0.8, capsize=2)
    ax.set_xlabel("depth z (nm)")
    ax.set_ylabel("concentration (at.%)")
    bin_nm = profile.get("bin_nm")
    if bin_nm is None and len(z) > 1:
        bin_nm = float(np.min(np.diff(z)))
    atoms = np.asarray(profile.get("atoms", []))
    detail = []
    if bin_nm:
        detail.append(f"bins of {bin_nm:.2g} nm")
    if len(atoms):
        detail.append(f"{atoms.sum():,.0f} atoms")
    ax.set_title(title or "concentration profile along z"
                 + (f" ({', '.join(detail)}; error bars: counting)" if detail else ""),
                 fontsize=10)  # fmt: skip
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return fig


# ---------------------------------------------------------------- slices


def slices_plot(slices: dict[str, np.ndarray], ranges: RangeTable,
                path: str | Path | None = None, thickness_nm: float = 5.0) -> Figure:  # fmt: skip
    """XZ slice (|y| < t/2) and XY slice (t around the median depth): ions coloured by species
    (one colour per ion, as in the spectrum) with a colour bar naming them; depth grows down."""
    x, y, z = slices["x"], slices["y"], slices["z"]
    rng_idx = slices["ion"].astype(np.int64)
    ok = (rng_idx >= 0) & np.isfinite(z)
    ions = ranges.ions
    colours = ion_colours(ranges)
    ion_of_range = ranges.ion_index().astype(np.int64)
    species = np.where(ok, ion_of_range[np.clip(rng_idx, 0, max(len(ranges) - 1, 0))], -1)
    cmap = ListedColormap([colours[n] for n in ions])
    norm = BoundaryNorm(np.arange(len(ions) + 1) - 0.5, len(ions))

    fig = RunFigure(figsize=(13, 5.5), layout="constrained")
    a1, a2 = fig.subplots(1, 2, width_ratios=[1.5, 1])
    s = ok & (np.abs(y) < thickness_nm / 2)
    sc = a1.scatter(x[s], z[s], s=0.4, c=species[s], cmap=cmap, norm=norm, lw=0,
                    rasterized=True)  # fmt: skip
    a1.set_xlabel("x (nm)")
    a1.set_ylabel("z, depth (nm)")
    a1.invert_yaxis()
    a1.set_aspect("equal")
    a1.set_title(f"XZ slice, |y| < {thickness_nm / 2:g} nm")
    zm = float(np.nanmedian(z[ok])) if ok.any() else 0.0
    s = ok & (np.abs(z - zm) < thickness_nm / 2)
    a2.scatter(x[s], y[s], s=0.6, c=species[s], cmap=cmap, norm=norm, lw=0, rasterized=True)
    a2.set_xlabel("x (nm)")
    a2.set_ylabel("y (nm)")
    a2.set_aspect("equal")
    a2.set_title(f"XY slice, z = {zm - thickness_nm / 2:.1f} to {zm + thickness_nm / 2:.1f} nm")
    cb = fig.colorbar(sc, ax=[a1, a2], ticks=np.arange(len(ions)), shrink=0.9, aspect=30)
    cb.ax.set_yticklabels([ion_label(n) for n in ions], fontsize=8)
    cb.set_label("ion")
    _save(fig, path)
    return fig


# ---------------------------------------------------------------- a whole run

def _roi_mask(res, roi: str | None, sl: dict[str, np.ndarray]) -> np.ndarray | bool | None:
    """The analysis' ROI over the slice sample: a mask, None (all ions), or False when the
    ROI the analysis used cannot be known."""
    from apt_daq.roi import parse_roi

    used = res.summary.get("roi", "all ions")
    asked = parse_roi(roi) if roi is not None else None
    placed = parse_roi(res.summary.get("roi_spec"))  # as the analysis placed it (a box's depth)
    if placed is not None and (roi is None or (asked and used.startswith(asked.describe()))):
        return placed.mask(sl["x"], sl["y"], sl["z"])
    if roi is None:
        try:
            from apt_daq.io.store import RunReader
            from apt_daq.pipeline.ions import run_analysis_config

            with RunReader(res.summary["file"]) as r:
                roi = run_analysis_config(r).roi
        except Exception:  # a missing or foreign file: fall back
            return None if used == "all ions" else False
    obj = parse_roi(roi)
    if (obj.describe() if obj is not None else "all ions") != used:
        return False
    return None if obj is None else obj.mask(sl["x"], sl["y"], sl["z"])


def run_profile(res, roi: str | None = None) -> dict:
    """The profile to draw for a :class:`RunAnalysis`: the analysis' own (1 nm bins, all ions
    of the ROI) when it has :data:`PROFILE_MIN_POINTS` points, else one rebinned from the
    slice sample (every ion of runs up to ``SLICE_POINTS`` ions) in the same ROI."""
    prof = res.profile
    if len(prof["z_nm"]) >= PROFILE_MIN_POINTS:
        return prof
    sl = res.slices
    if not len(sl.get("z", ())):
        return prof
    inside = _roi_mask(res, roi, sl)
    if inside is False:
        return prof
    fine = depth_profile(sl["z"], sl["ion"].astype(np.int64), res.ranges, inside)
    return fine if len(fine["z_nm"]) > len(prof["z_nm"]) else prof


def _imported(res) -> dict:
    """/meta ``imported`` of the run (the file an imported run came from), {} otherwise."""
    try:
        from apt_daq.io.store import RunReader

        with RunReader(res.summary["file"]) as r:
            return r.meta.get("imported") or {}
    except Exception:  # a missing or foreign file: nothing to say
        return {}


def unavailable(res, name: str, roi: str | None = None) -> str | None:
    """Why the figure ``name`` of a :class:`apt_daq.analysis.report.RunAnalysis` cannot be
    drawn (it would be empty: a blank hit map, no FDA species, no multi-hit events...), or
    None when it can."""
    imp = _imported(res) if name == "hitmap" and not np.asarray(res.hitmap[0]).any() else None
    if imp is not None and not {"det_x", "det_y"} <= set(imp.get("fields") or ["det_x", "det_y"]):
        return (f"the imported {imp.get('format', '').upper()} file has no detector "
                f"coordinates (its fields: {', '.join(imp['fields'])})")
    if imp is not None:
        return "no hit has detector coordinates on the detector"
    if name == "fda" and not res.fda:
        return "the run's analysis.fda_ions are not among its ranges"
    if name == "profile" and not len(run_profile(res, roi)["z_nm"]):
        return "no ranged ions in the ROI"
    sl = res.slices
    if name == "slices" and not ((np.asarray(sl.get("ion", []), np.float64) >= 0)
                                 & np.isfinite(np.asarray(sl.get("z", []), np.float64))).any():
        return f"no ranged ion has a position (positions: {res.summary.get('positions')})"
    if name == "multihit" and res.extras.get("multihit") is None:
        return (res.summary.get("multihit") or {}).get("reason") or "no multi-hit events counted"
    return None


def figures(res, only: list[str] | tuple[str, ...] | None = None, roi: str | None = None,
            skipped: dict[str, str] | None = None) -> dict[str, Figure]:  # fmt: skip
    """The figures of a :class:`apt_daq.analysis.report.RunAnalysis` by name (:data:`FIGURES`);
    ``only`` picks some. A figure that cannot be drawn (:func:`unavailable`: a hit map of a run
    without detector coordinates, FDA without FDA ions, a profile without ranged ions,
    multi-hits of a file without pulses) is left out, its reason put in ``skipped`` (name ->
    why), or raises UserError ("no hitmap: why") when ``only`` asks for it by name (before
    any is drawn)."""
    names = list(only) if only else list(FIGURES)
    bad = [n for n in names if n not in FIGURES]
    if bad:
        raise UserError(f"unknown figure {', '.join(bad)}; known: {', '.join(FIGURES)}")
    why = {n: w for n in names if (w := unavailable(res, n, roi)) is not None}
    if only and why:
        raise UserError("; ".join(f"no {'FDA' if n == 'fda' else n}: {w}"
                                  for n, w in why.items()))
    if skipped is not None:
        skipped.update(why)
    title = Path(res.summary["file"]).name
    draw = {
        "spectrum": lambda: mass_spectrum(res.spectrum.counts, res.spectrum.edges, res.ranges,
                                          title=title),
        "hitmap": lambda: hit_map(*res.hitmap),
        "fda": lambda: fda_plot(res.fda),
        "profile": lambda: profile_plot(run_profile(res, roi)),
        "slices": lambda: slices_plot(res.slices, res.ranges),
        "multihit": lambda: saxey_plot(res.extras["multihit"], title, RunFigure),
    }
    return {name: draw[name]() for name in names if name not in why}


def plot_all(res, out: str | Path, fmt: str = "png", only: list[str] | None = None,
             roi: str | None = None, skipped: dict[str, str] | None = None) -> list[Path]:  # fmt: skip
    """Save the figures of :func:`figures` into folder ``out`` as ``NAME.FMT``; those that
    cannot be drawn are not written (``skipped``: name -> why; a UserError for one ``only``
    asks for, before anything is written)."""
    if fmt not in FORMATS:
        raise UserError(f"format {fmt!r}: one of {', '.join(FORMATS)}")
    figs = figures(res, only, roi, skipped)
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, fig in figs.items():
        _save(fig, Path(out) / f"{name}.{fmt}")
    return [Path(out) / f"{name}.{fmt}" for name in figs]


__all__ = ["FIGURES", "FORMATS", "RunFigure", "depth_profile", "fda_plot", "figures", "hit_map",
           "ion_colours", "ion_label", "mass_spectrum", "plot_all", "profile_bins", "profile_plot",
           "run_profile", "slices_plot", "unavailable"]  # fmt: skip

"""Calibration plots drawn from a campaign's results table (the seed paper's Fig 5 and 6).

O2+/O+ (the molecular-ion ratio) stands for the apex field: it falls as the laser energy rises.
Against it: (a) Li/(Li+Ni+Co+Mn), (b) Ni/(Ni+Co+Mn) and O/(Li+O+Ni+Co+Mn), each with the
specimen's stoichiometric value as a dashed line. The cation ratios are ratios of measured
atomic fractions (so of decomposed atom counts); their error bars propagate the composition
errors of the table to first order.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

X_KEY = "O2+/O+"
CATIONS = ("Li", "Ni", "Co", "Mn")
RATIOS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # name: (numerator elements, denominator elements)
    "Li/(Li+Ni+Co+Mn)": (("Li",), ("Li", "Ni", "Co", "Mn")),
    "Ni/(Ni+Co+Mn)": (("Ni",), ("Ni", "Co", "Mn")),
    "O/(Li+O+Ni+Co+Mn)": (("O",), ("Li", "O", "Ni", "Co", "Mn")),
}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def molecular_ratio(row: dict[str, Any]) -> float | None:
    """O2+/O+ of a row: the analysis' ratio column, else from the ion counts."""
    v = _num(row.get(f"ratio.{X_KEY}"))
    if v is not None:
        return v
    o2, o1 = _num(row.get("count.O2+")), _num(row.get("count.O+"))
    return o2 / o1 if o2 is not None and o1 else None


def element_ratio(row: dict[str, Any], name: str) -> tuple[float | None, float | None]:
    """(value, 1-sigma) of one of :data:`RATIOS` from a row's composition columns; the
    analysis' own ``ratio.NAME`` column wins when present."""
    num_el, den_el = RATIOS[name]
    direct = _num(row.get(f"ratio.{name}"))
    if direct is not None and _num(row.get(f"ratio.{name}.err")) is not None:
        return direct, _num(row.get(f"ratio.{name}.err"))
    f = {el: _num(row.get(f"comp.{el}")) for el in den_el}
    err = {el: _num(row.get(f"comp.{el}.err")) or 0.0 for el in den_el}
    known = {el: v for el, v in f.items() if v is not None}
    if len(known) < len(f):
        return direct, None
    num = sum(known[e] for e in num_el)
    den = sum(known.values())
    if den <= 0:
        return direct, None
    r = num / den
    # d r / d f_e = (1[e in num] - r) / den, errors taken as independent
    sigma = math.sqrt(sum(((e in num_el) - r) ** 2 * err[e] ** 2 for e in den_el)) / den
    return (direct if direct is not None else r), sigma


RAMP_UP_LIMIT = 0.5  # a point with more of its ions in the ramp-up measures the ramp-up


def mostly_ramp_up(row: dict[str, Any]) -> bool:
    """True if more than half the point's ions were detected before the detection rate first
    reached half its target (``ramp_up_share``, from the run's log): they are mostly the
    ramp-up's (detector background, the field still rising), not the acquisition's."""
    share = _num(row.get("ramp_up_share"))
    return share is not None and share > RAMP_UP_LIMIT


def ramp_up_warning(rows: list[dict[str, Any]]) -> str | None:
    """One line naming the points that are mostly ramp-up, or None."""
    bad = [r for r in rows if mostly_ramp_up(r)]
    if not bad:
        return None
    names = ", ".join(str(r.get("point", "?")) for r in bad)
    return (f"{len(bad)} of {len(rows)} points mostly ramp-up (> {RAMP_UP_LIMIT:.0%} of "
            f"their ions before the rate reached half its target; points {names}): their "
            "ratios are the ramp-up's; run more ions per point")


def usable(row: dict[str, Any]) -> bool:
    return (not row.get("error") and row.get("state") in ("done", "failed")
            and molecular_ratio(row) is not None)


def has_calibration_data(rows: list[dict[str, Any]]) -> bool:
    return any(usable(r) and element_ratio(r, "Li/(Li+Ni+Co+Mn)")[0] is not None for r in rows)


def calibration_figure(rows: list[dict[str, Any]], expected: dict[str, float] | None = None,
                       out: str | Path | None = None, *, title: str = "") -> Figure:
    """Fig 5 from a results table: ratios against O2+/O+ with dashed stoichiometric lines.

    Points are coloured by laser energy (pJ); a specimen that fractured (state ``failed``)
    is drawn hollow; each ratio and specimen in a panel has its own marker.
    """
    import matplotlib

    from apt_daq.plots import RunFigure

    expected = expected or {}
    good = [r for r in rows if usable(r)]
    # a Figure outside pyplot: no backend chosen here, and in Jupyter the returned figure
    # shows once, as the cell's result
    fig = RunFigure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = [(axes[0], ["Li/(Li+Ni+Co+Mn)"]),
              (axes[1], ["Ni/(Ni+Co+Mn)", "O/(Li+O+Ni+Co+Mn)"])]
    lasers = [_num(r.get("laser_pj")) for r in good]
    lasers_ok = [x for x in lasers if x is not None]
    norm = matplotlib.colors.Normalize(min(lasers_ok, default=0), max(lasers_ok, default=1))
    cmap = matplotlib.colormaps["viridis"]
    specimens = sorted({str(r.get("specimen_name", "")) for r in good})
    line_colours = {"Li/(Li+Ni+Co+Mn)": "C0", "Ni/(Ni+Co+Mn)": "C0", "O/(Li+O+Ni+Co+Mn)": "C3"}
    for ax, names in panels:
        shapes = iter("osD^v<>ph*" * 4)  # one marker per (ratio, specimen) in a panel
        for name in names:
            for spec in specimens:
                marker = next(shapes)
                for fractured in (False, True):
                    pts = [r for r in good if str(r.get("specimen_name", "")) == spec
                           and (r.get("state") == "failed") == fractured]
                    xs, ys, es, cs = [], [], [], []
                    for r in pts:
                        y, e = element_ratio(r, name)
                        if y is None:
                            continue
                        xs.append(molecular_ratio(r))
                        ys.append(y)
                        es.append(e or 0.0)
                        lp = _num(r.get("laser_pj"))
                        cs.append(cmap(norm(lp)) if lp is not None else "grey")
                    if not xs:
                        continue
                    ax.errorbar(xs, ys, yerr=es, fmt="none", ecolor="0.5", lw=0.8, zorder=1)
                    label = name if len(names) > 1 else None
                    if len(specimens) > 1:
                        label = f"{label + ', ' if label else ''}{spec}"
                    if fractured:
                        label = f"{label + ' ' if label else ''}(fractured)"
                    ax.scatter(xs, ys, c=cs if not fractured else "none", edgecolors=cs,
                               marker=marker, s=36, zorder=2,
                               label=label if not (len(names) > 1 and fractured) else None)
            if name in expected:
                ax.axhline(expected[name], ls="--", color=line_colours[name], lw=1.2,
                           label=f"stoichiometry {name} = {expected[name]:.2f}")
        ax.set_xlabel("O$_2^+$/O$^+$ (field proxy)")
        ax.set_ylabel(" , ".join(names) if len(names) == 1 else "atomic ratio")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=7, loc="best")  # "lower right" hid the 45 pJ O point
    _mark_ramp_up(good, panels)
    axes[0].set_title("a) Li/(Li+Ni+Co+Mn)", loc="left", fontsize=10)
    axes[1].set_title("b) Ni/(Ni+Co+Mn), O/(Li+O+Ni+Co+Mn)", loc="left", fontsize=10)
    if lasers_ok:
        sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=axes, label="laser pulse energy (pJ)", shrink=0.9)
    _title(fig, title, ramp_up_warning(good))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120)
    return fig


def _title(fig: Figure, title: str, warning: str | None) -> None:
    """The figure's title, and a warning below it in red, wrapped to the figure's width (one
    line of it was cut at both edges)."""
    if warning:
        fig.suptitle("\n".join(t for t in (title, *textwrap.wrap(f"WARNING: {warning}", 110))
                               if t), color="firebrick", fontsize=9)
    elif title:
        fig.suptitle(title)


def _mark_ramp_up(rows: list[dict[str, Any]], panels: list[tuple[Any, list[str]]]) -> None:
    """A red cross over every point that is mostly ramp-up, labelled once per panel."""
    bad = [r for r in rows if mostly_ramp_up(r)]
    for ax, names in panels:
        xs, ys = [], []
        for r in bad:
            for name in names:
                y, _ = element_ratio(r, name)
                if y is not None:
                    xs.append(molecular_ratio(r))
                    ys.append(y)
        if xs:
            ax.scatter(xs, ys, marker="x", s=90, c="firebrick", zorder=3,
                       label="mostly ramp-up (> 50 % of ions)")
            ax.legend(fontsize=7, loc="best")  # "lower right" hid the 45 pJ O point

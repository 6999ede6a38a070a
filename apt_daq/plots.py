"""Matplotlib figures (Agg backend, PNG): mass spectrum with ranges, hit map, FDA, profile, slices."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from apt_daq.analysis.fda import FdaResult
from apt_daq.io.ranges import RangeTable


def mass_spectrum(counts: np.ndarray, edges: np.ndarray, ranges: RangeTable | None, path: Path,
                  rebin: int = 10, title: str = "") -> Path:  # fmt: skip
    """Log-scale spectrum (counts per bin) with the ranges shaded in their colours."""
    n = len(counts) // rebin * rebin
    c = counts[:n].reshape(-1, rebin).sum(axis=1)
    e = edges[: n + 1 : rebin]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.stairs(np.maximum(c, 0.5), e, color="k", lw=0.6)
    ax.set_yscale("log")
    top = max(1.0, float(c.max()))
    if ranges is not None:
        done = set()
        for i in range(len(ranges)):
            name = ranges.names[i]
            ax.axvspan(ranges.lo_da[i], ranges.hi_da[i], color="#" + ranges.colour[i], alpha=0.3,
                       lw=0, label=name if name not in done else None)  # fmt: skip
            done.add(name)
        ax.legend(ncol=6, fontsize=7, loc="upper right")
    nz = np.flatnonzero(c)
    if len(nz):
        ax.set_xlim(0, e[min(len(e) - 1, nz[-1] + 2)])
    ax.set_ylim(0.5, top * 3)
    ax.set_xlabel("mass-to-charge (Da)")
    ax.set_ylabel(f"counts / {edges[1] - edges[0]:.3g}x{rebin} Da")
    ax.set_title(title or "mass spectrum")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def hit_map(counts: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    im = ax.pcolormesh(x_edges, y_edges, counts.T, cmap="viridis", shading="flat")
    ax.set_aspect("equal")
    ax.set_xlabel("detector x (mm)")
    ax.set_ylabel("detector y (mm)")
    ax.set_title("detector hit map")
    fig.colorbar(im, ax=ax, label="hits")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def fda_plot(results: dict[str, FdaResult], path: Path) -> Path:
    """Observed block-composition distribution (solid) and its binomial (dashed), per species."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (sp, r) in enumerate(results.items()):
        col = f"C{i}"
        k = np.arange(len(r.observed))
        ax.plot(k, r.observed, "-", color=col, label=f"{sp}: mu = {r.mu:.2f}")
        ax.plot(k, r.expected, "--", color=col)
        if r.blocks:
            hi = np.flatnonzero((r.observed > 0) | (r.expected > 0.5))
            if len(hi):
                ax.set_xlim(0, max(ax.get_xlim()[1] if i else 0, hi[-1] + 2))
    ax.set_xlabel(
        f"ions of the species per block of {next(iter(results.values())).block_ions if results else 100}"
    )
    ax.set_ylabel("blocks")
    ax.set_title("frequency distribution (dashed: binomial)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def profile_plot(profile: dict, path: Path, elements: list[str] | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    z = profile["z_nm"]
    for el in elements or list(profile["fraction"]):
        f = profile["fraction"][el]
        if len(f) and np.nanmax(f) > 0.005:
            ax.errorbar(z, 100 * f, yerr=100 * profile["error"][el], label=el, lw=1, capsize=0)
    ax.set_xlabel("depth z (nm)")
    ax.set_ylabel("concentration (at.%)")
    ax.set_title("concentration profile along z")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def slices_plot(slices: dict[str, np.ndarray], ranges: RangeTable, path: Path,
                thickness_nm: float = 5.0) -> Path:  # fmt: skip
    """XZ slice (|y| < t/2) and XY slice (t around the mid depth), ions coloured by range."""
    x, y, z, ion = slices["x"], slices["y"], slices["z"], slices["ion"].astype(int)
    ok = (ion >= 0) & np.isfinite(z)
    colours = np.array(["#" + c for c in ranges.colour] + ["#999999"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 5))
    s = ok & (np.abs(y) < thickness_nm / 2)
    a1.scatter(x[s], z[s], s=0.3, c=colours[ion[s]], lw=0)
    a1.set_xlabel("x (nm)")
    a1.set_ylabel("z (nm)")
    a1.invert_yaxis()
    a1.set_aspect("equal")
    a1.set_title(f"XZ slice, {thickness_nm:g} nm thick")
    zm = float(np.nanmedian(z[ok])) if ok.any() else 0.0
    s = ok & (np.abs(z - zm) < thickness_nm / 2)
    a2.scatter(x[s], y[s], s=0.5, c=colours[ion[s]], lw=0)
    a2.set_xlabel("x (nm)")
    a2.set_ylabel("y (nm)")
    a2.set_aspect("equal")
    a2.set_title(f"XY slice at z = {zm:.0f} nm")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_all(res, out: Path) -> list[Path]:
    """All figures of a :class:`apt_daq.analysis.report.RunAnalysis` into folder ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = [
        mass_spectrum(
            res.spectrum.counts,
            res.spectrum.edges,
            res.ranges,
            out / "spectrum.png",
            title=Path(res.summary["file"]).name,
        ),
        hit_map(*res.hitmap, out / "hitmap.png"),
    ]
    if res.fda:
        files.append(fda_plot(res.fda, out / "fda.png"))
    if len(res.profile["z_nm"]):
        files.append(profile_plot(res.profile, out / "profile.png"))
    files.append(slices_plot(res.slices, res.ranges, out / "slices.png"))
    return files

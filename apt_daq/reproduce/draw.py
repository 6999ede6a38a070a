"""Small matplotlib helpers shared by the reproduction figures (Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

ELEMENT_COLOURS = {"Li": "#9933FF", "Ni": "#00AA00", "O": "#0066FF", "Co": "#FF33AA",
                   "Mn": "#FF9900", "Cr": "#996633", "Ga": "#CC0000"}


def element_of_ion(res) -> np.ndarray:
    """Per range index: the 'main' element of the ion (the metal of an oxide ion, else O)."""
    out = []
    for comp in res.ranges.composition:
        metals = [el for el in comp if el != "O"]
        out.append(metals[0] if metals else "O")
    return np.array([*out, ""], dtype=object)


def slice_scatter(ax, res, plane: str, elements: list[str], thickness_nm: float = 5.0,
                  size: float = 0.6, roi_d_nm: float | None = None) -> None:
    """An XZ (|y| < t/2) or XY (t around the middle depth) slice of the reconstruction, with
    the ions of ``elements`` coloured by element."""
    s = res.slices
    x, y, z, ion = s["x"], s["y"], s["z"], s["ion"].astype(int)
    ok = (ion >= 0) & np.isfinite(z)
    el = element_of_ion(res)[np.where(ion >= 0, ion, -1)]
    if plane == "xz":
        sel = ok & (np.abs(y) < thickness_nm / 2)
        u, v = x, z
    else:
        zm = float(np.nanmedian(z[ok])) if ok.any() else 0.0
        half = max(thickness_nm / 2, 0.0)
        sel = ok & (np.abs(z - zm) < half) if np.ptp(z[ok]) > 2 * thickness_nm else ok
        u, v = x, y
    for e in elements:
        m = sel & (el == e)
        ax.scatter(u[m], v[m], s=size, c=ELEMENT_COLOURS.get(e, "k"), lw=0, label=e)
    if plane == "xz":
        ax.invert_yaxis()
        ax.set_xlabel("x (nm)")
        ax.set_ylabel("z (nm)")
    else:
        ax.set_aspect("equal")
        ax.set_xlabel("x (nm)")
        ax.set_ylabel("y (nm)")
        if roi_d_nm:
            t = np.linspace(0, 2 * np.pi, 100)
            ax.plot(0.5 * roi_d_nm * np.cos(t), 0.5 * roi_d_nm * np.sin(t), "w--", lw=1)


def hitmap_ax(ax, res, title: str = "") -> None:
    counts, xe, ye = res.hitmap
    ax.pcolormesh(xe, ye, counts.T, cmap="viridis", shading="flat")
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def save(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""Table S1: Li+ Pearson coefficient mu (FDA, 100-ion blocks, 25 nm ROI) of Cr-coated LiMn2O4
at the Fig. 7 laser energies: the paper reports values in 0.4-0.6."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from apt_daq.reproduce import draw, fig7
from apt_daq.reproduce.common import Context
from apt_daq.reproduce.fig4 import mu_error
from apt_daq.reproduce.paper import V
from apt_daq.reproduce.provenance import provenance
from apt_daq.reproduce.table import Row, fmt


def reproduce(ctx: Context) -> tuple[list[Row], list]:
    res = fig7.lmo_results(ctx)
    mus, errs, blocks = [], [], []
    for r in res:
        f = r.fda.get("Li+")
        mus.append(f.mu if f else np.nan)
        errs.append(mu_error(f.blocks, f.dof) if f else np.nan)
        blocks.append(f.blocks if f else 0)
    mus = np.array(mus)
    inside = (mus >= 0.4) & (mus <= 0.6)
    rows = [Row("S1", "Li+ FDA mu, Cr-coated LiMn2O4, each laser energy",
                "0.4-0.6 ('consistently')",
                ", ".join(f"{e:g}pJ {m:.2f}" for e, m in zip(fig7.ENERGIES_PJ, mus, strict=True)),
                "every value in 0.4-0.6", bool(inside.all()), V["S1.mu_li"].source,
                float(np.nanmean(mus)),
                provenance=provenance("S1.mu_li"))]
    rows[0].simulated += f" (noise floor ~{fmt(float(np.nanmean(errs)))}, {min(blocks)} blocks)"
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(fig7.ENERGIES_PJ, mus, errs, fmt="o", color="#9933FF")
    ax.axhspan(0.4, 0.6, color="grey", alpha=0.2, label="paper: 0.4-0.6")
    ax.set_ylim(0, 1)
    ax.set_xlabel("laser pulse energy (pJ)")
    ax.set_ylabel("Li+ Pearson mu")
    ax.set_title("Table S1 (simulated): Cr-coated LiMn2O4")
    ax.legend()
    png = ctx.out / "figS1.png"
    draw.save(fig, png)
    return rows, [png]

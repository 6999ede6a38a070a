"""Fig. 6: the Fig. 5 ratios from several particles of the same batch.

Particle-to-particle variation comes from the specimen model: ``composition_spread`` draws the
transition-metal amounts of each particle (seed) around the nominal ones. The spread used here
(``SPREAD``, relative 1 sigma) is a model input, not a result; what the figure tests is that
the measured ratios of all particles, at several laser energies, stay in a narrow band around
the Fig. 5 points (open symbols: Fig. 5, filled: separate particles).
"""

from __future__ import annotations

import numpy as np

from apt_daq.reproduce import draw, fig5
from apt_daq.reproduce.common import Context
from apt_daq.reproduce.paper import V
from apt_daq.reproduce.provenance import provenance
from apt_daq.reproduce.table import Row, fmt

ENERGIES_PJ = (5.0, 10.0, 15.0, 20.0, 30.0, 40.0)  # one particle each ("separate particles
PARTICLES = len(ENERGIES_PJ)  # with different laser energies", Fig. 6 caption)
SPREAD = 0.03  # relative 1-sigma particle-to-particle spread of Ni, Co, Mn amounts (assumed)


def reproduce(ctx: Context) -> tuple[list[Row], list]:
    seeds5 = [ctx.seed + 11 + i for i in range(len(fig5.ENERGIES_PJ))]
    open_pts = fig5.points(ctx, "fig5-cr", fig5.ENERGIES_PJ, seeds5,
                           ions=fig5.IONS_FACTOR * ctx.ions)  # Fig. 5's runs, as they are
    seeds = [ctx.seed + 201 + k for k in range(PARTICLES)]  # a seed draws a particle
    pts = fig5.points(ctx, "fig6-cr", ENERGIES_PJ, seeds,
                      {"specimen__composition_spread": SPREAD})
    li = np.array([p["Li/(Li+Ni+Co+Mn)"] for p in pts])
    ni = np.array([p["Ni/(Ni+Co+Mn)"] for p in pts])
    ok_li, ok_ni = bool(np.all(np.abs(li - 0.5) <= 0.05)), bool(np.all(np.abs(ni - 0.79) <= 0.04))
    # one statement ("a narrow range of variations"), so one row for both ratios
    rows = [Row("6", f"Li/(Li+Ni+Co+Mn) and Ni/(Ni+Co+Mn), {PARTICLES} particles: range",
                "narrow band around 0.5 and 0.78-0.8",
                f"Li {fmt(li.min())}-{fmt(li.max())} (sd {fmt(li.std())}); "
                f"Ni {fmt(ni.min())}-{fmt(ni.max())} (sd {fmt(ni.std())})",
                "all Li within 0.5 +- 0.05, all Ni within 0.79 +- 0.04", ok_li and ok_ni,
                V["fig6.band"].source, float(ni.std()),
                provenance=provenance("fig6.band"))]
    fig = fig5.plot(open_pts, pts, f"Fig. 6 (simulated): {PARTICLES} particles (filled) and "
                    "Fig. 5 (open)")
    png = ctx.out / "fig6.png"
    draw.save(fig, png)
    return rows, [png]

"""Fig. 5: Cr-coated NMC811 from one particle at 5-50 pJ: atomic ratios against O2+/O+.

One specimen per laser energy (separate seeds: separate needles, same particle, i.e. the same
composition), each analysed in the 25 nm ROI. a) Li/(Li+Ni+Co+Mn) about 0.5 everywhere;
b) Ni/(Ni+Co+Mn) about 0.78 at low O2+/O+ with a slight deviation at high, and
O/(Li+O+Ni+Co+Mn) about 0.5 below O2+/O+ = 4, lower above; O2+/O+ rises with laser energy.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from apt_daq.reproduce import draw
from apt_daq.reproduce.common import (
    Context,
    RunOutcome,
    RunSpec,
    analyze_many,
    ratio,
    ratio_err,
    simulate,
    spearman,
)
from apt_daq.reproduce.paper import V
from apt_daq.reproduce.provenance import provenance
from apt_daq.reproduce.table import Row, fmt

ENERGIES_PJ = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0)
# O/(all) below O2+/O+ = 4: seeds 0-9 at 200 000 ions deviate from 0.5 by <= 0.008 (Dec
# 2026; counting error ~0.003 a point): 0.02 (was 0.03)
O_LOW_TOL = 0.02
O2_SPAN_MIN = 1.5  # max/min O2+/O+ of the points (paper: from ~2.6 to above 4)
# ions of each point, times ctx.ions. The Ni deviation at the highest O2+/O+ must exceed 3
# counting errors of the difference of two points; at 200 000 ions that is 3 x 0.005 and
# seeds 0-9 read +0.015 to +0.036 (mean 0.024, sd 0.007, Dec 2026), so a +0.015 (seeds 7, 8)
# is not told from none. Counting sets the error: twice the ions, 3 x 0.0035
IONS_FACTOR = 2
KEYS = ("O2+/O+", "Li/(Li+Ni+Co+Mn)", "Ni/(Ni+Co+Mn)", "O/(Li+O+Ni+Co+Mn)", "Ni2+/Ni+", "Co2+/Co+")
CSR_KEYS = ("Ni2+/Ni+", "Co2+/Co+")  # charge-state ratios with a Kingham crossing in range


def points(ctx: Context, prefix: str, energies, seeds, overrides: dict | None = None,
           ions: int | None = None) -> list:
    """Simulate and analyse coated runs of ``ions`` (default ctx.ions) each; one dict of
    ratios (+ errors, energy, seed) each."""
    n = ions or ctx.ions
    specs = [RunSpec.make(f"{prefix}-{e:g}pj-s{s}", "nmc811-cr-5pj.yaml", run__laser_pj=e,
                          run__stop__ions=n, run__seed=s, **(overrides or {}))
             for e, s in zip(energies, seeds, strict=True)]
    outs = simulate(ctx, specs)
    for e, s, sp in zip(energies, seeds, specs, strict=True):
        outs[sp.key] = replace_broken(ctx, outs[sp.key], lambda k, e=e, s=s, sp=sp: RunSpec.make(
            f"{sp.key}-try{k}", "nmc811-cr-5pj.yaml", run__laser_pj=e, run__stop__ions=n,
            run__seed=s + 1000 * k, **(overrides or {})), n)
    # the ratios of the acquisition, not of the ramp-up's background (a 20 000-ion run is half
    # ramp: ~10 000 background hits while V climbs to the evaporation onset)
    res = analyze_many(ctx, [(outs[s.key].path, None, None, False, True) for s in specs])
    pts = []
    for e, s, sp, r in zip(energies, seeds, specs, res, strict=True):
        d = {"laser_pj": e, "seed": s, "state": outs[sp.key].state}
        for k in KEYS:
            d[k], d[k + " err"] = ratio(r.summary, k), ratio_err(r.summary, k)
        pts.append(d)
    return pts


TRIES = 3  # specimens per point: a lab mounts another one when a specimen breaks early
USABLE_SHARE = 0.5  # ... before half the set ion count


def replace_broken(ctx: Context, out: RunOutcome, spec_for_try, ions: int) -> RunOutcome:
    """``out``, or, if it fractured before half of ``ions`` (e.g. seed 8's coated 10 pJ
    specimen, in the ramp-up at 2970 V with 11 180 hits, nearly all background), the first of
    up to TRIES - 1 replacement specimens (``spec_for_try(k)``, k = 1, 2) that does not; else
    the longest one."""
    tried = [out]
    for k in range(1, TRIES):
        if not (tried[-1].fractured and tried[-1].ions < USABLE_SHARE * ions):
            break
        spec = spec_for_try(k)
        tried.append(simulate(ctx, [spec])[spec.key])
    good = [o for o in tried if not (o.fractured and o.ions < USABLE_SHARE * ions)]
    return good[0] if good else max(tried, key=lambda o: o.ions)


def reproduce(ctx: Context) -> tuple[list[Row], list]:
    seeds = [ctx.seed + 11 + i for i in range(len(ENERGIES_PJ))]
    pts = points(ctx, "fig5-cr", ENERGIES_PJ, seeds, ions=IONS_FACTOR * ctx.ions)
    rows = ratio_rows("5", pts)
    fig = plot(pts, [], "Fig. 5 (simulated): Cr-coated NMC811, one particle, 5-50 pJ")
    png = ctx.out / "fig5.png"
    draw.save(fig, png)
    return rows, [png]


def ratio_rows(figure: str, pts: list[dict]) -> list[Row]:
    o2 = np.array([p["O2+/O+"] for p in pts])
    li = np.array([p["Li/(Li+Ni+Co+Mn)"] for p in pts])
    ni = np.array([p["Ni/(Ni+Co+Mn)"] for p in pts])
    ni_e = np.array([p["Ni/(Ni+Co+Mn) err"] for p in pts])
    ox = np.array([p["O/(Li+O+Ni+Co+Mn)"] for p in pts])
    en = np.array([p["laser_pj"] for p in pts])
    rows = []
    worst = float(np.max(np.abs(li - 0.5)))
    span = float(o2.max() / o2.min())
    # "across the entire range of electrostatic field": the points must span a range of field
    # for the statement to be tested; the paper's reach from ~2.6 to above 4 in O2+/O+
    rows.append(Row(figure, "Li/(Li+Ni+Co+Mn) at every O2+/O+ (max /dev/ from 0.5; O2+/O+ "
                    "span max/min)", "0.5, 'close ... across the entire range' of field",
                    f"{fmt(li.min())}-{fmt(li.max())}; span {fmt(span)}",
                    f"/dev/ <= 0.05 at every point, over a span >= {O2_SPAN_MIN:g}",
                    worst <= 0.05 and span >= O2_SPAN_MIN, V["fig5.li"].source, worst,
                    provenance=provenance("fig5.li")))
    lo, hi = int(np.argmin(o2)), int(np.argmax(o2))
    rows.append(Row(figure, f"Ni/(Ni+Co+Mn) at the lowest O2+/O+ ({fmt(o2[lo])})", "~0.78",
                    f"{fmt(ni[lo])} +- {fmt(ni_e[lo], 2)}", "+-0.03", abs(ni[lo] - 0.78) <= 0.03,
                    V["fig5.ni_low"].source, float(ni[lo]),
                    provenance=provenance("fig5.ni_low")))
    d = float(ni[hi] - ni[lo])
    sig = float(math.hypot(ni_e[hi], ni_e[lo]))
    rows.append(Row(figure, f"Ni/(Ni+Co+Mn) deviation at the highest O2+/O+ ({fmt(o2[hi])})",
                    "'a slight deviation at high O2+/O+'", f"{d:+.3f} +- {sig:.3f}",
                    "3 sigma < /dev/ <= 0.1", 3 * sig < abs(d) <= 0.1, V["fig5.ni_high"].source,
                    d, provenance=provenance("fig5.ni_high")))
    below = o2 < 4
    wb = float(np.max(np.abs(ox[below] - 0.5))) if below.any() else math.nan
    rows.append(Row(figure, "O/(Li+O+Ni+Co+Mn) where O2+/O+ < 4 (max /dev/ from 0.5)",
                    "0.5, close 'especially with O2+/O+ below 4'",
                    f"{fmt(ox[below].min())}-{fmt(ox[below].max())}" if below.any()
                    else "no point below 4", f"/dev/ <= {O_LOW_TOL:g}", bool(wb <= O_LOW_TOL),
                    V["fig5.o"].source, wb,
                    provenance=provenance("fig5.o_low")))
    above = ~below
    rows.append(Row(figure, "O/(Li+O+Ni+Co+Mn) where O2+/O+ > 4 (mean)",
                    "lower than 0.5 (O lost as neutrals)",
                    fmt(float(ox[above].mean())) if above.any() else "no point above 4",
                    "< 0.47", bool(above.any() and ox[above].mean() < 0.47), V["fig5.o"].source,
                    float(ox[above].mean()) if above.any() else None,
                    provenance=provenance("fig5.o_high")))
    rho = spearman(en, o2)
    rows.append(Row(figure, "O2+/O+ against laser energy (Spearman rho)",
                    "rises with laser energy", f"{fmt(o2.min())}-{fmt(o2.max())}, rho {fmt(rho)}",
                    "rho >= 0.8", rho >= 0.8, V["fig5.o2_vs_laser"].source, rho,
                    provenance=provenance("fig5.o2_vs_laser")))
    # not a statement of the paper's text: post-ionisation (Kingham, Surf. Sci. 116, 273,
    # 1982) makes the 2+/1+ ratio of a metal fall as the field falls, i.e. as the laser energy
    # rises at a constant detection rate. No parameter was set on a metal's charge-state
    # ratio in NMC811 (the crossings and slope are Kingham's and assumed; docs/physics.md).
    # A ratio with no 2+ ion counted (far below the crossing) is 0.
    csr = {k: np.nan_to_num(np.array([p[k] for p in pts]), nan=0.0) for k in CSR_KEYS}
    rhos = {k: spearman(en, v) for k, v in csr.items()}
    worst_rho = float(np.max(list(rhos.values())))  # nan (a constant ratio) fails
    rows.append(Row(figure, "Ni2+/Ni+ and Co2+/Co+ against laser energy (Spearman rho, each)",
                    "not in the text; Kingham 1982: charge states fall as the field falls "
                    "(laser energy rises)",
                    "; ".join(f"{k} {fmt(v[0])} -> {fmt(v[-1])}, rho {fmt(rhos[k])}"
                              for k, v in csr.items()), "rho <= -0.8 each",
                    all(r <= -0.8 for r in rhos.values()), "Kingham 1982 (post-ionisation)",
                    worst_rho,
                    provenance=provenance("fig5.charge_states")))
    return rows


def plot(pts: list[dict], filled: list[dict], title: str):
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5))
    for group, mk, face in ((pts, "o", "none"), (filled, "s", None)):
        if not group:
            continue
        o2 = [p["O2+/O+"] for p in group]
        kw = {"mfc": face} if face else {}
        a.errorbar(o2, [p["Li/(Li+Ni+Co+Mn)"] for p in group],
                   [p["Li/(Li+Ni+Co+Mn) err"] for p in group], fmt=mk, color="#9933FF", **kw)
        b.errorbar(o2, [p["Ni/(Ni+Co+Mn)"] for p in group],
                   [p["Ni/(Ni+Co+Mn) err"] for p in group], fmt=mk, color="#00AA00", **kw)
        b.errorbar(o2, [p["O/(Li+O+Ni+Co+Mn)"] for p in group],
                   [p["O/(Li+O+Ni+Co+Mn) err"] for p in group], fmt=mk, color="#0066FF", **kw)
    for p in pts:
        a.annotate(f"{p['laser_pj']:g}", (p["O2+/O+"], p["Li/(Li+Ni+Co+Mn)"]), fontsize=7,
                   xytext=(3, 3), textcoords="offset points")
    a.axhline(0.5, ls="--", color="k", lw=1)
    a.set_ylim(0.3, 0.7)
    a.set_xlabel("O2+/O+")
    a.set_ylabel("Li/(Li+Ni+Co+Mn)")
    a.set_title("a) (labels: laser pJ)")
    b.axhline(0.8, ls="--", color="#00AA00", lw=1)
    b.axhline(0.5, ls="--", color="#0066FF", lw=1)
    b.axvline(4, ls=":", color="grey", lw=1)
    b.set_ylim(0.2, 0.95)
    b.set_xlabel("O2+/O+")
    b.set_ylabel("Ni/(Ni+Co+Mn) (green), O/(Li+O+Ni+Co+Mn) (blue)")
    b.set_title("b)")
    fig.suptitle(title)
    return fig

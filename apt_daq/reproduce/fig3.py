"""Fig. 3: Cr-coated NMC811, one specimen, 5 -> 10 -> 15 pJ (schedule of
configs/runs/nmc811-cr-5-20pj.yaml, first three steps).

Top: XY slices with all ions (Cr and CrO at the rim); bottom: XZ slices with Li throughout;
d) Ni, Li, O along the depth in the 25 nm cylinder ROI at 5 pJ (equal-count depth bins, since a
reduced run is only nanometres deep). Measured rows: the core ROI holds no shell ions at any
step; the ROI composition at 10 and 15 pJ is consistent with 5 pJ; the 5 pJ profile is flat.
(That the rim is shell ions is Fig. 2's row.)
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from apt_daq.reproduce import draw
from apt_daq.reproduce.common import Context, RunSpec, analyze_many, simulate
from apt_daq.reproduce.paper import V
from apt_daq.reproduce.table import Row, fmt

ENERGIES_PJ = (5.0, 10.0, 15.0)
PROFILE_BINS = 8
CONSISTENT_AT_PCT = 2.0  # our reading of "consistent" (Fig. 5/6 scatter is of this order)


def profile_equal_count(res, roi_d_nm: float = 25.0, bins: int = PROFILE_BINS) -> dict:
    """Li, Ni, O atomic fractions in ``bins`` equal-ion-count depth bins inside the ROI."""
    s = res.slices
    x, y, z, ion = s["x"], s["y"], s["z"], s["ion"].astype(int)
    ok = (ion >= 0) & np.isfinite(z) & (np.hypot(x, y) <= roi_d_nm / 2)
    els = ("Li", "Ni", "O")
    per_range = np.array([[c.get(e, 0) for e in els] for c in res.ranges.composition], float)
    all_atoms = np.array([sum(c.values()) for c in res.ranges.composition], float)
    order = np.argsort(z[ok])
    zs, ions = z[ok][order], ion[ok][order]
    out = {"z_nm": [], "atoms": [], **{e: [] for e in els}}
    for p in np.array_split(np.arange(len(zs)), bins):
        counts = np.bincount(ions[p], minlength=len(all_atoms)).astype(float)
        tot = float(counts @ all_atoms)
        out["z_nm"].append(float(np.median(zs[p])) if len(p) else math.nan)
        out["atoms"].append(tot)
        for j, e in enumerate(els):
            out[e].append(float(counts @ per_range[:, j]) / tot if tot else math.nan)
    return {k: np.array(v) for k, v in out.items()}


def flatness_chi2(frac: np.ndarray, atoms: np.ndarray) -> tuple[float, int]:
    """chi2 of the binned fractions against their mean, with binomial errors; (chi2, dof)."""
    p = float(np.sum(frac * atoms) / np.sum(atoms))
    var = p * (1 - p) / atoms
    return float(np.sum((frac - p) ** 2 / var)), len(frac) - 1


def reproduce(ctx: Context) -> tuple[list[Row], list]:
    sched = [{"laser_pj": e, "ions": ctx.ions, "label": f"{e:g} pJ"} for e in ENERGIES_PJ]
    spec = RunSpec.make("fig3-cr-5-15pj", "nmc811-cr-5-20pj.yaml", run__schedule=sched,
                        run__stop__ions=100 * ctx.ions, run__seed=ctx.seed + 1)
    out = simulate(ctx, [spec])[spec.key]
    res = dict(zip(ENERGIES_PJ, analyze_many(ctx, [(out.path, "none", e) for e in ENERGIES_PJ]
                                             + []), strict=True))
    roi = dict(zip(ENERGIES_PJ, analyze_many(ctx, [(out.path, "cylinder:25", e, True)
                                                   for e in ENERGIES_PJ]), strict=True))
    rows: list[Row] = []
    cr_roi = {en: 100 * roi[en].composition.fraction("Cr") for en in ENERGIES_PJ}
    worst_cr = max(cr_roi.values())
    rows.append(Row("3", "Cr in the 25 nm ROI at 5/10/15 pJ (at.%, background-subtracted)",
                    "ROI avoids the coating",
                    ", ".join(f"{en:g}pJ {fmt(v)}" for en, v in cr_roi.items()), "< 1 at.% each",
                    worst_cr < 1.0, V["fig3.rim"].source, worst_cr,
                    provenance="by construction: the configured shell radius and the ROI"))
    c5 = {e: 100 * roi[5.0].composition.fraction(e) for e in ("Li", "Ni", "O")}
    diffs = {en: {e: 100 * roi[en].composition.fraction(e) - c5[e] for e in c5}
             for en in ENERGIES_PJ[1:]}
    worst = max(((en, e) for en in diffs for e in c5), key=lambda k: abs(diffs[k[0]][k[1]]))
    # one statement ("10 and 15 pJ consistent with 5 pJ"), so one row over both steps
    rows.append(Row("3", "ROI composition at 10 and 15 pJ minus 5 pJ (Li, Ni, O at.%)",
                    "consistent with the 5 pJ data",
                    "; ".join(f"{en:g} pJ: " + ", ".join(f"{k} {v:+.1f}" for k, v in d.items())
                              for en, d in diffs.items()),
                    f"/diff/ <= {CONSISTENT_AT_PCT:g} at.%",
                    abs(diffs[worst[0]][worst[1]]) <= CONSISTENT_AT_PCT,
                    V["fig3.consistent"].source, diffs[worst[0]][worst[1]],
                    provenance="calibrated: the coated compositions at 5-50 pJ (Fig. 5: "
                    "screening, neutral NiO/CoO/MnO, O2 loss)"))
    rows.append(Row("3", "ROI composition at 5 pJ (Li, Ni, O at.%)",
                    "nominal 25, 20, 50 (Experimental)",
                    ", ".join(f"{k} {v:.1f}" for k, v in c5.items()), "each within 3 at.%",
                    all(abs(c5[k] - n) <= 3 for k, n in (("Li", 25), ("Ni", 20), ("O", 50))),
                    "Experimental; Fig. 3d", c5["Li"],
                    provenance="calibrated: neutral NiO share, Li screening, O2 loss field"))
    prof = profile_equal_count(roi[5.0])
    chi2, dof = flatness_chi2(prof["Li"], prof["atoms"])
    # allowance for the Li-episode clustering that FDA measures (mu ~ 0.5 coated): a flat
    # profile within 3x the counting variance
    rows.append(Row("3", f"Li depth profile flatness at 5 pJ, chi2/dof ({PROFILE_BINS} bins)",
                    "flat profile (homogeneous evaporation)", f"{chi2:.1f}/{dof}",
                    "chi2/dof <= 3", chi2 / dof <= 3, V["fig3.homogeneous"].source, chi2 / dof,
                    provenance="predicted: no parameter set on it (the 3x allowance was chosen "
                    "knowing the coated Li episodes)"))

    # ---- figure
    fig, axes = plt.subplots(2, 4, figsize=(16, 8))
    for j, en in enumerate(ENERGIES_PJ):
        draw.slice_scatter(axes[0, j], res[en], "xy", ["Ni", "Li", "O", "Cr", "Ga"], size=0.5,
                           roi_d_nm=25 if j == 0 else None)
        axes[0, j].set_facecolor("black")
        axes[0, j].set_title(f"{'abc'[j]}) {en:g} pJ: XY, all ions", fontsize=9)
        draw.slice_scatter(axes[1, j], res[en], "xz", ["Li", "Cr"], size=0.6)
        axes[1, j].set_aspect("auto")
        axes[1, j].set_title(f"{en:g} pJ: XZ, Li (purple) and Cr (brown)", fontsize=9)
    a = axes[0, 3]
    for e in ("Li", "Ni", "O"):
        err = np.sqrt(prof[e] * (1 - prof[e]) / prof["atoms"])
        a.errorbar(prof["z_nm"], 100 * prof[e], 100 * err, color=draw.ELEMENT_COLOURS[e],
                   label=e, marker="o", ms=3)
    a.set_xlabel("depth z (nm)")
    a.set_ylabel("at.%")
    a.set_title("d) 5 pJ, 25 nm cylinder ROI")
    a.legend()
    b = axes[1, 3]
    for e in ("Li", "Ni", "O"):
        b.plot(ENERGIES_PJ, [100 * roi[en].composition.fraction(e) for en in ENERGIES_PJ], "o-",
               color=draw.ELEMENT_COLOURS[e], label=e)
    b.set_xlabel("laser energy (pJ)")
    b.set_ylabel("ROI composition (at.%)")
    b.legend()
    fig.suptitle("Fig. 3 (simulated): Cr-coated NMC811, one specimen, 5/10/15 pJ")
    png = ctx.out / "fig3.png"
    draw.save(fig, png)
    return rows, [png]

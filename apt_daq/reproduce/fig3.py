"""Fig. 3: Cr-coated NMC811, one specimen, 5 -> 10 -> 15 pJ (schedule of
configs/runs/nmc811-cr-5-20pj.yaml, first three steps).

Top: XY slices with all ions (Cr and CrO at the rim); bottom: XZ slices with Li throughout;
d) Ni, Li, O along the depth in the 25 nm cylinder ROI at 5 pJ (equal-count depth bins, since a
reduced run is only nanometres deep). Measured rows: the core ROI holds no shell ions at any
step; the ROI composition at 10 and 15 pJ is consistent with 5 pJ (one row); the 5 pJ Li profile
is flat where the uncoated one (Fig. 4's dataset) is not. (That the rim is shell ions is Fig. 2's
row.)
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from apt_daq.reproduce import draw, fig4
from apt_daq.reproduce.common import Context, RunSpec, analyze_many, simulate
from apt_daq.reproduce.paper import V
from apt_daq.reproduce.provenance import provenance
from apt_daq.reproduce.table import Row, fmt

ENERGIES_PJ = (5.0, 10.0, 15.0)
PROFILE_BINS = 8
CONSISTENT_AT_PCT = 2.0  # our reading of "consistent" (Fig. 5/6 scatter is of this order)
# "homogeneous" against the uncoated specimen: the uncoated Li profile's spread beyond counting,
# relative to its Li level, at least twice the coated one's and at least 5 % (a random stream:
# ~0). Both fall with the ion count (more Li episodes per bin), so the comparison, not a
# level, is the test. Relative, since Li episodes scale the Li share by 1 +- a: in at.% the
# uncoated specimen's depleted Li (~9 at.%) hid it (seed 0, 200 000 ions: 1.59 vs 2.61 at.%)
HOMOGENEOUS_FACTOR = 2.0
NOT_FLAT = 0.05


def profile_equal_count(res, roi_d_nm: float = 25.0, bins: int = PROFILE_BINS) -> dict:
    """Li, Ni, O atomic fractions in ``bins`` equal-ion-count bins of the ROI's ions in
    evaporation order (``z_nm``: each bin's median reconstructed depth). Evaporation order is
    the depth with the cap's curvature taken out: over a 25 nm ROI the cap sags ~1.8 nm, more
    than the ~1.6 nm that 200 000 ions evaporate, so bins sorted by reconstructed z would sort
    by radius, not by time, and average any change along the depth away."""
    s = res.slices
    x, y, z, ion = s["x"], s["y"], s["z"], s["ion"].astype(int)
    ok = (ion >= 0) & np.isfinite(z) & (np.hypot(x, y) <= roi_d_nm / 2)
    els = ("Li", "Ni", "O")
    per_range = np.array([[c.get(e, 0) for e in els] for c in res.ranges.composition], float)
    all_atoms = np.array([sum(c.values()) for c in res.ranges.composition], float)
    zs, ions = z[ok], ion[ok]  # the slices are in evaporation order
    out = {"z_nm": [], "atoms": [], **{e: [] for e in els}}
    for p in np.array_split(np.arange(len(zs)), bins):
        counts = np.bincount(ions[p], minlength=len(all_atoms)).astype(float)
        tot = float(counts @ all_atoms)
        out["z_nm"].append(float(np.median(zs[p])) if len(p) else math.nan)
        out["atoms"].append(tot)
        for j, e in enumerate(els):
            out[e].append(float(counts @ per_range[:, j]) / tot if tot else math.nan)
    return {k: np.array(v) for k, v in out.items()}


def _mean(prof: dict) -> float:
    return float(np.sum(prof["Li"] * prof["atoms"]) / np.sum(prof["atoms"]))


def excess_rms(frac: np.ndarray, atoms: np.ndarray) -> float:
    """The bin-to-bin rms of the fractions beyond counting: sqrt(max(var - <p (1-p) / N>, 0)),
    in the fraction's units; ~0 for a homogeneous stream at any ion count."""
    p = float(np.sum(frac * atoms) / np.sum(atoms))
    var = float(np.mean((frac - p) ** 2)) * len(frac) / max(len(frac) - 1, 1)
    return math.sqrt(max(var - float(np.mean(p * (1 - p) / atoms)), 0.0))


def profile_row(ctx: Context, prof: dict) -> Row:
    """Fig. 3d's Li profile against the uncoated specimen's (see the module doc)."""
    # "the Cr-coating enables homogeneous field evaporation ... particularly of Li-ions": the
    # coated Li profile is flatter than the uncoated one (Fig. 4's 5 pJ dataset). A flat coated
    # profile alone is what any random stream gives (the null model passes it). Spread: the
    # bin-to-bin rms beyond counting over the Li level (a chi2 against counting alone grows with
    # ion count for any real structure, e.g. the coated Li episodes FDA measures)
    bare = analyze_many(ctx, [(fig4.uncoated_dataset(ctx).path, "cylinder:25", None, True)])[0]
    prof_b = profile_equal_count(bare)
    ex_c = excess_rms(prof["Li"], prof["atoms"]) / _mean(prof)
    ex_b = excess_rms(prof_b["Li"], prof_b["atoms"]) / _mean(prof_b)
    return Row("3", f"Li depth profile ({PROFILE_BINS} equal-count bins, 5 pJ, 25 nm ROI): "
                    "relative spread beyond counting, Cr-coated, uncoated",
                    "the coating 'enables homogeneous field evaporation ... particularly of "
                    "Li-ions'", f"{ex_c:.3f}, {ex_b:.3f}",
                    f"uncoated >= {HOMOGENEOUS_FACTOR:g} x coated and > {NOT_FLAT:g}",
                    ex_b >= HOMOGENEOUS_FACTOR * ex_c and ex_b > NOT_FLAT,
                    V["fig3.homogeneous"].source, ex_b / ex_c if ex_c > 0 else math.inf,
                    provenance=provenance("fig3.homogeneous"))


def reproduce(ctx: Context) -> tuple[list[Row], list]:
    # the 5 pJ step sets the depth profile: ctx.profile_ions (~3.3 M ions reach 25 nm)
    sched = [{"laser_pj": e, "ions": (ctx.profile_ions or ctx.ions) if e == 5.0 else ctx.ions,
              "label": f"{e:g} pJ"} for e in ENERGIES_PJ]
    spec = RunSpec.make("fig3-cr-5-15pj" + (f"-p{ctx.profile_ions}" if ctx.profile_ions else ""),
                        "nmc811-cr-5-20pj.yaml", run__schedule=sched,
                        run__stop__ions=100 * max(ctx.ions, ctx.profile_ions or 0),
                        run__seed=ctx.seed + 1)
    out = simulate(ctx, [spec])[spec.key]
    res = dict(zip(ENERGIES_PJ, analyze_many(ctx, [(out.path, "none", e) for e in ENERGIES_PJ]
                                             + []), strict=True))
    # the ROI compositions without the ramp-up (mostly background and DC evaporation while V
    # climbs; a 20 000-ion step is half ramp-up), as Fig. 5's
    roi = dict(zip(ENERGIES_PJ, analyze_many(ctx, [(out.path, "cylinder:25", e, True, True)
                                                   for e in ENERGIES_PJ]), strict=True))
    rows: list[Row] = []
    cr_roi = {en: 100 * roi[en].composition.fraction("Cr") for en in ENERGIES_PJ}
    worst_cr = max(cr_roi.values())
    c5 = {e: 100 * roi[5.0].composition.fraction(e) for e in ("Li", "Ni", "O")}
    diffs = {en: {e: 100 * roi[en].composition.fraction(e) - c5[e] for e in c5}
             for en in ENERGIES_PJ[1:]}
    worst = max(((en, e) for en in diffs for e in c5), key=lambda k: abs(diffs[k[0]][k[1]]))
    nominal = all(abs(c5[k] - n) <= 3 for k, n in (("Li", 25), ("Ni", 20), ("O", 50)))
    consistent = abs(diffs[worst[0]][worst[1]]) <= CONSISTENT_AT_PCT
    # Fig. 3d: the core's composition at 5 pJ (nominal, Experimental) and at 10 and 15 pJ
    # ("consistent with the 5 pJ data"), measured in a 25 nm ROI that holds no shell ions at
    # any step (each step reconstructed with its own field): one panel, one row
    rows.append(Row("3", "ROI composition (Li, Ni, O at.%) at 5 pJ; 10 and 15 pJ minus 5 pJ; "
                    "Cr in the 25 nm ROI at each step (background-subtracted)",
                    "nominal 25, 20, 50 (Experimental); 10 and 15 pJ 'consistent with the 5 pJ "
                    "data'", ", ".join(f"{k} {v:.1f}" for k, v in c5.items()) + "; "
                    + "; ".join(f"{en:g} pJ: " + ", ".join(f"{k} {v:+.1f}" for k, v in d.items())
                                for en, d in diffs.items())
                    + "; Cr " + ", ".join(f"{en:g}pJ {fmt(v)}" for en, v in cr_roi.items()),
                    f"5 pJ each within 3 at.%; /diff/ <= {CONSISTENT_AT_PCT:g} at.%; Cr < 1 at.%",
                    nominal and consistent and worst_cr < 1.0,
                    f"Experimental; {V['fig3.consistent'].source}", diffs[worst[0]][worst[1]],
                    provenance=provenance("fig3.composition")))
    prof = profile_equal_count(roi[5.0])
    rows.append(profile_row(ctx, prof))

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

"""The null model: a physics-free ion stream on which the reproduction's criteria are evaluated.

What a row proves depends on what else would pass it. The null model is an atom probe with no
atom-probe physics: every run of the reproduction is replaced by a stream of

- the configured specimen's atoms, stoichiometric (the phase's formula unit, with the run's
  ``composition_spread`` if it sets one), leaving as ions in random order: Li as Li+, O as O+
  and O2+ with O2+/O+ fixed at 2.61 (the paper's 5 pJ value), each metal as M+ and M2+ in
  equal parts, Ga as Ga+, the shell's ``oxide_fraction`` of Cr as CrO+;
- the configured geometry: ions leave uniformly from the disk the detector sees
  (``rho_FOV = (D/2) xi R0 / L``), from the Cr/Ga shell outside ``rho_b = R0 cos a - t / cos a``
  and from a grain inside its sphere; depth grows by the atoms removed; positions are exact
  (no reconstruction error) and project onto the detector at ``L / (xi R0)``;
- no heating, no field, no thermal tails (every peak the same Gaussian, m / FWHM = 1000), no
  Li migration or episodes, no background, no multi-hits, no fracture, no ramp-up; the laser
  energy changes nothing.

Masses are drawn from each ion's isotopologues and ranged with the run's own range file, and
the composition, ratios, MRP and FDA come from the same functions ``analyze`` uses
(:func:`~apt_daq.analysis.composition.composition`, :func:`~apt_daq.analysis.ratios.ratios`,
:func:`~apt_daq.analysis.mrp.mrp`, :func:`~apt_daq.analysis.fda.fda`), so the figure modules
run unchanged on it (``Context(null=True)``: :func:`apt_daq.reproduce.common.simulate` and
``analyze_many`` hand out these instead of simulated runs). Nothing here imports ``sim``.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from apt_daq.analysis.composition import composition, range_background
from apt_daq.analysis.fda import FdaResult, fda
from apt_daq.analysis.mrp import main_peaks, mrp, mrp_window
from apt_daq.analysis.ratios import ratios
from apt_daq.analysis.report import SLICE_POINTS, RunAnalysis
from apt_daq.analysis.roi import parse_roi
from apt_daq.config import RunFile, load_run
from apt_daq.io.ranges import read_ranges
from apt_daq.isotopes import ion_name, isotopologues
from apt_daq.pipeline.histogram import MassHistogram
from apt_daq.rangetable import RangeTable
from apt_daq.reproduce.spec import RUNS, RunOutcome, RunSpec

O2_O = 2.61  # O2+/O+ ions, fixed (paper, 5 pJ)
CSR = 1.0  # M2+/M+ of every metal with a 2+ ion
MRP_FWHM = 1000.0  # m / FWHM of every peak
METALS_2PLUS = ("Mn", "Co", "Ni", "Cr")


_CFG: dict[str, RunFile] = {}
_STREAMS: dict[tuple[str, float | None], dict[str, np.ndarray]] = {}


def _cfg(spec: RunSpec) -> RunFile:
    key = repr(spec)
    if key not in _CFG:
        _CFG[key] = load_run(RUNS / spec.run_file, dict(spec.overrides))
    return _CFG[key]


def _total_ions(spec: RunSpec) -> int:
    rc = _cfg(spec).run
    total = sum(s.ions for s in rc.schedule) if rc.schedule is not None else rc.stop.ions
    return int(min(total or 0, rc.stop.ions or total or 0))


def null_steps(spec: RunSpec) -> list[float]:
    """Laser energies of the run's schedule steps (all reached: nothing fractures)."""
    return [s.laser_pj for s in _cfg(spec).run.steps()]


def null_outcome(spec: RunSpec, path: Path) -> RunOutcome:
    """The outcome of a null run: done, with the set ion count, never fractured."""
    return RunOutcome(spec.key, path, "done", "stop: ions (null model)", _total_ions(spec))


def phase_ions(comp: dict[str, float], oxide_fraction: float = 0.0) -> dict[str, float]:
    """Expected ions per formula unit of a phase (see module doc)."""
    out: dict[str, float] = {}

    def add(formula: dict[str, int], z: int, n: float) -> None:
        if n > 0:
            name = ion_name(formula, z)
            out[name] = out.get(name, 0.0) + n

    for el, n in comp.items():
        if n <= 0:
            continue
        if el == "O":
            add({"O": 1}, 1, n / (1 + 2 * O2_O))
            add({"O": 2}, 1, n * O2_O / (1 + 2 * O2_O))
        elif el in METALS_2PLUS:
            mol = n * oxide_fraction if el == "Cr" else 0.0
            add({el: 1, "O": 1}, 1, mol)
            add({el: 1}, 1, (n - mol) / (1 + CSR))
            add({el: 1}, 2, (n - mol) * CSR / (1 + CSR))
        else:
            add({el: 1}, 1, n)
    return out


def _seed(spec: RunSpec, laser_pj: float | None) -> list[int]:
    h = hashlib.sha1(f"{spec.key}|{laser_pj}".encode()).digest()
    return [int.from_bytes(h[:8], "little"), _cfg(spec).run.seed]


@lru_cache(maxsize=8)
def _read_ranges(path: str) -> RangeTable:
    return read_ranges(path)


def _null_ranges(spec: RunSpec) -> RangeTable:
    cfg = _cfg(spec)
    return _read_ranges(str(cfg.resolve(cfg.analysis.ranges)))


def null_stream(spec: RunSpec, laser_pj: float | None) -> dict[str, np.ndarray]:
    """The run's (or one schedule step's) null ions in evaporation order: ion name index
    (into ``names``), m/n (Da), x, y, z (nm) and detector x, y (mm)."""
    key = (repr(spec), laser_pj)
    if key not in _STREAMS:
        if len(_STREAMS) > 2:
            _STREAMS.clear()
        _STREAMS[key] = _stream(spec, laser_pj)
    return _STREAMS[key]


def _stream(spec: RunSpec, laser_pj: float | None) -> dict[str, np.ndarray]:
    cfg = _cfg(spec)
    spc, ins, rc = cfg.specimen, cfg.instrument, cfg.run
    if laser_pj is None:
        n = _total_ions(spec)
    else:
        n = min(next(s.ions for s in rc.steps() if abs(s.laser_pj - laser_pj) < 0.01),
                _total_ions(spec))
    rng = np.random.default_rng(_seed(spec, laser_pj))
    # phases: compositions (the matrix with the configured particle spread), shell last
    comps = [dict(p.composition) for p in spc.phases]
    mat = [p.name for p in spc.phases].index(spc.matrix)
    if spc.composition_spread > 0:
        srng = np.random.default_rng([rc.seed, 0x5EC])
        comps[mat] = {el: (v if el in ("O", "Li") else
                           max(0.0, v * (1 + spc.composition_spread * srng.standard_normal())))
                      for el, v in comps[mat].items()}
    ions = [phase_ions(c) for c in comps]
    coat = spc.coating
    if coat is not None:
        ions.append(phase_ions({coat.material: 1 - coat.ga_fraction, "Ga": coat.ga_fraction},
                               coat.oxide_fraction))
    names = sorted({k for d in ions for k in d})
    prob = np.array([[d.get(k, 0.0) for k in names] for d in ions])
    atoms_per_ion = np.array([sum(f.values()) for f in (_formula(k) for k in names)])
    prob /= prob.sum(axis=1, keepdims=True)
    # geometry
    r0 = spc.apex_radius_nm
    cos_a = math.cos(math.radians(spc.shank_half_angle_deg))
    det_r = ins.detector_diameter_mm / 2
    rho_fov = det_r * spc.image_compression * r0 / ins.flight_path_mm
    rho_b = r0 * cos_a - (coat.thickness_nm / cos_a if coat is not None else 0.0)
    rr = rho_fov * np.sqrt(rng.random(n))
    ph = 2 * np.pi * rng.random(n)
    x, y = rr * np.cos(ph), rr * np.sin(ph)
    phase = np.full(n, mat)
    dens = np.array([p.atomic_density_per_nm3 for p in spc.phases]
                    + ([coat.atomic_density_per_nm3] if coat is not None else []))
    # depth: each detected ion stands for its atoms / detection efficiency (first pass with the
    # matrix's mean atoms per ion, then per phase)
    mean_atoms = float(prob[mat] @ atoms_per_ion)
    z = np.arange(n) * mean_atoms / ins.detection_efficiency / (
        dens[mat] * math.pi * rho_fov**2)
    for g in spc.grains:
        gi = [p.name for p in spc.phases].index(g.phase)
        c = np.asarray(g.center_nm)
        inside = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 < g.radius_nm**2
        phase[inside] = gi
    if coat is not None:
        phase[rr > rho_b] = len(comps)
    cdf = np.cumsum(prob, axis=1)
    u = rng.random(n)
    sp = np.minimum((u[:, None] > cdf[phase]).sum(axis=1), len(names) - 1)
    # masses: an isotopologue of each ion, Gaussian peaks of the same resolving power
    mass = np.empty(n)
    for k, name in enumerate(names):
        sel = sp == k
        f = _formula(name)
        peaks = isotopologues(f, _charge(name))
        m = np.array([p[0] for p in peaks])
        a = np.array([p[1] for p in peaks])
        pick = rng.choice(len(m), size=int(sel.sum()), p=a / a.sum())
        mass[sel] = m[pick] * (1 + rng.standard_normal(len(pick)) / (2.3548 * MRP_FWHM))
    mag = ins.flight_path_mm / (spc.image_compression * r0)
    return {"names": np.array(names), "sp": sp, "mass": mass, "x": x, "y": y, "z": z,
            "det_x": x * mag, "det_y": y * mag, "det_r": np.array(det_r)}


def _formula(name: str) -> dict[str, int]:
    from apt_daq.isotopes import parse_ion

    return parse_ion(name)[0]


def _charge(name: str) -> int:
    from apt_daq.isotopes import parse_ion

    return parse_ion(name)[1]


def analyze_null(spec: RunSpec, roi: str | None, laser_pj: float | None,
                 subtract_background: bool = False, settled: bool = False) -> RunAnalysis:
    """What :func:`apt_daq.analysis.report.analyze` returns, for the run's null stream (the
    same ROI, step selection, ranges and functions; ``settled`` changes nothing: no ramp-up)."""
    cfg = _cfg(spec)
    s = null_stream(spec, laser_pj)
    ranges = _null_ranges(spec)
    acfg = cfg.analysis
    m = s["mass"]
    idx = np.searchsorted(ranges.lo_da, m, side="right") - 1
    ion = np.where((idx >= 0) & (m < ranges.hi_da[np.maximum(idx, 0)]), idx, -1).astype(np.int16)
    roi_obj = parse_roi(roi if roi is not None else acfg.roi)
    x, y, z = s["x"], s["y"], s["z"]
    inside = roi_obj.mask(x, y, z) if roi_obj is not None else np.ones(len(m), bool)
    sel = inside & (ion >= 0)
    rc_roi = np.bincount(ion[sel].astype(np.int64), minlength=len(ranges))
    hist = MassHistogram(0.001, float(ranges.hi_da.max()) + 20.0)
    hist.add(m)
    # the whole run's background, scaled to the ROI's share of the ions, as analyze does
    bg = range_background(hist.counts, hist.edges, ranges)[0] * (inside.sum() / max(len(m), 1))
    comp, counts_by_ion = composition(rc_roi, ranges, None, subtract_background, background=bg)
    rat, rat_err = ratios(counts_by_ion, comp.atoms)
    seq = ion[sel]
    ion_of_range = ranges.ion_index()
    fda_res: dict[str, FdaResult] = {}
    for spn in acfg.fda_ions:
        if spn in ranges.ions and len(seq):
            is_sp = ion_of_range[seq.astype(np.int64)] == ranges.ions.index(spn)
            fda_res[spn] = fda(is_sp, acfg.fda_block_ions, spn)
    rc_all = np.bincount(ion[ion >= 0].astype(np.int64), minlength=len(ranges))
    by_ion = {n: 0.0 for n in ranges.ions}
    for i, n in enumerate(ranges.names):
        by_ion[n] += float(rc_all[i])
    mrp_list = []
    for peak in main_peaks(ranges, by_ion, top=5):
        lo, hi = mrp_window(peak[1])
        mrp_list += mrp(m[(m > lo) & (m < hi) & inside], [peak])
    det_r = float(s["det_r"])
    edges = np.linspace(-det_r, det_r, 129)
    hitmap = np.histogram2d(s["det_x"], s["det_y"], [edges, edges])[0].astype(np.int64)
    stride = max(1, math.ceil(len(m) / SLICE_POINTS))
    slices = {"x": x[::stride], "y": y[::stride], "z": z[::stride], "ion": ion[::stride]}
    summary = {
        "file": f"null model of {spec.key}", "ions": int(inside.sum()), "ions_total": len(m),
        "ranged_ions": int(rc_roi.sum()), "ranged_ions_total": int(rc_all.sum()),
        "roi": roi_obj.describe() if roi_obj is not None else "all ions",
        "composition": {el: {"fraction": comp.fraction(el), "error": comp.error(el)}
                        for el in comp.atoms},
        "ion_counts": {k: round(v) for k, v in counts_by_ion.items()},
        "ratios": rat, "ratio_errors": rat_err, "mrp": mrp_list,
        "fda": {k: v.as_dict() for k, v in fda_res.items()},
        "background_subtracted": bool(subtract_background), "null_model": True,
    }
    return RunAnalysis(summary, ranges, hist, (hitmap, edges, edges), fda_res, {}, slices,
                       None, comp)

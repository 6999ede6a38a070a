"""Identification: the set of ions whose isotope patterns explain all the peaks jointly.

The rows (peaks, absent positions) and columns (candidates) are :mod:`.design`'s. An absent
row only penalises predicting more than is there: counts beyond the prediction (a peak
below the detection threshold) earn a candidate nothing (``ABSENT_CAP``), or a bump too
small to name would pick the candidate whose minor isotope lands on it (34S2+ at 17 Da on
apav's Si run, where OH+ is the likelier owner, made S2+ win 16 Da over O+). The model
``y = A x`` with ``x >= 0`` (ion counts) is fitted by weighted non-negative least squares,
group by group: selected ions that share no row, directly or through others, are separate
problems, each fitted once and remembered, so a search step refits only what it touches.

Selection minimises ``chi2 + sum of prior costs`` (ion and element costs,
:mod:`.candidates`): greedy forward steps (the candidate whose best amplitude on the current
residual gains most, net of its cost), each followed by a non-negative refit and backward
elimination (drop a selected ion when the refit without it costs less), until no candidate
gains; then swaps of one ion for another sharing a peak, and, for each minor element (< 5 % of
the fitted counts), the removal of all its ions with a refill from the ions sharing their
peaks (an element whose ions sit on several peaks, MnN+ and (MnN)2+ where Ga+ and Ga2+
belong, is not undone one ion at a time). A detected peak that no selected ion explains costs at most ``UNKNOWN_COST`` (an ion
outside the candidates is an explanation too), so one lone peak never pulls in an element
whose prior costs more than that: it stays unranged. A trace element (its ions < 0.1 % of
the fitted counts) that holds a major share (>= 30 %) of fewer than two detected peaks pays
``LONE_TRACE_COST`` more: with no second isotope or charge state its one peak's position is
all the evidence, and at trace level a hydride or molecular ion of the major elements, a
detector artefact or a calibration wobble is as likely (apav's Si run: P2+ at 15.5 Da, its P+
a 15 % share of 62Ni2+). A major lone peak (Al+ alone) is still named.

An ion with n atoms of one element pays ``-2 (n - 1) ln c`` more (c: that element's atomic
fraction in the fit; ``_Problem.cluster_cost``): each atom beyond the first must have been a
neighbour of the same element, about c as likely in a random solid, so clusters of the matrix
(O2+ in an oxide, c ~ 0.5: 1.4) cost little and those of a minor element much (calcite's 44
Da peak, 1.2e-3 Da below CO2+ and N2O+ alike, was N2O+ by 0.9 with N at 1.7 % of the atoms:
now 8.1 against CO2+'s 2.3, O being 32 %).

Overlapping ions on one peak (O2+ and 64Ni2+ at 32 Da) share it by the fit: the
decomposed counts and their errors come from the covariance of the final fit.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from numba import njit
from scipy.optimize import nnls

from apt_daq.pipeline.autorange.candidates import Candidate, element_cost
from apt_daq.pipeline.autorange.design import Rows

UNKNOWN_COST = 30.0  # chi2 units: what leaving one detected peak unexplained costs at most
TRACE_SHARE = 1e-3  # an element with less than this share of the fitted counts is a trace
SUPPORT_SHARE = 0.3  # ... and needs this share of two peaks (isotopes or charge states)
LONE_TRACE_COST = 20.0  # or pays this on top of its element cost
HYDRIDE_COST = 20.0  # an element whose hydrides outnumber its atomic ions pays this
DOUBT_SHARE = 0.05  # elements below this share of the fitted counts may be swapped out whole
ABSENT_CAP = 0.0  # chi2 units: what counts left unexplained at an absent row cost at most
MEMO_MAX = 50_000  # fits remembered (each a few hundred bytes): calcite's search makes ~100k


@dataclass
class Fit:
    selected: list[int]  # candidate indices
    x: np.ndarray  # counts of each selected ion
    x_err: np.ndarray
    chi2: float
    cost: float
    delta_cost: dict[int, float] = field(default_factory=dict)  # J without k minus J


class _Problem:
    """The weighted problem and fits restricted to the rows the columns touch."""

    def __init__(self, rows: Rows, a_mat: np.ndarray, cands: list[Candidate],
                 extra_cost: np.ndarray | None = None):
        w = 1.0 / np.sqrt(rows.var)
        self.ion_cost = np.array([c.cost for c in cands]) + (
            0.0 if extra_cost is None else extra_cost)
        self.aw = a_mat * w[:, None]
        self.yw = rows.y * w
        self.det = rows.detected
        self.yw2 = self._capped(self.yw, self.det)
        self.total = float(self.yw2.sum())
        self.nz = a_mat != 0
        self.cands = cands
        self.n_detected = int(rows.detected.sum())
        self.a_det = a_mat[: self.n_detected]
        # x, chi2, cost (None: not computed, the prior reached the bound) and prior
        self._memo: dict[tuple[int, ...], tuple[np.ndarray, float, float | None, float]] = {}
        self._groups: dict[tuple[int, ...], tuple[list[float], float]] = {}
        nzf = self.nz.astype(np.float32)
        self.adjacent = (nzf.T @ nzf) > 0  # columns sharing a row (each with itself)
        fd = [c.formula_dict for c in cands]
        self.el_names = sorted({e for c in cands for e in c.elements})
        col = {e: i for i, e in enumerate(self.el_names)}
        self.n_atoms = np.zeros((len(cands), len(self.el_names)))  # ions x elements
        for k, c in enumerate(cands):
            for e, n in c.formula:
                self.n_atoms[k, col[e]] = n
        self.member = (self.n_atoms > 0).astype(float)  # c.elements are the formula's
        self.el_cost = np.array([element_cost(e) for e in self.el_names])
        self._el_bits = [sum(1 << col[e] for e in c.elements) for c in cands]
        self._tier_bits = [(c, sum(1 << i for i, e in enumerate(self.el_names)
                                   if element_cost(e) == c)) for c in set(self.el_cost.tolist())]
        self.atomic_of = [next(iter(f)) if len(f) == 1 and sum(f.values()) == 1 else None
                          for f in fd]
        self.hydride_of = [next(e for e in f if e != "H")
                           if len(f) == 2 and "H" in f and sum(f.values()) - f["H"] == 1
                           else None for f in fd]

    @staticmethod
    def _capped(res: np.ndarray, det: np.ndarray) -> np.ndarray:
        """Squared weighted residuals; a detected peak left (partly) unexplained costs at most
        UNKNOWN_COST: "an ion not among the candidates" is an explanation too."""
        r2 = res * res
        return np.where(res > 0, np.minimum(r2, np.where(det, UNKNOWN_COST, ABSENT_CAP)), r2)

    def fit(self, sel: list[int]) -> tuple[np.ndarray, float]:
        """Non-negative fit of the columns ``sel`` (sorted), group by group: columns that
        share no row (directly or through others) are independent problems, each fitted once
        and remembered (a swap or a removal refits only the group it touches)."""
        if not sel:
            return np.zeros(0), self.total
        pos, starts = _components(self.adjacent, np.asarray(sel, dtype=np.int64))
        where, cut = pos.tolist(), starts.tolist()
        x = [0.0] * len(sel)
        chi2 = self.total
        for a, b in itertools.pairwise(cut):
            key = tuple([sel[i] for i in where[a:b]])
            hit = self._groups.get(key)
            if hit is None:
                xg, dchi2 = self._fit_group(list(key))
                hit = (xg.tolist(), dchi2)
                if len(self._groups) >= MEMO_MAX:
                    self._groups.clear()
                self._groups[key] = hit
            for i, v in zip(where[a:b], hit[0], strict=True):
                x[i] = v
            chi2 += hit[1]
        return np.array(x), chi2

    def _fit_group(self, sel: list[int]) -> tuple[np.ndarray, float]:
        """(x, change of chi2 from the empty model) of one group of columns."""
        r = np.nonzero(self.nz[:, sel].any(1))[0]
        a, y, det = self.aw[np.ix_(r, np.asarray(sel))], self.yw[r], self.det[r]
        it = 50 * len(sel) + 100
        x, _ = nnls(a, y, maxiter=it)
        res = y - a @ x
        unknown = (res > 0) & (res * res > np.where(det, UNKNOWN_COST, ABSENT_CAP))
        if unknown.any() and not unknown.all():  # fit without the peaks left to "unknown"
            x, _ = nnls(a[~unknown], y[~unknown], maxiter=it)
            res = y - a @ x
        return x, float(self._capped(res, det).sum()) - float(self.yw2[r].sum())

    def prior(self, sel: list[int], chi2: float) -> float:
        """chi2 and the ions' and elements' costs: the part of :meth:`cost` known before
        the fit's amounts, and a lower bound of it (the other terms are >= 0)."""
        if not sel:
            return chi2
        els = 0  # the elements present, as a bit mask: each pays once
        for k in sel:
            els |= self._el_bits[k]
        return (chi2 + float(self.ion_cost[sel].sum())
                + sum(c * (els & m).bit_count() for c, m in self._tier_bits))

    def cost(self, sel: list[int], prior: float, x: np.ndarray) -> float:
        """The search's objective: :meth:`prior` plus the terms from the amounts ``x``."""
        return (prior
                + LONE_TRACE_COST * len(self.lone_traces(sel, x))
                + HYDRIDE_COST * self.hydrides_over_parent(sel, x)
                + self.cluster_cost(sel, x))

    def cluster_cost(self, sel: list[int], x: np.ndarray) -> float:
        """Sum over the selected ions of ``-2 (n - 1) ln c`` for each element with n >= 2
        atoms in the ion, c its atomic fraction in the fit (see module doc): the chance that
        an evaporating ion carries a second atom of an element grows with its concentration
        (O2+ in an oxide, c ~ 0.5: 1.4; N2O+ with N at 1.7 % of calcite's atoms: 8.1)."""
        if not sel:
            return 0.0
        n = self.n_atoms[sel]
        extra = np.maximum(n - 1.0, 0.0).sum(0)  # beyond-first atoms, per element
        if not extra.any():
            return 0.0
        atoms = x @ n
        c = atoms / max(float(atoms.sum()), 1e-300)
        return float(-2.0 * (extra * np.log(np.maximum(c, 1e-6))).sum())

    def hydrides_over_parent(self, sel: list[int], x: np.ndarray) -> int:
        """Elements whose hydride ions (XH+, XH2+, any charge) outnumber their atomic ions:
        hydrides form from residual hydrogen on the surface, a few to some tens of % of the
        atomic ion (NiH+ beside Ni+ on apav's Si run); a hydride standing in for its parent
        is more likely another ion on its peak (calcite: GaH+ on 70 and 72 Da, 4 % of the
        ions, beside 1.3k Ga+, where the human's ranges have Ca2CO3 2+ and CaO2+)."""
        hyd: dict[str, float] = {}
        atom: dict[str, float] = {}
        for i, k in enumerate(sel):
            if (e := self.hydride_of[k]) is not None:
                hyd[e] = hyd.get(e, 0.0) + float(x[i])
            elif (e := self.atomic_of[k]) is not None:
                atom[e] = atom.get(e, 0.0) + float(x[i])
        return sum(1 for e, v in hyd.items() if v > atom.get(e, 0.0))

    def lone_traces(self, sel: list[int], x: np.ndarray) -> list[str]:
        """Trace elements (their ions < ``TRACE_SHARE`` of the fitted counts) that hold a
        major share (>= ``SUPPORT_SHARE``) of fewer than two detected peaks."""
        if not sel:
            return []
        member = self.member[sel]  # selected ions x elements
        x_el = x @ member
        trace = np.nonzero(member.any(0) & (x_el < TRACE_SHARE * float(x.sum())))[0]
        if len(trace) == 0:
            return []
        contrib = self.a_det[:, sel] * x[None, :]
        tot = contrib.sum(1)
        share = contrib @ member[:, trace]  # each detected peak's counts of each element
        major = (share >= SUPPORT_SHARE * tot[:, None]) & (share > 0)
        return [self.el_names[e] for e in trace[np.count_nonzero(major, axis=0) < 2]]

    def evaluate(self, sel: list[int], bound: float = np.inf) -> tuple[np.ndarray, float, float]:
        """(x in the order of ``sel``, chi2, cost); a set fitted before is not fitted again
        (the forward, swap and element-removal searches revisit the same sets). With a
        ``bound`` the caller rejects any cost at or above, the cost returned may be just its
        lower bound :meth:`prior` when that is already at the bound (most trials of a search:
        the terms from the amounts are then never computed)."""
        order = sorted(range(len(sel)), key=sel.__getitem__)
        key = tuple([sel[i] for i in order])
        hit = self._memo.get(key)
        if hit is None or (hit[2] is None and hit[3] < bound):
            if hit is None:
                xs, chi2 = self.fit(list(key))
                low = self.prior(list(key), chi2)
            else:
                xs, chi2, _, low = hit
            full = self.cost(list(key), low, xs) if low < bound else None
            if len(self._memo) >= MEMO_MAX:  # bounded memory: start over (a miss refits)
                self._memo.clear()
            self._memo[key] = hit = (xs, chi2, full, low)
        x = np.empty(len(sel))
        x[order] = hit[0]
        return x, hit[1], hit[3] if hit[2] is None else hit[2]


@njit(cache=True)
def _components(adjacent: np.ndarray, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The columns ``sel`` (sorted) in groups connected through shared rows (``adjacent``):
    positions in ``sel``, group after group, each group sorted and the groups in the order
    of their first column; and the groups' starts in that array, with its end."""
    n = len(sel)
    group = np.full(n, -1, np.int64)
    pos = np.empty(n, np.int64)
    starts = np.empty(n + 1, np.int64)
    stack = np.empty(n, np.int64)
    m = g = 0
    for i in range(n):
        if group[i] >= 0:
            continue
        starts[g] = m
        group[i] = g
        pos[m] = i
        m += 1
        stack[0] = i
        top = 1
        while top:
            top -= 1
            ka = sel[stack[top]]
            for b in range(i + 1, n):
                if group[b] < 0 and adjacent[ka, sel[b]]:
                    group[b] = g
                    pos[m] = b
                    m += 1
                    stack[top] = b
                    top += 1
        pos[starts[g]:m].sort()
        g += 1
    starts[g] = m
    return pos, starts[:g + 1]


def _prune(pb: _Problem, sel: list[int], x: np.ndarray, chi2: float, cost: float):
    """Backward elimination, and ions the refit set to zero dropped."""
    changed = True
    while changed and sel:
        changed = False
        keep = [i for i in range(len(sel)) if x[i] > 0]
        if len(keep) < len(sel):
            sel = [sel[i] for i in keep]
            x, chi2, cost = pb.evaluate(sel)
            changed = True
            continue
        for i in range(len(sel)):
            trial = sel[:i] + sel[i + 1:]
            xt, chi2t, ct = pb.evaluate(trial, bound=cost)
            if ct < cost:
                sel, x, chi2, cost = trial, xt, chi2t, ct
                changed = True
                break
    return sel, x, chi2, cost


def _forward(pb: _Problem, sel, x, chi2, cost, max_steps: int,
             banned: np.ndarray | None = None):
    aw, yw = pb.aw, pb.yw
    norm2 = (aw * aw).sum(0)
    usable = norm2 > 0
    if banned is not None:
        usable &= ~banned
    ion_costs = pb.ion_cost
    el_names, member = pb.el_names, pb.member
    el_cost = pb.el_cost
    for _ in range(max_steps):
        r = yw - (aw[:, sel] @ x if sel else 0.0)
        g = aw.T @ r
        gain = np.where(usable & (g > 0), g * g / np.where(usable, norm2, 1.0), 0.0)
        have = np.zeros(len(el_names))
        for k in sel:
            have = np.maximum(have, member[k])
        extra = member @ (el_cost * (1.0 - have))
        net = gain - ion_costs - extra
        if sel:
            net[sel] = -np.inf
        k = int(np.argmax(net))
        if net[k] <= 0:
            break
        trial = [*sel, k]
        xt, chi2t, ct = pb.evaluate(trial, bound=cost)
        if ct >= cost:  # the one-column estimate was optimistic: no real gain
            usable[k] = False
            continue
        sel, x, chi2, cost = _prune(pb, trial, xt, chi2t, ct)
    return sel, x, chi2, cost


def _swap(pb: _Problem, sel, x, chi2, cost, n_try: int = 32,
          banned: np.ndarray | None = None):
    """Replace one selected ion by another that shares a detected peak with it, while that
    lowers the cost (a greedy path can settle on MnN+ where Ga+ explains 69 and 71 Da). The
    alternatives are ranked by their one-column gain on the residual without the ion; the
    best ``n_try`` are refitted (the one-column gain misranks: Ga+ for MnN+ ranked 6th on a
    coated NMC811 run, its 71 Da share taken by MnO+ until the refit)."""
    nd = pb.n_detected
    aw, yw = pb.aw, pb.yw
    norm2 = (aw * aw).sum(0)
    costs = pb.ion_cost + np.array([sum(element_cost(e) for e in c.elements)
                                    for c in pb.cands])
    improved = True
    while improved:
        improved = False
        best: tuple[float, tuple[list[int], np.ndarray, float] | None] = (cost, None)
        r_all = yw - aw[:, sel] @ x
        for i, k in enumerate(sel):
            rows_k = pb.nz[:nd, k]
            alts = np.nonzero(pb.nz[:nd][rows_k].any(0))[0]
            alts = alts[~np.isin(alts, sel)]
            if banned is not None:
                alts = alts[~banned[alts]]
            if len(alts) == 0:
                continue
            r = r_all + aw[:, k] * x[i]
            g = aw[:, alts].T @ r
            est = np.where(g > 0, g * g / np.maximum(norm2[alts], 1e-300), 0.0) - costs[alts]
            for j in alts[np.argsort(-est)[:n_try]]:
                trial = [*sel[:i], int(j), *sel[i + 1:]]
                xt, chi2t, ct = pb.evaluate(trial, bound=best[0] - 1e-9)
                if ct < best[0] - 1e-9:
                    best = (ct, (trial, xt, chi2t))
        if best[1] is not None:
            trial, xt, chi2t = best[1]
            sel, x, chi2, cost = _prune(pb, trial, xt, chi2t, best[0])
            improved = True
    return sel, x, chi2, cost


def _add_refit(pb: _Problem, sel, x, chi2, cost):
    """Add the ion that lowers the cost most once everything is refitted, among those of
    elements already selected that share a detected peak with a selected ion, while one does.
    The forward step ranks an ion by its fit to the residual, which misses one whose peak
    another ion has absorbed: 55Mn16O+ 0.008 Da above 71Ga+, whose 71 Da counts Ga+ takes by
    overshooting its 69 Da partner (coated NMC811: MnO+ lowers the cost by ~10 refitted, with
    ~0 one-column gain)."""
    nd = pb.n_detected
    while sel:
        have = {e for k in sel for e in pb.cands[k].elements}
        near = pb.nz[:nd][pb.nz[:nd][:, sel].any(1)].any(0)
        best = None
        for k in np.nonzero(near)[0]:
            if k in sel or not set(pb.cands[k].elements) <= have:
                continue
            bound = cost - 1e-9 if best is None else min(cost - 1e-9, best[3])
            xt, c2t, ct = pb.evaluate([*sel, int(k)], bound)
            if ct < bound:
                best = ([*sel, int(k)], xt, c2t, ct)
        if best is None:
            break
        sel, x, chi2, cost = _prune(pb, *best)
    return sel, x, chi2, cost


def _drop_element(pb: _Problem, sel, x, chi2, cost, max_steps: int):
    """Remove every ion of one element and refill without it (forward steps and swaps), while
    that lowers the cost: one-ion swaps cannot replace an element whose ions share several
    peaks with another's (MnN+ and (MnN)2+ on 69 and 34.5 Da where Ga+ and Ga2+ explain
    69, 71, 34.5 and 35.5 Da)."""
    nd = pb.n_detected
    improved = True
    while improved:
        improved = False
        best = None
        x_el: dict[str, float] = {}
        for i, k in enumerate(sel):
            for e in pb.cands[k].elements:
                x_el[e] = x_el.get(e, 0.0) + float(x[i])
        for el in sorted(e for e, v in x_el.items() if v < DOUBT_SHARE * float(x.sum())):
            of_el = np.array([el in c.elements for c in pb.cands])
            gone = [k for k in sel if of_el[k]]
            # the refill looks only at ions sharing a detected peak with those removed
            near = pb.nz[:nd][pb.nz[:nd][:, gone].any(1)].any(0)
            banned = of_el | ~near
            trial = [k for k in sel if not of_el[k]]
            xt, c2t, ct = pb.evaluate(trial)
            trial, xt, c2t, ct = _forward(pb, trial, xt, c2t, ct, max_steps, banned)
            trial, xt, c2t, ct = _swap(pb, trial, xt, c2t, ct, banned=banned)
            if ct < cost - 1e-9 and (best is None or ct < best[3]):
                best = (trial, xt, c2t, ct)
        if best is not None:
            sel, x, chi2, cost = best
            improved = True
    return sel, x, chi2, cost


def select(rows: Rows, a_mat: np.ndarray, cands: list[Candidate],
           extra_cost: np.ndarray | None = None, max_steps: int = 200) -> Fit:
    """Greedy forward selection with backward elimination and swaps (see module doc);
    ``extra_cost`` per candidate adds to its prior (the position cost)."""
    pb = _Problem(rows, a_mat, cands, extra_cost)
    sel: list[int] = []
    x, chi2, cost = pb.evaluate(sel)
    for _ in range(5):
        before = cost
        sel, x, chi2, cost = _forward(pb, sel, x, chi2, cost, max_steps)
        sel, x, chi2, cost = _swap(pb, sel, x, chi2, cost)
        sel, x, chi2, cost = _add_refit(pb, sel, x, chi2, cost)
        if cost >= before - 1e-9:
            sel, x, chi2, cost = _drop_element(pb, sel, x, chi2, cost, max_steps)
            if cost >= before - 1e-9:
                break
    x_err = np.zeros(len(sel))
    if sel:
        r = np.nonzero(pb.nz[:, sel].any(1))[0]
        m = pb.aw[np.ix_(r, np.asarray(sel))]
        try:
            cov = np.linalg.inv(m.T @ m)
            x_err = np.sqrt(np.clip(np.diag(cov), 0, None))
        except np.linalg.LinAlgError:
            x_err = np.sqrt(np.maximum(x, 1.0))
    delta = {}
    for i, k in enumerate(sel):
        _xt, _c2, ct = pb.evaluate(sel[:i] + sel[i + 1:])
        delta[k] = ct - cost
    return Fit(sel, x, x_err, chi2, cost, delta)

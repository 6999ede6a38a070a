"""Windows of a peak shared by several ions: each bin to the ion expected to hold most of it.

The fit says how many ions of each kind a peak holds (64Ni2+ under O2+ at 32 Da, 69Ga+ under
53Cr16O+ at 69 Da); it does not say which ion a given m/n is. Their isotopologues sit at
slightly different m/n (0.026 Da apart at 32 Da, 0.010 Da at 69 Da), so inside the peak the
expected count of ion ``j`` in bin ``b`` is ``n_j T(b - b_j)``: ``T`` the shape of a clean
peak nearby (one ion holding >= 99 % of it, the nearest in m/n; in log bins one shape fits
the neighbourhood of a constant resolving power), ``b_j`` the ion's m/n moved by the
calibration offset that clean peak shows. Naming each bin after the ion with the largest
expected count is the assignment that gets the most ions right under that model, and the
peak's window becomes one range per run of bins of one ion. Ions the model cannot tell apart
(71Ga+ and 55Mn16O+, 0.005 Da apart: under a bin) simply give one run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apt_daq.pipeline.autorange.spectrum import LogSpectrum, Peak

CLEAN_SHARE = 0.99  # a template peak: one ion holds at least this share of it
MIN_TEMPLATE_COUNTS = 300.0
MIN_SHARE = 0.003  # ions below this share of a peak do not get bins of their own,
MIN_COUNTS = 20.0  # nor below these counts (too few to be worth a range)
TAIL_SHARE = 0.01
DOMINANT = 0.9


@dataclass
class Template:
    """A clean peak's shape: net counts per bin against the bin centre's offset (bins) from
    its mode, normalised to sum 1, and the calibration offset its mode shows."""

    mass_da: float
    offset_rel: float  # mode / true m/n - 1
    d: np.ndarray
    shape: np.ndarray


def template_of(spec: LogSpectrum, bg: np.ndarray, pk: Peak, true_da: float) -> Template:
    b = np.arange(pk.lo_bin, pk.hi_bin)
    net = np.clip(spec.counts[b] - bg[b], 0.0, None)
    mode = float(spec.bin_of(pk.mass_da))
    # unimodal: falling away from the top on both sides (counting noise in the tails would
    # otherwise hand alternate bins to alternate ions)
    top = int(np.argmax(net))
    shape = net.copy()
    shape[top:] = np.minimum.accumulate(shape[top:])
    shape[: top + 1] = np.minimum.accumulate(shape[: top + 1][::-1])[::-1]
    return Template(pk.mass_da, pk.mass_da / true_da - 1.0, (b + 0.5) - mode,
                    shape / max(shape.sum(), 1e-300))


def nearest_template(templates: list[Template], mass_da: float) -> Template | None:
    """The template nearest ``mass_da`` in log(m), not the peak at ``mass_da`` itself (a
    shared peak's shape carries its minor ion, the very thing to be placed)."""
    others = [t for t in templates if abs(t.mass_da / mass_da - 1.0) > 1e-6]
    if not others:
        return None
    return min(others, key=lambda t: abs(np.log(t.mass_da / mass_da)))


@dataclass
class Segment:
    """One run of bins of a split peak: its bins, the ion named, and every ion's expected
    counts (and error) inside it."""

    lo_bin: int
    hi_bin: int
    ion: int  # index into the ions passed to split_peak
    shares: dict[int, tuple[float, float]]


def split_peak(spec: LogSpectrum, pk: Peak, ions: list[tuple[float, float, float]],
               tpl: Template | None) -> list[Segment]:
    """``ions``: (counts, error, true m/n Da) of each ion in the peak. One segment for the
    whole window unless two or more ions hold >= ``MIN_SHARE`` of it and >= ``MIN_COUNTS``,
    and a template is known."""
    n = np.array([c for c, _, _ in ions])
    err = np.array([e for _, e, _ in ions])
    tot = n.sum()
    whole = Segment(pk.lo_bin, pk.hi_bin, int(np.argmax(n)),
                    {j: (float(n[j]), float(err[j])) for j in range(len(ions))})
    big = np.nonzero(n >= max(MIN_SHARE * tot, MIN_COUNTS))[0]
    if tpl is None or len(big) < 2 or tot <= 0:
        return [whole]
    # the ions' calibration offset: the peak's own when one ion dominates it (its mode is
    # that ion's), else the template's
    main = int(np.argmax(n))
    offset = (pk.mass_da / ions[main][2] - 1.0 if n[main] >= DOMINANT * tot
              else tpl.offset_rel)
    pos = np.array([float(spec.bin_of(ions[j][2] * (1.0 + offset))) for j in big])
    # ions less than a bin apart cannot be told by m/n: the larger stands for both
    order = np.argsort(pos)
    keep: list[int] = []
    for i in order:
        if keep and pos[i] - pos[keep[-1]] < 1.0:
            if n[big[i]] > n[big[keep[-1]]]:
                keep[-1] = int(i)
            continue
        keep.append(int(i))
    if len(keep) < 2:
        return [whole]
    big, pos = big[keep], pos[keep]  # by position
    b = np.arange(pk.lo_bin, pk.hi_bin) + 0.5
    expect = np.array([n[j] * np.interp(b - p, tpl.d, tpl.shape, left=0.0, right=0.0)
                       for j, p in zip(big, pos, strict=True)])
    if not expect.any():
        return [whole]
    owner = _ordered_owner(expect)
    # a bin in every ion's far tail (each expects < TAIL_SHARE of its own top bin's counts
    # there: the template's end, not the ions' shapes, decides) keeps the nearest informed
    # bin's owner (the order along m/n stays)
    rel = expect / np.maximum(expect.max(1, keepdims=True), 1e-300)
    known = np.nonzero(rel.max(0) >= TAIL_SHARE)[0]
    owner = owner[known[np.clip(np.searchsorted(known, np.arange(len(b))), 0, len(known) - 1)]]
    frac = expect / np.maximum(expect.sum(1, keepdims=True), 1e-300)  # of each ion, per bin
    all_frac = expect.sum(0) / expect.sum()
    small = [j for j in range(len(ions)) if j not in set(big.tolist())]
    out = []
    start = 0
    for i in range(1, len(b) + 1):
        if i < len(b) and owner[i] == owner[start]:
            continue
        shares: dict[int, tuple[float, float]] = {}
        for k, jb in enumerate(big.tolist()):
            f = float(frac[k, start:i].sum())
            if f > 0:
                shares[jb] = (float(n[jb]) * f, float(err[jb]) * f)
        f_all = float(all_frac[start:i].sum())
        for js in small:  # too small to place: spread like the peak
            shares[js] = (float(n[js]) * f_all, float(err[js]) * f_all)
        out.append(Segment(pk.lo_bin + start, pk.lo_bin + i, int(big[owner[start]]), shares))
        start = i
    return out


def _ordered_owner(expect: np.ndarray) -> np.ndarray:
    """Owner of each bin (row of ``expect``, ions in m/n order) maximising the expected
    counts named right, each ion one run of bins and the runs in m/n order (a dynamic
    programme over bins x ions)."""
    n_ion, n_bin = expect.shape
    score = np.empty((n_bin, n_ion))
    back = np.zeros((n_bin, n_ion), np.int64)
    score[0] = expect[:, 0]
    for i in range(1, n_bin):
        best = np.maximum.accumulate(score[i - 1])
        arg = np.zeros(n_ion, np.int64)
        for j in range(1, n_ion):
            arg[j] = arg[j - 1] if score[i - 1, arg[j - 1]] >= score[i - 1, j] else j
        score[i] = best + expect[:, i]
        back[i] = arg
    owner = np.zeros(n_bin, np.int64)
    owner[-1] = int(np.argmax(score[-1]))
    for i in range(n_bin - 1, 0, -1):
        owner[i - 1] = back[i, owner[i]]
    return owner

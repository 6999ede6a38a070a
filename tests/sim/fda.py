"""A quick frequency distribution analysis (Moody et al. 2008) to check the simulator's Li
clustering; the pipeline's own FDA lives in apt_daq.analysis."""

from __future__ import annotations

import math

import numpy as np


def pearson_mu(is_solute: np.ndarray, block: int = 100, min_expected: float = 5.0) -> float:
    """Normalised Pearson coefficient mu = sqrt(chi2 / (N + chi2)) of the solute counts in
    consecutive blocks of ``block`` ions against the binomial of the overall fraction.
    Bins with expectation below ``min_expected`` are pooled into their neighbours (tails)."""
    n_blocks = len(is_solute) // block
    if n_blocks < 2:
        return float("nan")
    counts = is_solute[: n_blocks * block].reshape(n_blocks, block).sum(axis=1)
    p = counts.sum() / (n_blocks * block)
    k = np.arange(block + 1)
    logc = np.array([math.lgamma(block + 1) - math.lgamma(i + 1) - math.lgamma(block - i + 1)
                     for i in k])
    with np.errstate(divide="ignore"):
        pmf = np.exp(logc + k * np.log(max(p, 1e-300)) + (block - k) * np.log(max(1 - p, 1e-300)))
    expected = pmf * n_blocks
    observed = np.bincount(counts, minlength=block + 1).astype(float)
    # pool bins from both tails towards the mode until each pooled bin expects >= min_expected
    eo, oo, e_acc, o_acc = [], [], 0.0, 0.0
    for e, o in zip(expected, observed, strict=True):
        e_acc += e
        o_acc += o
        if e_acc >= min_expected:
            eo.append(e_acc)
            oo.append(o_acc)
            e_acc = o_acc = 0.0
    if e_acc > 0 or o_acc > 0:
        if eo:
            eo[-1] += e_acc
            oo[-1] += o_acc
        else:
            eo.append(e_acc)
            oo.append(o_acc)
    eo_a, oo_a = np.array(eo), np.array(oo)
    chi2 = float(np.sum((oo_a - eo_a) ** 2 / eo_a))
    return math.sqrt(chi2 / (n_blocks + chi2))

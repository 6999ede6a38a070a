"""Frequency distribution analysis (Moody et al., Microsc. Res. Tech. 71, 542, 2008).

The ions of a region are taken in evaporation order and cut into consecutive blocks of N_b
ions (the paper: 100). For a species of overall fraction p, a random solid solution gives block
counts k ~ Binomial(N_b, p). We compare the observed histogram of k with the binomial
expectation e_k = N_blocks * pmf(k):

    chi2 = sum_k (o_k - e_k)^2 / e_k,      mu = sqrt(chi2 / (N_blocks + chi2)),

mu in [0, 1): 0 for a random mixture, -> 1 for a fully separated one.

Pooling rule (stated): starting from each tail, bins are merged inward until the merged
expectation is >= 5 (the usual chi-square validity rule); the observed counts are pooled the
same way, so observations beyond the last expected bin land in the tail bin. Degrees of
freedom = pooled bins - 2 (the fraction p is estimated from the data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def block_counts_kernel(is_species, block):
    """Number of species hits in each complete block of ``block`` ions."""
    n_blocks = is_species.shape[0] // block
    out = np.zeros(n_blocks, dtype=np.int64)
    for b in range(n_blocks):
        s = 0
        base = b * block
        for j in range(block):
            s += is_species[base + j]
        out[b] = s
    return out


def binomial_pmf(n: int, p: float) -> np.ndarray:
    """pmf of Binomial(n, p) for k = 0..n, computed in log space (stable for n ~ 1000)."""
    k = np.arange(n + 1)
    if p <= 0:
        return (k == 0).astype(float)
    if p >= 1:
        return (k == n).astype(float)
    lg = np.array([math.lgamma(i + 1) for i in range(n + 1)])
    logp = lg[n] - lg - lg[::-1] + k * math.log(p) + (n - k) * math.log1p(-p)
    return np.exp(logp)


def pool_bins(expected: np.ndarray, observed: np.ndarray, min_expected: float = 5.0):
    """Merge tail bins until each pooled expectation is >= ``min_expected``."""
    e = list(expected)
    o = list(observed)
    # low tail
    while len(e) > 1 and e[0] < min_expected:
        pe, po = e.pop(0), o.pop(0)
        e[0] += pe
        o[0] += po
    while len(e) > 1 and e[-1] < min_expected:
        pe, po = e.pop(), o.pop()
        e[-1] += pe
        o[-1] += po
    # any interior bin still small (multimodal expectation: never for a binomial)
    i = 0
    while i < len(e) and len(e) > 1:
        if e[i] < min_expected:
            pe, po = e.pop(i), o.pop(i)
            j = i if i < len(e) else i - 1
            e[j] += pe
            o[j] += po
            i = 0
        else:
            i += 1
    return np.array(e), np.array(o)


@dataclass
class FdaResult:
    species: str
    block_ions: int
    blocks: int
    fraction: float
    chi2: float
    dof: int
    mu: float
    observed: np.ndarray  # histogram of k = 0..N_b
    expected: np.ndarray  # binomial expectation for k = 0..N_b

    def as_dict(self) -> dict:
        return {"mu": self.mu, "chi2": self.chi2, "blocks": self.blocks, "dof": self.dof,
                "fraction": self.fraction, "block_ions": self.block_ions}  # fmt: skip


def fda(is_species: np.ndarray, block_ions: int = 100, species: str = "") -> FdaResult:
    """FDA of a boolean sequence (species or not, in evaporation order)."""
    seq = np.asarray(is_species, dtype=np.uint8)
    k = block_counts_kernel(seq, int(block_ions))
    return fda_of_blocks(np.bincount(k, minlength=block_ions + 1), block_ions, species)


def fda_of_blocks(block_histogram: np.ndarray, block_ions: int = 100,
                  species: str = "") -> FdaResult:
    """FDA from the histogram of the blocks' species counts (``block_histogram[k]``: blocks
    holding k ions of the species, k = 0..block_ions): what :func:`fda` computes from the
    sequence, and :class:`FdaAccumulator` from a stream."""
    observed = np.asarray(block_histogram, dtype=np.int64)[: block_ions + 1]
    n_blocks = int(observed.sum())
    nan = float("nan")
    if n_blocks == 0:
        z = np.zeros(block_ions + 1)
        return FdaResult(species, block_ions, 0, nan, nan, 0, nan, z, z)
    p = float((np.arange(len(observed)) * observed).sum()) / (n_blocks * block_ions)
    observed = observed.astype(float)
    expected = n_blocks * binomial_pmf(block_ions, p)
    e, o = pool_bins(expected, observed)
    if len(e) < 2:
        return FdaResult(species, block_ions, n_blocks, p, nan, 0, nan, observed, expected)
    chi2 = float(np.sum((o - e) ** 2 / e))
    mu = math.sqrt(chi2 / (n_blocks + chi2))
    return FdaResult(species, block_ions, n_blocks, p, chi2, len(e) - 2, mu, observed, expected)


class FdaAccumulator:
    """:func:`fda` of a sequence that arrives in chunks (in evaporation order): the blocks
    completed so far are counted, the unfinished last block carried to the next chunk, so
    memory is one block and the histogram, not the sequence."""

    def __init__(self, block_ions: int = 100, species: str = "") -> None:
        self.block_ions = int(block_ions)
        self.species = species
        self.observed = np.zeros(self.block_ions + 1, dtype=np.int64)
        self._carry = np.zeros(0, dtype=np.uint8)
        self.n_ions = 0

    def add(self, is_species: np.ndarray) -> None:
        seq = np.asarray(is_species, dtype=np.uint8)
        self.n_ions += len(seq)
        if len(self._carry):
            seq = np.concatenate([self._carry, seq])
        k = block_counts_kernel(seq, self.block_ions)
        self.observed += np.bincount(k, minlength=self.block_ions + 1)
        self._carry = seq[len(k) * self.block_ions :].copy()

    def result(self) -> FdaResult:
        return fda_of_blocks(self.observed, self.block_ions, self.species)

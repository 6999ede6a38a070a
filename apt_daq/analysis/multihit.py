"""Multi-hit events: how many ions each detected event holds, and the correlation (Saxey)
histogram of the ions that arrive together.

An *event* is every hit recorded on one pulse (hits share ``pulse``; a run and an imported
EPOS/APT file keep them in pulse order, arrival order within the pulse). Per event of ``k``
hits the ``k (k - 1) / 2`` pairs (hit i, hit j), i before j in arrival order, go into a 2-D
histogram of (m/n of hit i, m/n of hit j): the correlation histogram of Saxey,
Ultramicroscopy 111, 473 (2011), the convention of apav's ``CorrelationHistogram`` (pairs in
file order, ``multiplicity="multiples"``). Ions of one evaporation event sit on points;
molecular ions that dissociate in flight draw a curved track between the products' own m/n
and the parent's (:func:`dissociation_track`).

The statistics: events by multiplicity (1, 2, 3, ...), the share of events that hold more
than one hit, and the share of ions that arrive in such events (per ion: a double counts two
ions). Streaming: :class:`MultiHitAccumulator` takes chunks of (pulse, m/n) in pulse order
and carries the last, possibly unfinished, event to the next chunk; memory is the histogram.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

BIN_DA = 0.1  # the correlation histogram's bins (apav's default)
MAX_PAIR_OFFSET = 64  # pairs formed among the first 65 hits of an event at most
DISPLAY_BINS = 400  # the plot pools bins to at most this many a side


@dataclass
class MultiHitResult:
    """Events by multiplicity (``events[k]``: events of k hits, k >= 1; the last entry holds
    every larger event) and the correlation histogram ``saxey[i, j]``: pairs with the earlier
    hit's m/n in bin i and the later hit's in bin j (``edges`` in Da, on both axes)."""

    events: np.ndarray
    saxey: np.ndarray
    edges: np.ndarray

    @property
    def n_events(self) -> int:
        return int(self.events[1:].sum())

    @property
    def n_ions(self) -> int:
        k = np.arange(len(self.events))
        return int((k * self.events).sum())

    @property
    def multi_event_fraction(self) -> float:
        """Share of events with two or more hits."""
        n = self.n_events
        return float(self.events[2:].sum() / n) if n else math.nan

    @property
    def multi_ion_fraction(self) -> float:
        """Share of ions that arrived in an event with two or more hits."""
        n = self.n_ions
        k = np.arange(len(self.events))
        return float((k[2:] * self.events[2:]).sum() / n) if n else math.nan

    @property
    def n_pairs(self) -> int:
        return int(self.saxey.sum())

    def as_dict(self) -> dict[str, Any]:
        last = int(np.max(np.nonzero(self.events)[0])) if self.events.any() else 1
        n = max(self.n_events, 1)
        return {
            "events": self.n_events,
            "ions": self.n_ions,
            "multi_event_fraction": self.multi_event_fraction,
            "multi_ion_fraction": self.multi_ion_fraction,
            "events_by_multiplicity": {str(k): int(self.events[k]) for k in range(1, last + 1)
                                       if self.events[k]},
            "event_fraction_by_multiplicity": {str(k): float(self.events[k] / n)
                                               for k in range(1, last + 1) if self.events[k]},
            "pairs": self.n_pairs,
            "pairs_bin_da": float(self.edges[1] - self.edges[0]),
        }


class MultiHitAccumulator:
    """Event statistics and the correlation histogram over chunks of hits (see module doc).
    ``max_da``: the histogram's extent on both axes (0 to max_da); ``max_multiplicity``: the
    largest multiplicity counted on its own (larger events are counted in the last entry)."""

    def __init__(self, max_da: float = 200.0, bin_da: float = BIN_DA,
                 max_multiplicity: int = 32) -> None:
        self.nb = max(1, math.ceil(max_da / bin_da - 1e-9))
        self.bin_da = float(bin_da)
        self.edges = np.arange(self.nb + 1) * self.bin_da
        self.saxey = np.zeros((self.nb, self.nb), dtype=np.int64)
        self.events = np.zeros(max_multiplicity + 1, dtype=np.int64)
        self._pulse = np.zeros(0, dtype=np.int64)
        self._mass = np.zeros(0, dtype=np.float64)

    def add(self, pulse: np.ndarray, mass: np.ndarray) -> None:
        """A chunk of hits in pulse order (arrival order within a pulse)."""
        if len(pulse) and pulse_order_kernel(self._pulse, pulse):  # the usual case
            k = events_kernel(self._pulse, self._mass, pulse, mass, self.bin_da, self.events,
                              self.saxey)  # fmt: skip
            nc = len(self._pulse)
            if k >= nc:
                self._pulse = np.asarray(pulse[k - nc :], dtype=np.int64)
                self._mass = np.asarray(mass[k - nc :], dtype=np.float64)
            else:  # the whole chunk continues the carried event
                self._pulse = np.concatenate([self._pulse, np.asarray(pulse, dtype=np.int64)])
                self._mass = np.concatenate([self._mass, np.asarray(mass, dtype=np.float64)])
            return
        self._add_sorting(pulse, mass)

    def _add_sorting(self, pulse: np.ndarray, mass: np.ndarray) -> None:
        """:meth:`add` of hits out of pulse order: sorted (stably) with the carried event."""
        p = np.concatenate([self._pulse, np.asarray(pulse, dtype=np.int64)])
        m = np.concatenate([self._mass, np.asarray(mass, dtype=np.float64)])
        if len(p) == 0:
            return
        if np.any(p[1:] < p[:-1]):
            order = np.argsort(p, kind="stable")
            p, m = p[order], m[order]
        k = int(np.searchsorted(p, p[-1], side="left"))  # the last event may go on
        self._pulse, self._mass = p[k:], m[k:]
        self._events(p[:k], m[:k])

    def result(self) -> MultiHitResult:
        """The totals so far, the carried last event included (it is then final)."""
        self._events(self._pulse, self._mass)
        self._pulse, self._mass = self._pulse[:0], self._mass[:0]
        return MultiHitResult(self.events.copy(), self.saxey.copy(), self.edges.copy())

    def _events(self, p: np.ndarray, m: np.ndarray) -> None:
        if len(p) == 0:
            return
        new = np.concatenate([[True], p[1:] != p[:-1]])
        gid = np.cumsum(new) - 1
        sizes = np.bincount(gid)
        top = len(self.events) - 1
        self.events += np.bincount(np.minimum(sizes, top), minlength=top + 1)[: top + 1]
        for d in range(1, min(int(sizes.max()), MAX_PAIR_OFFSET + 1)):
            same = gid[:-d] == gid[d:]
            if not same.any():
                break
            self._pairs(m[:-d][same], m[d:][same])

    def _pairs(self, m1: np.ndarray, m2: np.ndarray) -> None:
        fin = np.isfinite(m1) & np.isfinite(m2)  # NaN cast to int is undefined (and warns)
        m1, m2 = m1[fin], m2[fin]
        i = np.floor(m1 / self.bin_da).astype(np.int64)
        j = np.floor(m2 / self.bin_da).astype(np.int64)
        ok = (i >= 0) & (i < self.nb) & (j >= 0) & (j < self.nb)
        flat = np.bincount(i[ok] * self.nb + j[ok], minlength=self.nb * self.nb)
        self.saxey += flat.reshape(self.nb, self.nb)


@njit(cache=True, nogil=True)
def pulse_order_kernel(carried, pulse):
    """True if ``pulse`` never decreases and starts at or after the carried event's pulse."""
    last = carried[carried.shape[0] - 1] if carried.shape[0] else np.int64(pulse[0])
    for i in range(pulse.shape[0]):
        p = np.int64(pulse[i])
        if p < last:
            return False
        last = p
    return True


@njit(cache=True, nogil=True, inline="always")
def _pair_bin(m, bin_da, nb):
    """The correlation histogram's bin of m/n ``m`` (-1 outside: negative, NaN, too large)."""
    q = np.floor(m / bin_da)
    return int(q) if q >= 0 and q < nb else -1


@njit(cache=True, nogil=True)
def events_kernel(cp, cm, pulse, mass, bin_da, events, saxey):
    """:meth:`MultiHitAccumulator._events` over the carried hits (``cp``, ``cm``: int64,
    float64) followed by the chunk's, in pulse order, all but the last event (which may go
    on in the next chunk); returns where that one starts (an index into carried + chunk).
    The same events and pairs as the numpy form: per event of k hits, k (k - 1) / 2 pairs at
    most :data:`MAX_PAIR_OFFSET` hits apart, by the bins of ``np.floor(m / bin_da)``. (Item
    i of carried + chunk is read in place, not by a helper: an array handed to a helper per
    hit costs numba's reference counting, ~40 ns a hit.)"""
    nc = cp.shape[0]
    n = nc + pulse.shape[0]
    nb = saxey.shape[0]
    top = events.shape[0] - 1
    last = cp[n - 1] if n - 1 < nc else np.int64(pulse[n - 1 - nc])
    k = n - 1
    while k > 0 and (cp[k - 1] if k - 1 < nc else np.int64(pulse[k - 1 - nc])) == last:
        k -= 1
    a = 0
    while a < k:
        pa = cp[a] if a < nc else np.int64(pulse[a - nc])
        b = a + 1
        while b < k and (cp[b] if b < nc else np.int64(pulse[b - nc])) == pa:
            b += 1
        events[min(b - a, top)] += 1
        for i in range(a, b - 1):
            bi = _pair_bin(cm[i] if i < nc else np.float64(mass[i - nc]), bin_da, nb)
            if bi < 0:
                continue
            for j in range(i + 1, min(b, i + MAX_PAIR_OFFSET + 1)):
                bj = _pair_bin(cm[j] if j < nc else np.float64(mass[j - nc]), bin_da, nb)
                if bj >= 0:
                    saxey[bi, bj] += 1
        a = b
    return k


def multihit_unavailable(meta: dict) -> str | None:
    """Why a run's multi-hit events cannot be counted, or None when they can: a file imported
    with neither pulse numbers nor multiplicities (POS) puts each ion on a pulse of its own,
    so any statistics of its events would be the importer's, not the instrument's."""
    imp = meta.get("imported") or {}
    fields = imp.get("fields")
    if fields is None or {"pulse", "multiplicity"} & set(fields):
        return None
    return (f"the imported {str(imp.get('format', '')).upper()} file records neither pulse "
            "numbers nor multiplicities: which ions arrived together is unknown")


def multihit_stats(pulse: np.ndarray, mass: np.ndarray, max_da: float = 200.0,
                   bin_da: float = BIN_DA) -> MultiHitResult:
    """:class:`MultiHitResult` of one array of hits (pulse numbers, m/n in Da)."""
    acc = MultiHitAccumulator(max_da, bin_da)
    acc.add(pulse, mass)
    return acc.result()


def dissociation_track(parent_mn: float, product_mn: float, partner_mn: float,
                       n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Where the two products of a molecular ion that dissociates in flight land in the
    correlation histogram: (m/n of ``product``, m/n of ``partner``) for a dissociation after
    the parent fell through a share a = 0..1 of the accelerating potential (a = 0: at the
    surface, the products' own m/n; a = 1: after the acceleration, both at the parent's m/n).
    A product of mass m and charge q keeps the parent's velocity and gains q (1 - a) V, so in
    the drift region ``1 / (m/n)_apparent = a / (m/n)_parent + (1 - a) / (m/n)_product``
    (Saxey 2011; the acceleration region's share of the flight time is neglected)."""
    a = np.linspace(0.0, 1.0, n)

    def apparent(mn: float) -> np.ndarray:
        return 1.0 / (a / parent_mn + (1.0 - a) / mn)

    return apparent(product_mn), apparent(partner_mn)


def saxey_plot(res: MultiHitResult, title: str = "", figure_class: type | None = None,
               tracks: list[tuple[float, float, float]] | None = None):
    """The correlation histogram (log colour) beside the events by multiplicity; a
    :class:`matplotlib.figure.Figure` (``figure_class``, e.g. plots.RunFigure) not registered
    with pyplot. ``tracks``: (parent, product, partner) m/n of dissociations to overlay."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    fig = (figure_class or Figure)(figsize=(11, 4.8))
    a, b = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.25, 1]})
    used = np.nonzero(res.saxey.sum(axis=0) + res.saxey.sum(axis=1))[0]
    n_used = min(int(used.max()) + 2, len(res.edges) - 1) if len(used) else len(res.edges) - 1
    hi = res.edges[n_used]
    # pooled to <= DISPLAY_BINS a side: finer bins than the screen's pixels would not be drawn
    k = max(1, math.ceil(n_used / DISPLAY_BINS))
    m = n_used // k * k or n_used
    h = res.saxey[:m, :m]
    if k > 1 and m % k == 0:
        h = h.reshape(m // k, k, m // k, k).sum(axis=(1, 3))
    hi = res.edges[m]
    if h.any():
        im = a.imshow(np.where(h > 0, h, np.nan).T, origin="lower", aspect="equal",
                      extent=(0.0, hi, 0.0, hi),
                      norm=LogNorm(vmin=1, vmax=max(h.max(), 2)), cmap="viridis",
                      interpolation="nearest")
        fig.colorbar(im, ax=a, label="pairs per bin")
    else:
        a.text(0.5, 0.5, "no multi-hit events", ha="center", transform=a.transAxes)
    a.plot([0, hi], [0, hi], color="grey", lw=0.5, ls=":")
    for parent, p1, p2 in tracks or []:
        x, y = dissociation_track(parent, p1, p2)
        a.plot(x, y, color="red", lw=0.8, ls="--")
    a.set_xlim(0, hi)
    a.set_ylim(0, hi)
    a.set_xlabel("m/n of the earlier hit (Da)")
    a.set_ylabel("m/n of the later hit (Da)")
    a.set_title(f"correlation histogram ({res.n_pairs} pairs, {k * res.edges[1]:.2g} Da bins)")
    k = np.arange(len(res.events))
    sel = (k >= 1) & (res.events > 0)
    if sel.any():
        b.bar(k[sel], res.events[sel] / max(res.n_events, 1), color="#446688")
        b.set_yscale("log")
    b.set_xlabel("hits per event (multiplicity)")
    b.set_ylabel("share of events")
    b.set_title(f"{res.n_events} events: {100 * res.multi_event_fraction:.2f} % multiple, "
                f"{100 * res.multi_ion_fraction:.2f} % of ions", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig

"""The evaporation-channel tables of the virtual LEAP: per (phase, Li episode) row, the
channels' normalised weights and products at a field (:func:`apt_daq.sim.species.phase_channels`),
computed exactly on a field grid, cached, and interpolated linearly in F.

A mixin of :class:`apt_daq.sim.instrument.VirtualLeap` (moved out of it unchanged): it reads the
leap's ``tip``, ``specimen``, ``channel_step_v_per_nm`` and the caches ``_channel_cache``,
``_same_channels``, ``_channel_peak_k`` that the leap owns.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from apt_daq.sim import physics
from apt_daq.sim.species import phase_channels


def _cdf_tables(rows):
    wn, a, b, neu, atoms, nch = rows
    cdf = np.cumsum(wn, axis=1)
    for i, k in enumerate(nch):
        cdf[i, k:] = 1.0
    return cdf, a, b, neu, atoms, nch


class ChannelTablesMixin:
    """Channel tables of :class:`apt_daq.sim.instrument.VirtualLeap` (see the module doc)."""

    tip: Any
    specimen: Any
    channel_step_v_per_nm: float
    _channel_cache: dict[int, tuple]
    _same_channels: dict[int, bool]
    _channel_peak_k: float

    def _channel_tables(self, field: float, depletion: float | None = None):
        """Channel tables (cdf, ion a, ion b, neutral, atoms, n channels) at ``field``.

        The tables are smooth in F, so they are computed exactly on a grid of
        ``channel_step_v_per_nm`` (cached) and interpolated linearly in F between the two
        neighbouring grid points (error ~ step^2: below 1e-4 of any channel weight at 0.01
        V/nm); ``channel_step_v_per_nm = 0`` computes them exactly at ``field`` every time.
        The Li depletion is the field's own (:func:`apt_daq.sim.physics.li_depletion`).
        """
        step = self.channel_step_v_per_nm
        if step <= 0 or depletion is not None:
            d = physics.li_depletion(field, self.tip.coated) if depletion is None else depletion
            return _cdf_tables(self._channel_rows(field, d))
        x = field / step
        k = math.floor(x)
        w = x - k
        lo, hi = self._grid_rows(k), self._grid_rows(k + 1)
        same = self._same_channels.get(k)
        if same is None:
            same = self._same_channels[k] = all(
                np.array_equal(u, v) for u, v in zip(lo[1:], hi[1:], strict=True))
        if not same:  # the channel set changes between the grid points: exact
            return self._channel_tables(field, physics.li_depletion(field, self.tip.coated))
        return _cdf_tables(((1.0 - w) * lo[0] + w * hi[0], *lo[1:]))

    def _grid_rows(self, k: int):
        rows = self._channel_cache.get(k)
        if rows is None:
            if len(self._channel_cache) > 256:
                self._channel_cache.clear()
                self._same_channels.clear()
            f = k * self.channel_step_v_per_nm
            rows = self._channel_rows(f, physics.li_depletion(f, self.tip.coated))
            self._channel_cache[k] = rows
        return rows

    def _channel_rows(self, field: float, depletion: float):
        """Normalised channel weights per (phase, Li modulation) row and the channel products."""
        tip = self.tip
        li = physics.LI_MIGRATION
        rows = []
        for ph, comp in enumerate(tip.compositions):
            fixed = None
            d = depletion
            amp = li.modulation(tip.li_amplitudes_coated[ph], tip.coated)
            if ph == tip.shell_phase:
                assert self.specimen.coating is not None  # a shell phase exists only if coated
                fixed = {self.specimen.coating.material: self.specimen.coating.oxide_fraction}
                d = 0.0
                amp = 0.0
            chem = tip.chemistries[ph]
            for mod in (0, 1):
                # Li-poor (0) / Li-rich (1) episode: Li share p (1 -/+ a), the rest rescaled so
                # that the two episodes average to the phase's own Li share. The episode moves
                # the local surface field and the O pairing follows it: O2+/O+ x exp(+/- c a)
                # (Li-poor: less conducting, the field penetrates, lower surface field)
                sign = 1.0 if mod == 0 else -1.0
                ch = phase_channels(comp, field, tip.species, chem, d, fixed,
                                    math.exp(sign * li.o2_episode_coupling * amp),
                                    self._channel_peak_k)
                w0 = np.array(ch.weight, np.float64)
                is_li = np.array(ch.li, bool)
                p_li = w0[is_li].sum() / w0.sum() if len(w0) else 0.0
                p_mod = min(p_li * ((1.0 - amp) if mod == 0 else (1.0 + amp)), 0.999)
                w = w0.copy()
                if 0 < p_li < 1:
                    w[is_li] *= p_mod / p_li
                    w[~is_li] *= (1 - p_mod) / (1 - p_li)
                rows.append((w, ch))
        m = max(len(w) for w, _ in rows)
        n = len(rows)
        wn = np.zeros((n, m))
        a = np.full((n, m), -1, np.int64)
        b = np.full((n, m), -1, np.int64)
        neu = np.zeros((n, m), np.int64)
        atoms = np.ones((n, m), np.int64)
        nch = np.zeros(n, np.int64)
        for i, (w, ch) in enumerate(rows):
            k = len(w)
            nch[i] = k
            if k == 0:
                continue
            wn[i, :k] = w / w.sum()
            a[i, :k] = ch.ion_a
            b[i, :k] = ch.ion_b
            neu[i, :k] = ch.neutral
            atoms[i, :k] = ch.atoms
        return wn, a, b, neu, atoms, nch

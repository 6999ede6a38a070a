"""The fast paths of the simulator against their plain twins (same numbers, not timings)."""

from __future__ import annotations

import numpy as np
from apt_daq.sim import physics
from apt_daq.sim.detector import Detector, assemble_block, record_order, truth_rows
from helpers import make_leap, settle_voltage
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_daq.hits import RAW_DTYPE, TRUTH_DTYPE


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0, 24.0), st.floats(0.0, 600.0), st.floats(1.0, 10.0),
       st.floats(0.5, 100.0))
def test_profile_kernel_matches_numpy(field, rise, tau, tau_cone):
    q = physics.barrier_ev(np.array([2.55, 2.45, 1.6]), np.array([24.5, 24.0, 17.0]), field)
    frac = np.array([0.3, 0.5, 0.2])
    prof = physics.evaporation_profile(q, frac, 60.0, rise, tau, 1e-5, tau_cone)
    p, pdc, mean_t, quant = physics.profile_kernel(
        q, frac, 60.0, rise, tau, tau_cone, 1e-5, physics.THERMAL.attempt_frequency_hz,
        physics._time_grid(tau), 2048)
    assert np.isclose(p, prof.p_pulse, rtol=1e-9, atol=1e-300)
    assert np.isclose(pdc, prof.p_dc, rtol=1e-9, atol=1e-300)
    assert np.isclose(mean_t, prof.tau_eff_ns, rtol=1e-9, atol=1e-12)
    assert np.allclose(quant, prof.quantiles(2048), rtol=1e-9, atol=1e-9 * tau)


def test_interpolated_channel_tables_match_exact():
    leap = make_leap("nmc811-lmo-grain")
    for f in (14.3, 18.777, 21.2345, 23.9):
        cdf, a, b, neu, atoms, nch = leap._channel_tables(f)
        ex = leap._channel_tables(f, physics.li_depletion(f, leap.tip.coated))
        assert np.abs(cdf - ex[0]).max() < 1e-4
        for u, v in zip((a, b, neu, atoms, nch), ex[1:], strict=True):
            assert np.array_equal(u, v)


def test_assemble_block_matches_numpy_path():
    rng = np.random.default_rng(5)
    leap = make_leap("nmc811-cr")
    det = Detector(leap.instrument)
    n_ev, n_b, first, n = 400, 30, 1000, 5000
    e_pulse = np.sort(rng.integers(0, n, n_ev))
    dx, dy = rng.normal(0, 10, n_ev), rng.normal(0, 10, n_ev)
    t = rng.uniform(100, 900, n_ev)
    keep = (rng.random(n_ev) < 0.7).astype(np.uint8)
    e_neu = ((rng.random(n_ev) < 0.1) & (keep == 0)).astype(np.uint8)
    e_sp = rng.integers(0, len(leap.ion_table), n_ev).astype(np.int16)
    e_mass, e_x, e_y, e_z = (rng.random((4, n_ev)) * 50).astype(np.float32)
    bp = np.sort(rng.integers(0, n, n_b))
    bt, bx, by = rng.uniform(0, 900, n_b), rng.normal(0, 10, n_b), rng.normal(0, 10, n_b)
    charges = leap.tip.species.charges
    nk = int(keep.sum())
    raw = np.empty(nk + n_b, RAW_DTYPE)
    truth = np.empty(nk + n_b, TRUTH_DTYPE)
    lost = np.empty(n_ev - nk, TRUTH_DTYPE)
    assemble_block(e_pulse, dx, dy, t, keep, e_sp, e_neu, e_mass, e_x, e_y, e_z, charges,
                   bp, bt, bx, by, first, n, 3000.0, 3010.0, 5.0, 0.025, 60.0, 1.0,
                   raw, truth, lost)
    # numpy twin: mask, merge, order, encode, truth
    kb, lo = keep.view(bool), ~keep.view(bool)
    ch = charges[e_sp]
    ch[e_neu.view(bool)] = 0
    p_all = np.concatenate([e_pulse[kb], bp])
    t_all = np.concatenate([t[kb], bt])
    x_all, y_all = np.concatenate([dx[kb], bx]), np.concatenate([dy[kb], by])
    nan = np.full(n_b, np.nan, np.float32)
    order = record_order(p_all, t_all, nk)
    gp = p_all[order] + first
    volts = 3000.0 + 10.0 * (gp - first) / n
    det.cfg = leap.instrument.model_copy(update={
        "tdc_bin_ns": 0.025, "delay_line_offset_ns": 60.0, "signal_velocity_mm_per_ns": 1.0})
    want_raw = det.records(gp, t_all[order], x_all[order], y_all[order], volts, 5.0)
    cat = np.concatenate
    want_truth = truth_rows(gp, cat([e_sp[kb], np.full(n_b, -1, np.int16)])[order],
                            cat([ch[kb], np.zeros(n_b, np.int8)])[order],
                            cat([e_mass[kb], nan])[order], cat([e_x[kb], nan])[order],
                            cat([e_y[kb], nan])[order], cat([e_z[kb], nan])[order], 1)
    want_lost = truth_rows(e_pulse[lo] + first, e_sp[lo], ch[lo], e_mass[lo], e_x[lo], e_y[lo],
                           e_z[lo], 0)
    assert raw.tobytes() == want_raw.tobytes()
    assert truth.tobytes() == want_truth.tobytes()
    assert lost.tobytes() == want_lost.tobytes()


def test_block_size_does_not_change_statistics():
    """The same specimen held at one voltage, fired in big or small blocks: same rate and mix."""
    out = []
    for block in (2_000_000, 200_000):
        leap = make_leap("nmc811-cr", seed=7)
        leap.laser.set_energy(5.0)
        leap.hv.set_voltage(settle_voltage(leap))
        leap.idle(0.01)
        raws, truths = [], []
        for _ in range(4_000_000 // block):
            blk = leap.advance(block)
            raws.append(blk.raw)
            truths.append(blk.truth)
        tr = np.concatenate(truths)
        out.append((len(tr), np.bincount(tr["species"][tr["species"] >= 0],
                                         minlength=len(leap.ion_table))))
    (n1, c1), (n2, c2) = out
    assert abs(n1 - n2) < 5 * np.sqrt(n1 + n2) + 0.02 * n1  # rate (feedback-free, R drifts)
    f1, f2 = c1 / c1.sum(), c2 / c2.sum()
    err = np.sqrt(f1 * (1 - f1) / c1.sum() + f2 * (1 - f2) / c2.sum())
    assert np.all(np.abs(f1 - f2) <= 5 * err + 1e-3)


def test_full_buffer_ends_the_block_after_the_sub_block_that_filled_it():
    """advance(max_records=) is a TDC buffer read out when full: the block stops early, holds at
    least the buffer and overshoots it by about one sub-block (1/8 of the buffer) at most; the
    pulses it reports are the pulses fired, and the next block goes on from there."""
    leap = make_leap("nmc811-cr", seed=3)
    leap.laser.set_energy(5.0)
    leap.hv.set_voltage(settle_voltage(leap))
    leap.idle(0.01)
    full = leap.advance(10_000_000, max_records=2000)
    assert 2000 <= len(full.raw) <= 2000 * (1 + 1 / 8) + 5 * np.sqrt(2000 / 8)
    assert full.pulses < 10_000_000 and leap.pulses == full.pulses
    assert full.raw["pulse"].max() < full.pulses
    nxt = leap.advance(100_000)
    assert nxt.first_pulse == full.pulses and nxt.raw["pulse"].min() >= full.pulses
    roomy = leap.advance(100_000, max_records=1_000_000)
    assert roomy.pulses == 100_000


def test_assembly_on_the_worker_thread_gives_the_same_records(monkeypatch):
    """Sub-blocks detected and assembled on the worker thread, or inline: the same bytes, also
    when a full buffer ends the block early."""
    import apt_daq.sim.instrument as si

    def blocks(aside: int) -> bytes:
        monkeypatch.setattr(si, "ASSEMBLE_ASIDE_EVENTS", aside)
        leap = make_leap("nmc811-cr", seed=4)
        leap.laser.set_energy(5.0)
        leap.hv.set_voltage(1.01 * settle_voltage(leap))
        leap.idle(0.01)
        out = [leap.advance(4_000_000, max_records=30_000) for _ in range(3)]
        assert out[0].pulses < 4_000_000  # the early end was exercised
        return b"".join(b.raw.tobytes() + b.truth.tobytes() + b.lost.tobytes() for b in out)

    assert blocks(0) == blocks(10**9)

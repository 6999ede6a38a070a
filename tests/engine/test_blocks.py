"""The engine's readout blocks and the rows it hands the store (apt_daq.engine.blocks and
apt_daq.engine.rowbuffer)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_daq.engine.blocks import BUFFER_FILL, MAX_DRIFT, BlockSizer
from apt_daq.engine.rowbuffer import RowBuffer
from apt_daq.hits import HIT_DTYPE

TARGET = 0.005


def test_blocks_stay_at_the_base_off_target_and_grow_on_it():
    s = BlockSizer(1_000_000, None, 65536, TARGET)
    assert s.next(rate=0.2 * TARGET, pulses=1_000_000, records=1200, sensitivity=50) == 1_000_000
    assert s.next(rate=TARGET, pulses=1_000_000, records=5500, sensitivity=50) == 2_000_000
    s.record(3000.0, TARGET, 50, 2_000_000)
    s.next(rate=TARGET, pulses=2_000_000, records=11000, sensitivity=50)
    s.record(3000.3, TARGET, 50, 2_000_000)
    n = s.next(rate=TARGET, pulses=2_000_000, records=11000, sensitivity=50)
    assert n == 4_000_000  # doubling, below the buffer and the drift bound
    # off target again (a burst): back to the base block at once, the trend forgotten
    assert s.next(rate=1.5 * TARGET, pulses=n, records=30000, sensitivity=50) == 1_000_000
    assert s.trend() == 0.0 and s.feed_forward(n) == 0.0


@given(records_per_pulse=st.floats(1e-3, 0.05), dlnv=st.floats(-1e-3, 1e-3),
       sens=st.floats(5, 300))
@settings(max_examples=200, deadline=None)
def test_blocks_fit_the_buffer_and_the_drift(records_per_pulse, dlnv, sens):
    """Never over BUFFER_FILL of the detector buffer at the last block's records per pulse,
    never more drift than MAX_DRIFT at the setpoint's trend, never under the base block."""
    base, buf = 200_000, 65536
    s = BlockSizer(base, None, buf, TARGET)
    pulses = base
    v = 3000.0
    for _ in range(12):
        s.record(v, TARGET, sens, pulses)
        n = s.next(rate=TARGET, pulses=pulses, records=int(records_per_pulse * pulses) + 1,
                   sensitivity=sens)
        assert n >= base
        if n > base:
            assert n <= BUFFER_FILL * buf * pulses / (int(records_per_pulse * pulses) + 1) + 1
            if len(s._trend) >= 2:
                assert abs(s.trend()) * sens * n <= MAX_DRIFT * (1 + 1e-9) or n == base
        v, pulses = v * math.exp(dlnv), n


def _plant_rate(v: float, v_need: float, sens: float) -> float:
    """A specimen whose rate is the target at v_need, with d ln rate / d ln V = sens."""
    return TARGET * (v / v_need) ** sens


def test_the_trend_is_the_specimens_not_the_loops_approach():
    """After a step the setpoint climbs to a fixed V* with the rate rising to the target: no
    drift to carry forward (the setpoint's own trend would push the rate past the target).
    With a tip that blunts (V* rising 2e-10 per pulse) and the setpoint lagging behind it,
    the trend is the blunting."""
    sens, pulses = 80.0, 1_000_000
    s = BlockSizer(pulses, None, None, TARGET)
    for k in range(8):  # V approaches 3000 V from 0.15 % below: rate 0.89 -> 1.0 of target
        v = 3000.0 * (1 - 0.0015 * 0.6 ** k)
        s.record(v, _plant_rate(v, 3000.0, sens), sens, pulses)
    assert abs(s.trend()) < 1e-14
    s.reset()
    drift = 2e-10
    for k in range(8):
        v_need = 3000.0 * math.exp(drift * pulses * (k + 0.5))
        v = v_need * (1 - 0.0005)  # lagging by 0.05 %: rate 0.96 of target
        s.record(v, _plant_rate(v, v_need, sens), sens, pulses)
    assert s.trend() == pytest.approx(drift, rel=1e-6)
    # 8 blocks of ~4800 ions: the slope is ~5 standard errors, shrunk by ~4 %
    assert 0.93 * drift < s.drift() < drift


def test_a_slope_made_of_counting_noise_is_not_carried_forward():
    """A specimen that does not drift, read by blocks of Poisson counts: the fitted slope
    scatters, what is carried forward is shrunk by its standard error, so over many such
    windows the carried drift's spread is well under the raw slope's."""
    rng = np.random.default_rng(3)
    sens, pulses = 80.0, 1_000_000
    raw, carried = [], []
    for _ in range(400):
        s = BlockSizer(pulses, None, None, TARGET)
        for _ in range(3):
            rate = rng.poisson(TARGET * pulses) / pulses
            s.record(3000.0, rate, sens, pulses)
        raw.append(s.trend())
        carried.append(s.drift())
    raw_a, carried_a = np.abs(raw), np.abs(carried)
    assert np.mean(carried_a == 0) > 0.5  # most noise slopes carry nothing
    assert np.sqrt(np.mean(np.square(carried))) < 0.5 * np.sqrt(np.mean(np.square(raw)))
    assert np.all(carried_a <= raw_a)


def test_fixed_blocks_when_the_cap_is_the_base():
    s = BlockSizer(500_000, 500_000, 65536, TARGET)
    for _ in range(5):
        assert s.next(rate=TARGET, pulses=500_000, records=2600, sensitivity=50) == 500_000
        s.record(3000.0, TARGET, 50, 500_000)
        assert s.feed_forward(500_000) == 0.0


def test_the_stop_count_bounds_the_last_blocks():
    s = BlockSizer(100_000, None, 1 << 20, TARGET)
    for _ in range(6):
        n = s.next(rate=TARGET, pulses=s.pulses, records=600, sensitivity=50,
                   ions_left=1_000)
    assert n == 200_000  # 1000 ions at 0.5 % = 200k pulses


@given(blocks=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 200), st.booleans()),
                       min_size=1, max_size=30),
       chunk=st.integers(1, 64))
@settings(max_examples=200, deadline=None)
def test_row_buffer_gives_every_row_once_in_order_in_whole_chunks(blocks, chunk):
    """Each dataset's rows come out once, in order, byte for byte; apart from a flush
    (everything) every piece is a whole number of chunks; at most a chunk per dataset waits."""
    buf = RowBuffer(chunk_rows=chunk, max_age_s=math.inf)
    sent: dict[str, list[np.ndarray]] = {"hits": [], "raw": []}
    got: dict[str, list[np.ndarray]] = {"hits": [], "raw": []}
    k = 0
    for n_hits, n_raw, flush in blocks:
        new = {}
        for name, n in (("hits", n_hits), ("raw", n_raw)):
            a = np.zeros(n, HIT_DTYPE)
            a["pulse"] = np.arange(k, k + n)
            a["tof"] = np.arange(n, dtype=np.float32) * 0.5
            k += n
            sent[name].append(a)
            new[name] = a
        for name, rows in buf.put(flush, **new):
            if not flush:
                assert len(rows) % chunk == 0
            got[name].append(rows.copy())
        assert len(buf) < 2 * chunk and (not flush or len(buf) == 0)
    for name, rows in buf.put(True):
        got[name].append(rows.copy())
    for name in sent:
        want = np.concatenate(sent[name])
        have = np.concatenate(got[name]) if got[name] else np.zeros(0, HIT_DTYPE)
        assert have.tobytes() == want.tobytes()

"""Readout blocks sized by the engine: small while the rate is off target, as large as the
detector buffer and the feedback allow once it is on target.

A block is one tick of the feedback, and the feedback moves V_dc at most ``max_step_v`` per
tick, so while the voltage ramps up (or after a laser step, a pause, a burst) blocks stay at
``run.chunk_pulses``: the ramp-up in instrument time is what it is with fixed blocks. Once the
block rate is within ``SETTLED_ERROR`` of the target, each block may double, up to the least of

- the detector buffer: ``BUFFER_FILL`` of ``max_chunk_records`` at the records per pulse of the
  last block (a TDC read out when full; the simulator ends a chunk there anyway);
- the feedback's need: the specimen drifts (the tip blunts, the voltage for the target rate
  rises), and within a block the voltage is constant, so the rate drifts by
  ``s * d ln V / d pulse`` per pulse (s the controller's measured sensitivity, d ln V / d pulse
  the recent trend of the voltage the target rate needs); a block holds at most ``MAX_DRIFT``
  of drift, +-half of it about the block's mean. An integral loop alone lags a drift d per
  block by d / gain, so the setpoint of a settled block also carries the trend forward
  (:meth:`BlockSizer.feed_forward`: from the middle of the last block to the middle of the
  next), within the same step limit and HV ramp rule; the mean rate then sits on the target.
  The trend is that of the specimen, not of the setpoint: each settled block gives the voltage
  its rate says the target needs, ln V* = ln V + ln(target / rate) / s, and the trend is the
  least-squares slope of ln V* over the recent blocks, weighted by each block's counting
  noise; what is carried forward is that slope shrunk by its standard error (:meth:`BlockSizer.
  drift`), so a slope made of noise is not. (The setpoint's own trend also holds the loop's
  approach to the target after a step: carried forward, it pushes the rate past the target,
  a second integrator.)
- ``run.max_block_pulses``, and what is left of the stop count, the instrument time and the
  schedule step (a run does not overshoot its stop by a large block).

A real front end streams what it has (its own frames); only a detector whose block the engine
sets (:class:`PacedDetector`, the simulator's) is sized.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol, runtime_checkable

SETTLED_ERROR = 0.15  # |ln(rate / target)| below this: on target
BUFFER_FILL = 0.75  # of the detector buffer, at the last block's records per pulse
MAX_DRIFT = 0.05  # ln-rate drift a block may hold at the setpoint's recent trend
TREND_BLOCKS = 8  # settled blocks the trend of ln V* is taken over
CLUMPING = 2.0  # var(ln rate) of a block = CLUMPING / ions: multi-hit events come in clumps


@runtime_checkable
class PacedDetector(Protocol):
    """A detector that fires as many pulses per block as it is told (the simulator's)."""

    chunk_pulses: int
    max_chunk_records: int


class BlockSizer:
    """The next block's pulses, and the setpoint's feed-forward, from the last block (see
    module doc)."""

    def __init__(self, base_pulses: int, max_pulses: int | None, buffer_records: int | None,
                 target: float):
        self.base = int(base_pulses)
        self.cap = int(max_pulses) if max_pulses else None
        self.adaptive = self.cap is None or self.cap > self.base
        self.buffer = buffer_records
        self.target = target
        self.pulses = self.base
        # (pulse, ln V*, 1 / var ln V*) of the recent settled blocks
        self._trend: deque[tuple[float, float, float]] = deque(maxlen=TREND_BLOCKS)
        self._at = 0.0  # pulses since the trend began (the x of its points)

    def reset(self) -> None:
        """Back to the base block (a laser step, a pause: the plant has changed)."""
        self.pulses = self.base
        self._trend.clear()
        self._at = 0.0

    def _fit(self) -> tuple[float, float]:
        """The weighted least-squares slope of ln V* against pulses and its standard error
        ((0, inf) before two points)."""
        if len(self._trend) < 2:
            return 0.0, math.inf
        sw = sum(w for _, _, w in self._trend)
        mx = sum(w * p for p, _, w in self._trend) / sw
        my = sum(w * v for _, v, w in self._trend) / sw
        sxx = sum(w * (p - mx) ** 2 for p, _, w in self._trend)
        if sxx <= 0:
            return 0.0, math.inf
        return sum(w * (p - mx) * (v - my) for p, v, w in self._trend) / sxx, sxx ** -0.5

    def trend(self) -> float:
        """d ln V* / d pulse over the recent settled blocks (0 before two): what sizes them."""
        return self._fit()[0]

    def drift(self) -> float:
        """The trend shrunk by its counting noise, (1 - se^2 / b^2)+ b: what is carried
        forward. Two noisy blocks make a steep slope; carried forward it would push the
        rate off by as much as the noise it came from."""
        b, se = self._fit()
        return b * max(0.0, 1.0 - (se / b) ** 2) if b else 0.0

    def next(self, *, rate: float, pulses: int, records: int, sensitivity: float,
             ions_left: float = math.inf, pulses_left: float = math.inf) -> int:
        """Pulses of the next block, after a block of ``pulses`` pulses and ``records`` records
        at ``rate`` (ions/pulse)."""
        on_target = rate > 0 and abs(math.log(rate / self.target)) < SETTLED_ERROR
        if not self.adaptive or not on_target or pulses <= 0:
            self.reset()
            return self.pulses
        want: float = 2 * max(self.pulses, pulses)
        if self.buffer and records > 0:
            want = min(want, BUFFER_FILL * self.buffer * pulses / records)
        drift = abs(self.trend()) * max(sensitivity, 1.0)
        if len(self._trend) < 2:
            want = min(want, 2 * self.base)  # no trend yet: grow once
        elif drift > 0:
            want = min(want, MAX_DRIFT / drift)
        if self.cap:
            want = min(want, self.cap)
        want = min(want, ions_left / self.target, pulses_left)
        self.pulses = int(max(self.base, want))
        return self.pulses

    def feed_forward(self, last_pulses: int) -> float:
        """d ln V to add to the feedback's setpoint: the trend from the middle of the last
        block (what its rate measured) to the middle of the next one (0 unless settled)."""
        if not self.adaptive or len(self._trend) < 2:
            return 0.0
        return self.drift() * 0.5 * (last_pulses + self.pulses)

    def record(self, v_block: float, rate: float, sensitivity: float, pulses: int) -> None:
        """A settled block of ``pulses`` pulses read ``rate`` at the setpoint ``v_block``:
        its point of the trend, ln V* = ln V + ln(target / rate) / s at the block's middle,
        weighted by its counting noise, var ln V* = CLUMPING / (ions s^2)."""
        if not (self.adaptive and v_block > 0 and rate > 0 and pulses > 0 and sensitivity > 0
                and abs(math.log(rate / self.target)) < SETTLED_ERROR):
            return
        need = math.log(v_block) + math.log(self.target / rate) / sensitivity
        weight = rate * pulses * sensitivity ** 2 / CLUMPING
        self._trend.append((self._at + 0.5 * pulses, need, weight))
        self._at += pulses

"""The detection-rate feedback: integral control of V_dc on the log of the rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

from apt_daq.config import FeedbackConfig


@dataclass
class RateController:
    """Integral control of V_dc on ln(target / rate), gain-scheduled by the measured
    d ln(rate) / d ln(V) (see :class:`apt_daq.config.FeedbackConfig`); output clamped to the
    HV limit, the ramp rate and the step size."""

    target: float
    cfg: FeedbackConfig
    limit_v: float
    ramp_v_per_s: float
    hv_max_step_v: float = math.inf  # the HV driver's largest single step
    sensitivity: float = 0.0
    _prev: tuple[float, float] | None = None  # (ln V, ln rate) of the previous block

    def __post_init__(self) -> None:
        self.sensitivity = self.cfg.sensitivity_initial

    def error(self, rate: float) -> float:
        """ln(target / rate), clipped: slowly up (no ions: +ln max_error_ratio), fast down
        (a burst of evaporation is what breaks specimens)."""
        up = math.log(self.cfg.max_error_ratio)
        if rate <= 0:
            return up
        return max(-4 * up, min(up, math.log(self.target / rate)))

    def _learn(self, v_now: float, rate: float) -> None:
        """Update the sensitivity from this block and the previous one (a smoothed secant),
        only in the evaporation regime and when the voltage moved enough to see it."""
        if rate < 0.1 * self.target or v_now <= 0:
            self._prev = None
            return
        here = (math.log(v_now), math.log(rate))
        if self._prev is not None:
            dlnv = here[0] - self._prev[0]
            if abs(dlnv) > 0.004:
                s = (here[1] - self._prev[1]) / dlnv
                if s > 0:
                    s = min(300.0, max(5.0, s))
                    self.sensitivity = math.exp(0.7 * math.log(self.sensitivity)
                                                + 0.3 * math.log(s))
        self._prev = here

    def update(self, rate: float, dt_s: float, v_now: float) -> float:
        """The next setpoint, V, given the last block's rate (ions/pulse) at ``v_now``;
        ``dt_s`` is the time since the last setpoint was sent (it bounds the ramp)."""
        self._learn(v_now, rate)
        dlnv = self.cfg.gain * self.error(rate) / self.sensitivity
        dv = max(v_now, 100.0) * math.expm1(dlnv)
        step = min(self.cfg.max_step_v, self.hv_max_step_v, self.ramp_v_per_s * dt_s)
        dv = max(-step, min(step, dv))
        return max(0.0, min(self.limit_v, v_now + dv))

    def reset(self) -> None:
        """Forget the previous block (after a laser step or a pause the plant has changed)."""
        self._prev = None

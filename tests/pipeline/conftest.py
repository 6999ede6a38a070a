"""Shared helpers: synthetic raw DLD records built with the contract's timing convention."""

from __future__ import annotations

import numpy as np

from apt_daq.config import InstrumentConfig
from apt_daq.hits import RAW_DTYPE
from apt_daq.pipeline.tof import flight_time_ns


def encode(
    mass_da: np.ndarray, x_mm: np.ndarray, y_mm: np.ndarray, v_dc: np.ndarray | float,
    inst: InstrumentConfig, pulse: np.ndarray | None = None, t_dep_ns: np.ndarray | float = 0.0,
) -> np.ndarray:  # fmt: skip
    """Raw records of ions of m/n at detector (x, y): the simulator side of the contract."""
    n = len(mass_da)
    t = flight_time_ns(mass_da, v_dc, inst.flight_path_mm, x_mm, y_mm, inst.t0_ns) + t_dep_ns
    b, d, v = inst.tdc_bin_ns, inst.delay_line_offset_ns, inst.signal_velocity_mm_per_ns
    raw = np.zeros(n, RAW_DTYPE)
    raw["pulse"] = np.arange(n) if pulse is None else pulse
    raw["t_mcp"] = np.round(t / b)
    raw["t_x1"] = np.round((t + d + x_mm / v) / b)
    raw["t_x2"] = np.round((t + d - x_mm / v) / b)
    raw["t_y1"] = np.round((t + d + y_mm / v) / b)
    raw["t_y2"] = np.round((t + d - y_mm / v) / b)
    raw["v_dc"] = v_dc
    raw["laser_pj"] = 5.0
    return raw

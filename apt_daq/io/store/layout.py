"""The run file's datasets: their dtypes (``/log``'s ``LOG_DTYPE`` here, the others in
:mod:`apt_daq.hits`), their names and their chunking."""

from __future__ import annotations

import numpy as np

from apt_daq.hits import DERIVED_DTYPE, HIT_DTYPE, RAW_DTYPE, TRUTH_DTYPE

LOG_DTYPE = np.dtype(
    [
        ("time_s", "<f8"),  # instrument time since run start, s
        ("v_dc", "<f4"),  # measured specimen voltage, V
        ("v_setpoint", "<f4"),  # HV setpoint, V
        ("current_a", "<f4"),  # HV supply current, A
        ("laser_pj", "<f4"),  # laser pulse energy, pJ
        ("rate", "<f4"),  # detection rate over the last interval, ions per pulse
        ("pulses", "<u8"),  # pulses since run start
        ("ions", "<u8"),  # detected ions since run start
        ("step", "<i2"),  # schedule step index
        ("hv_on", "u1"),  # HV output on
        ("laser_on", "u1"),  # laser emission on
        ("state", "u1"),  # run-engine state code (apt_daq.run.State)
    ]
)

DATASETS: dict[str, np.dtype] = {
    "raw": RAW_DTYPE,
    "hits": HIT_DTYPE,
    "derived": DERIVED_DTYPE,
    "truth": TRUTH_DTYPE,
    "truth_lost": TRUTH_DTYPE,
    "log": LOG_DTYPE,
}
_ALIASES = {"lost": "truth_lost"}
_CHUNK_ROWS = 65536
_LOG_CHUNK_ROWS = 1024  # one /log row per readout block: small chunks, no rewrite of 2.6 MB


def _name(name: str) -> str:
    name = _ALIASES.get(name, name)
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; one of {sorted(DATASETS)}")
    return name

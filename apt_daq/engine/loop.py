"""The acquisition loop's state between its steps, and what a run file starts with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from apt_daq.config import RunFile
from apt_daq.engine.progress import Progress
from apt_daq.rangetable import table_to_meta

if TYPE_CHECKING:
    from apt_daq.drivers.base import SimulatedDetector
    from apt_daq.pipeline import RangeLookup


@dataclass
class Acquisition:
    """The loop's running state: totals, the schedule step, the fracture watch, why it ends."""

    ranges: Any
    lookup: RangeLookup
    sim_dld: SimulatedDetector | None = None
    ions: int = 0
    pulses: int = 0
    step_i: int = 0
    step_ions: int = 0
    step_t0: float = 0.0
    settled: bool = False
    low_blocks: int = 0
    reason: str = ""
    progress: Progress | None = None


@dataclass
class Block:
    """One readout block as the steps after the read see it."""

    rate: float
    pulses: int
    blind: bool  # no pulses, or records dropped: the rate says nothing of the specimen
    now_s: float
    records: int = 0  # DLD records read (kept or not): the detector buffer's fill


def load_ranges(cfg: RunFile) -> Any:
    """The run file's range table (``analysis.ranges``), or None."""
    path = cfg.resolve(cfg.analysis.ranges)
    if path is None:
        return None
    from apt_daq.io.ranges import read_ranges

    return read_ranges(path)


def run_meta(cfg: RunFile, ranges: Any) -> dict[str, Any]:
    """/meta of a new run: its config, instrument, seed, source, whether simulated, ranges."""
    r = cfg.run
    meta = {
        "config": cfg.model_dump(mode="json"),
        "instrument": cfg.instrument.model_dump(mode="json"),
        "seed": r.seed,
        "source": cfg.source,
        "simulated": any(d.backend == "sim" for d in (cfg.drivers.laser, cfg.drivers.hv,
                                                      cfg.drivers.dld)),
    }
    if ranges is not None:
        meta["ranges"] = table_to_meta(ranges)  # the run carries the ranges it was ranged with
    return meta

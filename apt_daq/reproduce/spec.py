"""What a reproduction run is (:class:`RunSpec`: a shipped run file and dotted overrides, with
the field its reconstruction uses) and how it ended (:class:`RunOutcome`). Shared by the
simulated runs (:mod:`apt_daq.reproduce.common`) and the null model
(:mod:`apt_daq.reproduce.null`), which therefore do not import each other's machinery.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apt_daq.shipped import configs_dir

RUNS = configs_dir() / "runs"
SPECIMENS = configs_dir() / "specimens"


@dataclass(frozen=True)
class RunSpec:
    """One simulated acquisition: a run file under configs/runs and dotted overrides."""

    key: str
    run_file: str
    overrides: tuple[tuple[str, Any], ...] = ()
    #: keep only the outcome (state, reason, ions), not the run file: for runs that only
    #: count (Fig. 1's 160 fracture specimens a seed were 5.6 GB of run files)
    outcome_only: bool = False

    @classmethod
    def make(cls, key: str, run_file: str, *, outcome_only: bool = False,
             **overrides: Any) -> RunSpec:
        """A run file with dotted overrides (``run__seed=3``: ``run.seed``). The
        reconstruction's evaporation field is the run's own unless given: a simulated run's is
        the field its specimen settles to at each step's laser energy
        (:func:`apt_daq.pipeline.reconstruction.run_fields`; :func:`run_field` here)."""
        ov = {k.replace("__", "."): v for k, v in overrides.items()}
        return cls(key, run_file, tuple(sorted(ov.items())), outcome_only)

    def digest(self) -> str:
        from apt_daq.config import load_run

        # the resolved run file: any change to it or to its instrument/specimen files
        resolved = load_run(RUNS / self.run_file, dict(self.overrides)).model_dump_json()
        text = json.dumps([self.run_file, list(self.overrides), resolved, code_digest()],
                          default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:16]


RECON_FIELD = "analysis.reconstruction.evaporation_field_v_per_nm"
_FIELDS: dict[str, float] = {}


def run_field(run_file: str, overrides: dict[str, Any]) -> float:
    """The apex field (V/nm, 0.01 V/nm steps) the run's specimen settles to at its laser
    energy (the first step's for a schedule), pulse rate, base temperature and target
    detection rate: :func:`apt_daq.sim.instrument.settled_field_v_per_nm`. The simulator knows its
    field; the reconstruction of its run uses it as F_e (k_f is the specimen's already), so
    the 25 nm ROI is 25 nm at every energy. With the analysis default of 28 V/nm it covered
    33 nm at 5 pJ (21.3 V/nm) and 51 nm at 50 pJ (13.6 V/nm), reaching into the shell."""
    from apt_daq.config import load_run

    key = json.dumps([run_file, sorted(overrides.items())], default=str)
    if key not in _FIELDS:
        from apt_daq.sim.instrument import settled_field_v_per_nm

        cfg = load_run(RUNS / run_file, overrides)
        rc = cfg.run
        _FIELDS[key] = round(settled_field_v_per_nm(
            cfg.instrument, cfg.specimen, rc.steps()[0].laser_pj,
            base_temperature_k=rc.base_temperature_k, pulse_rate_hz=rc.pulse_rate_hz,
            target_rate=rc.target_detection_rate, seed=rc.seed), 2)
    return _FIELDS[key]


@functools.cache
def code_digest() -> str:
    """A digest of the code that makes a simulated run (simulator, sim drivers, engine), so a
    cached run is not reused after the physics changed."""
    import apt_daq.drivers.sim_backends
    import apt_daq.engine
    import apt_daq.run
    import apt_daq.sim

    files = [*sorted(Path(apt_daq.sim.__file__).parent.glob("*.py")),
             Path(apt_daq.drivers.sim_backends.__file__), Path(apt_daq.run.__file__),
             *sorted(Path(apt_daq.engine.__file__).parent.glob("*.py"))]
    h = hashlib.sha1()
    for f in files:
        if f.exists():
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class RunOutcome:
    """How a run ended: path, state ("done"/"failed"/...), end reason, detected ions."""

    key: str
    path: Path
    state: str
    reason: str
    ions: int

    @property
    def fractured(self) -> bool:
        return self.reason.startswith("fracture")

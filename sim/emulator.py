"""The HIL emulator's entry point: :func:`serve` (what ``apt-daq emulate`` runs),
:func:`load_target` and ``python -m apt_daq.sim.emulator``.

The emulator itself (wires, time, faults, limits) is described in
:mod:`apt_daq.sim.hil_emulator`, where :class:`Emulator` lives; its fault machinery is in
:mod:`apt_daq.sim.fault_firing`, its pulse clock in :mod:`apt_daq.sim.pulse_clock`, the fault
model in :mod:`apt_daq.sim.faults` and the DLD endpoint in :mod:`apt_daq.sim.dld_server`. Every
name callers imported from here before the split is re-exported (``__all__``).
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apt_daq.sim.dld_server import MAX_COMMAND_FRAME, DldStreamServer
from apt_daq.sim.faults import (
    DEFAULT_DURATION_S,
    FAULT_KINDS,
    MAX_PENDING_FAULTS,
    TARGETS,
    WIRE_TARGETS,
    Fault,
    WireState,
    garbage_line,
    load_faults,
    parse_fault,
)
from apt_daq.sim.hil_emulator import Emulator, EmulatorStatus
from apt_daq.sim.pulse_clock import env_timeout
from apt_daq.sim.scpi_server import check_host, remote_warning

from apt_daq.config import InstrumentConfig, SpecimenConfig

# the emulator's public names, and those of the modules split from it (apt_daq.sim.faults,
# apt_daq.sim.dld_server), which callers import from here
__all__ = [
    "DEFAULT_DURATION_S", "FAULT_KINDS", "MAX_COMMAND_FRAME", "MAX_PENDING_FAULTS", "TARGETS",
    "WIRE_TARGETS", "DldStreamServer", "Emulator", "EmulatorStatus", "Fault", "WireState",
    "env_timeout", "garbage_line", "load_faults", "load_target", "parse_fault", "serve",
]


# ------------------------------------------------------------------------------- entry point
def load_target(path: str | Path, specimen: str | Path | None = None
                ) -> tuple[InstrumentConfig, SpecimenConfig, float, int, int | None]:
    """(instrument, specimen, base temperature K, seed, chunk pulses or None) from a run YAML
    or an instrument YAML (then ``specimen`` names the specimen YAML)."""
    from apt_daq.config import (
        ConfigError,
        RunFile,
        compose_yaml,
        detect_model,
        load_run,
        load_yaml_model,
    )

    data, _ = compose_yaml(Path(path))
    model = detect_model(data if isinstance(data, dict) else {})
    if model is RunFile:
        rf = load_run(path)
        sp = load_yaml_model(specimen, SpecimenConfig) if specimen else rf.specimen
        return rf.instrument, sp, rf.run.base_temperature_k, rf.run.seed, rf.run.chunk_pulses
    if model is not InstrumentConfig:
        raise ConfigError([f"{path}:1: expected an instrument or run YAML"])
    ins = load_yaml_model(path, InstrumentConfig)
    if specimen is None:
        from apt_daq.shipped import configs_dir

        specimen = configs_dir() / "specimens" / "nmc811-cr.yaml"
    return ins, load_yaml_model(specimen, SpecimenConfig), 60.0, 0, None


def serve(target: str | Path, *, host: str = "127.0.0.1", ports_file: str | Path | None = None,
          speed: float = 1.0, seed: int | None = None, faults: list[Fault] | None = None,
          specimen: str | Path | None = None, block_pulses: int | None = None,
          out: Any = None, allow_remote: bool = False, err: Any = None,
          attach: Callable[[Emulator], Callable[[], None]] | None = None) -> int:
    """Build the emulator from ``target``, serve until SIGTERM/SIGINT or ``shutdown`` on the
    control port; writes the resource strings to ``ports_file`` (JSON) and prints them.

    A ``host`` that is not loopback raises :class:`~apt_daq.sim.scpi_server.RemoteHostRefused` (a
    ValueError) unless ``allow_remote``; with it, a one-line warning goes to ``err``
    (default stderr): there is no authentication on any port.

    ``attach``, if given, is called with the emulator once it serves (before the ports are
    announced) and returns what to call when it has stopped (``--serve``: the live view)."""
    out = out or sys.stdout
    if check_host(host, allow_remote):
        print(remote_warning(host), file=err or sys.stderr, flush=True)
    ins, sp, temp_k, run_seed, chunk = load_target(target, specimen)
    emu = Emulator(ins, sp, base_temperature_k=temp_k,
                   seed=run_seed if seed is None else seed, speed=speed, host=host,
                   block_pulses=block_pulses or chunk or 200_000, faults=faults,
                   allow_remote=allow_remote)

    def on_signal(signum: int, frame: object) -> None:
        emu.request_stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    detach: Callable[[], None] | None = None
    try:
        emu.start()
        if attach is not None:
            detach = attach(emu)
        ports = emu.ports
        text = json.dumps(ports)
        if ports_file:
            p = Path(ports_file)
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_text(text + "\n")
            tmp.replace(p)  # atomic: a reader never sees half a file
        print(text, file=out, flush=True)
        emu.wait()
    finally:
        emu.stop()
        if detach is not None:
            detach()
        for s, h in old.items():
            signal.signal(s, h)
        if ports_file:
            Path(ports_file).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":  # python -m apt_daq.sim.emulator ... (same as apt-daq emulate)
    from apt_daq.commands.emulate import main

    sys.exit(main())

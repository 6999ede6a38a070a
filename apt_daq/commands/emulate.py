"""``apt-daq emulate INSTRUMENT_OR_RUN.yaml [--host H [--allow-remote]] [--ports-file F]
[--speed X] [--seed S] [--fault SPEC ...] [--faults FILE] [--serve [HOST:]PORT]``: the virtual
LEAP on real sockets and a pty (HIL); ``--serve``: a read-only live web view of it
(docs/live.md).

Prints the resource strings as one JSON line (and writes them to ``--ports-file``), then serves
until SIGTERM/SIGINT or ``shutdown`` on the control port. A ``--host`` that is not loopback is
refused (one line, exit 2) unless ``--allow-remote`` is given; then a warning is printed, as
nothing on the ports is authenticated. See ``docs/hil.md`` ("Exposure and limits").
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from pathlib import Path
from typing import Any

from apt_daq.cli import non_negative_int, positive_int
from apt_daq.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("emulate", help="serve the simulated instruments over their wire "
                       "protocols (hardware in the loop)")
    add_arguments(p)
    p.set_defaults(func=_emulate)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default="leap5000xs",
                   help="instrument YAML or run YAML, or a shipped one's name (default: the "
                   "shipped leap5000xs instrument with --specimen's default)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; anything but loopback needs "
                   "--allow-remote)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host that is not loopback: anyone who can reach the ports "
                   "can drive the HV supply, there is no authentication")
    p.add_argument("--ports-file", help="write the resource strings here as JSON")
    p.add_argument("--speed", type=float, default=1.0,
                   help="instrument seconds per wall second (default 1: real time)")
    p.add_argument("--seed", type=non_negative_int, help="random seed (default: the run file's)")
    p.add_argument("--specimen", help="specimen YAML when CONFIG is an instrument file "
                   "(default configs/specimens/nmc811-cr.yaml)")
    p.add_argument("--block-pulses", type=positive_int,
                   help="pulses per DLD readout block (default: the run's chunk_pulses, "
                   "else 200000)")
    p.add_argument("--fault", action="append", default=[], metavar="SPEC",
                   help="inject a fault, e.g. 'interlock:at_pulse=400000,duration_s=0.5' "
                   "(repeatable; kinds: drop stall garbage slow hv_trip interlock overflow "
                   "reboot)")
    p.add_argument("--faults", metavar="YAML", help="a YAML list of faults")
    p.add_argument("--serve", metavar="[HOST:]PORT",
                   help="a read-only live web view of the emulated instrument (spectrum, hit "
                   "map, HV, laser, pulses); loopback needs no token, any other host one "
                   "(docs/live.md)")


def _emulate(args: argparse.Namespace) -> int:
    from apt_daq.sim.emulator import load_faults, parse_fault, serve
    from apt_daq.sim.scpi_server import check_host

    try:
        check_host(args.host, args.allow_remote)  # before anything else: one line, exit 2
    except ValueError as e:
        raise UserError(str(e)) from None
    if not (args.speed > 0 and math.isfinite(args.speed)):
        raise UserError(f"--speed: must be a finite number > 0, got {args.speed:g}")
    if args.block_pulses is not None and args.block_pulses <= 0:
        raise UserError(f"--block-pulses: must be > 0, got {args.block_pulses}")
    faults = []
    try:
        for spec in args.fault:
            faults.append(parse_fault(spec))
        if args.faults:
            faults.extend(load_faults(args.faults))
    except (ValueError, OSError) as e:
        raise UserError(str(e)) from None
    from apt_daq.shipped import resolve

    config = resolve(args.config, "runs")
    if not config.exists():
        config = resolve(args.config, "instruments")
    if not config.exists():
        raise UserError(f"{args.config}: file not found (nor a shipped config's name)")
    args.config = str(config)
    attach = None
    if args.serve:
        # imported by name: this module is reached from apt_daq.sim.emulator's __main__, and the
        # typed seams' mypy run (tests/foundation/test_types.py) stops short of the web package
        web = importlib.import_module("apt_daq.web")
        web.parse_address(args.serve)  # a bad address fails before anything listens

        def attach(emu: Any) -> Any:
            server, feed = web.serve_emulator(emu, args.serve, config=args.config)
            # stderr: stdout's first line is the ports JSON that scripts parse
            print(f"live view (read-only) of the emulator: {server.url}", file=sys.stderr,
                  flush=True)

            def detach() -> None:
                server.close(linger_s=0.0)
                feed.stop()

            return detach

    return serve(args.config, host=args.host, ports_file=args.ports_file, speed=args.speed,
                 seed=args.seed, faults=faults, specimen=args.specimen,
                 block_pulses=args.block_pulses, allow_remote=args.allow_remote,
                 attach=attach)


def read_ports(path: str | Path) -> dict[str, str]:
    """The emulator's ports file (JSON) as a dict of resource strings; UserError naming the
    file (and the key) if unusable."""
    from apt_daq.config.loader import read_config_text

    try:
        text = read_config_text(Path(path))  # at most 1 MiB of UTF-8: else one line
    except OSError as e:
        raise UserError(f"{path}: cannot read the emulator's ports file: {e.strerror or e}"
                        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not JSON: {e.msg}") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise UserError(f"{path}: not a ports file: {str(e).split(':')[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of resource strings")
    for k, v in data.items():
        if not isinstance(v, str) or not v.strip():
            raise UserError(f"{path}: {k}: {json.dumps(v)[:40]} is not a resource string "
                            "(the emulator writes e.g. \"hv\": \"TCPIP::127.0.0.1::5025::SOCKET\")")
    if not {"laser", "hv", "hv_serial", "dld"} & set(data):
        raise UserError(f"{path}: names none of laser, hv, hv_serial, dld: not the emulator's "
                        "ports file?")
    return dict(data)


def ports_overrides(ports: dict[str, Any]) -> dict[str, str]:
    """Run-file overrides pointing the drivers at the emulator: laser ``resource`` (SCPI), HV
    ``resource`` (SCPI) and ``url`` (serial pty), DLD ``url`` (stream). Each backend uses the
    field it needs, so one run file may pick scpi or serial for the HV supply."""
    keys = {"laser": "drivers.laser.resource", "hv": "drivers.hv.resource",
            "hv_serial": "drivers.hv.url", "dld": "drivers.dld.url"}
    return {path: str(ports[k]) for k, path in keys.items() if k in ports}


def main(argv: list[str] | None = None) -> int:
    """``python -m apt_daq.sim.emulator ...``: the same as ``apt-daq emulate ...``."""
    from apt_daq.cli import main as cli_main

    return cli_main(["emulate", *(sys.argv[1:] if argv is None else argv)])

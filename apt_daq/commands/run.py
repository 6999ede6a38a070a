"""``apt-daq run RUN.yaml [-o OUT.h5] [--ions N] [--seed S] [--live PNG]``."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apt_daq.cli import console as cli_console
from apt_daq.cli import non_negative_int, positive_int

if TYPE_CHECKING:
    from rich.console import Console

    from apt_daq.run import RunResult, Session


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="an acquisition through the run engine (sim or real backends)")
    p.add_argument("config", help="run YAML, or the name of a shipped one (apt-daq configs list)")
    p.add_argument("-o", "--out", help="output run file (default runs/<name>.h5)")
    p.add_argument("--ions", type=positive_int, help="stop after this many detected ions")
    p.add_argument("--seed", type=non_negative_int,
                   help="random seed of the simulated instrument")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--live", metavar="PNG", help="refresh a dashboard PNG every few seconds")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--ports-file", metavar="JSON",
                   help="point the drivers at a running emulator: the resource strings "
                   "written by `apt-daq emulate --ports-file` (docs/hil.md)")
    p.add_argument("--serve", metavar="[HOST:]PORT", help="a live web view with pause / "
                   "resume / abort (loopback unless the printed token is given; docs/live.md)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from apt_daq.config import preflight
    from apt_daq.run import Session, State

    overrides: dict[str, object] = {}
    if args.ions is not None:
        overrides["run.stop.ions"] = args.ions
    if args.seed is not None:
        overrides["run.seed"] = args.seed
    if getattr(args, "ports_file", None):
        from apt_daq.commands.emulate import ports_overrides, read_ports

        overrides.update(ports_overrides(read_ports(args.ports_file)))
    set_by = {"run.stop.ions": "--ions", "run.seed": "--seed"}
    set_by.update({k: "--ports-file" for k in overrides if k not in set_by})
    from apt_daq.shipped import resolve

    args.config = str(resolve(args.config, "runs"))
    run_file, warnings = preflight(args.config, overrides, set_by)
    err = cli_console(stderr=True)
    for w in warnings:
        err.print(f"warning: {w}", markup=False)
    if not args.quiet:
        from apt_daq.commands.warmup import NOTICE, cold_kernels

        if cold_kernels(sim=run_file.drivers.dld.backend == "sim"):
            err.print(NOTICE, markup=False)
    from apt_daq.io._common import check_output

    if args.out:  # the run file itself refuses an existing output without --overwrite
        check_output(args.out, True, [args.config, run_file.resolve(run_file.analysis.ranges)])
    too_big = _disk_short(run_file, Path(args.out) if args.out else None)
    if too_big:
        err.print(f"warning: {too_big}", markup=False)
    if args.live:
        from apt_daq.live import check_live_png

        check_live_png(args.live, [args.out or Path("runs") / f"{run_file.run.name}.h5",
                                   args.config, run_file.resolve(run_file.analysis.ranges)])
    session = Session(run_file, out=args.out, overwrite=args.overwrite,
                      progress=not args.quiet, live_png=args.live, summary=True)
    server = None
    if getattr(args, "serve", None):
        from apt_daq.web import serve_session

        server = serve_session(session, args.serve)
        print(f"live view: {server.url}", flush=True)
    if sys.stdin is not None and sys.stdin.isatty():
        session.enter_resumes = True  # the progress display's PAUSED marker says so
        threading.Thread(target=_resume_on_enter, args=(session,), daemon=True).start()
    result = session.run()  # handles SIGHUP, SIGQUIT, SIGTERM, SIGINT (twice) itself
    if server is not None:
        server.close()
    console = cli_console()
    colour = {State.DONE: "green", State.ABORTED: "yellow"}.get(result.state, "red")
    state = result.state.name.lower()
    reason = result.reason.removeprefix(f"{state}: ")  # "aborted: aborted: ..." said once
    console.print(f"[{colour}]{state}[/{colour}]: {escape(reason)}")
    console.print(f"{result.ions} ions in {result.pulses} pulses "
                  f"({100 * result.ions / max(result.pulses, 1):.3f} % detection rate"
                  f"{_after_ramp_up(result)}), "
                  f"V {result.voltage_range_v[0]:.0f}-{result.voltage_range_v[1]:.0f} V "
                  + (f"-> {Path(result.path)}" if result.path is not None
                     else f"-> nothing written ({args.out} left as it was)"))
    if session.signal is not None:
        return 128 + session.signal  # 129 SIGHUP, 130 SIGINT, 131 SIGQUIT, 143 SIGTERM
    _summary(result, console)
    return 0 if result.state == State.DONE else 1


def _after_ramp_up(result: RunResult) -> str:
    """``; R % after the ramp-up's P pulses``: the rate the feedback held once it first
    reached half its target; the whole run's rate counts the ramp-up's pulses at a fraction
    of the target (a 300k-ion run reads 0.30 % against 0.5 %). Empty if it never ramped."""
    if result.path is None or not result.ions:
        return ""
    from apt_daq.analysis.report import settled_rate

    got = settled_rate(result.path)
    if got is None:
        return ""
    rate, first = got
    return f"; {100 * rate:.3f} % after the ramp-up's {first / 1e6:.3g} M pulses"


def _disk_short(run_file: Any, out: Path | None) -> str | None:
    """Why the run's ion count would not fit on the output's disk, if it would not (a run
    that fills the disk ends cleanly, "disk full after N hits", but it has filled the disk of
    everything else on the machine too)."""
    import shutil

    from apt_daq.hits import DERIVED_DTYPE, HIT_DTYPE, RAW_DTYPE, TRUTH_DTYPE

    ions = run_file.run.stop.ions
    if ions is None:
        return None
    per_ion = HIT_DTYPE.itemsize + DERIVED_DTYPE.itemsize  # the least a stored ion takes
    per_ion += RAW_DTYPE.itemsize if run_file.run.store_raw else 0
    per_ion += TRUTH_DTYPE.itemsize if run_file.drivers.dld.backend == "sim" else 0
    folder = (out or Path("runs") / f"{run_file.run.name}.h5").absolute().parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if ions * per_ion <= free:
        return None
    return (f"run.stop.ions {ions} needs at least {ions * per_ion / 1e9:.3g} GB "
            f"({per_ion} B an ion); {folder} has {free / 1e9:.3g} GB free: the run will "
            "stop when the disk is full")


def _resume_on_enter(session: Session) -> None:
    from apt_daq.run import State

    for _ in sys.stdin:
        if session.state == State.PAUSED:
            session.resume()


def _summary(result: RunResult, console: Console) -> None:
    """Composition of the main species and O2+/O+ of the run just written: from the counts
    the engine took as it stored the blocks (``RunResult.tally``, no second pass over the
    file), else (no ranges, or the tally failed) from ``analyze`` reading the file back."""
    if result.path is None:
        return
    s = _tally_summary(result.tally) if result.tally is not None else None
    if s is None:
        from apt_daq.analysis.report import analyze_run
        from apt_daq.errors import UserError

        try:
            s = analyze_run(result.path)
        except UserError as e:  # the run is stored and its exit code is its own: no summary
            cli_console(stderr=True).print(f"warning: no summary: {e}", markup=False)
            return
    comp = sorted(s["composition"].items(), key=lambda kv: -(kv[1]["fraction"] or 0))
    main = ", ".join(f"{el} {100 * v['fraction']:.1f}+-{100 * v['error']:.1f}"
                     for el, v in comp[:7] if v["fraction"])
    console.print(f"composition (at.%, {s['ranged_ions']} ranged ions): {main}")
    ratios = {k: v for k, v in s["ratios"].items() if k in ("O2+/O+", "Li/(Li+Ni+Co+Mn)",
                                                            "Ni/(Ni+Co+Mn)", "Mn2+/Mn+")}
    if ratios:
        console.print("  ".join(f"{k} = {v:.3g}" for k, v in ratios.items()))


def _tally_summary(tally: Any) -> dict[str, Any] | None:
    """``analyze``'s composition, ranged ions and ratios from the engine's counts."""
    from apt_daq.analysis.composition import composition
    from apt_daq.analysis.ratios import ratios

    if tally.calibration is None:
        return None
    comp, counts_by_ion = composition(tally.counts_roi, tally.ranges)
    rat, _err = ratios(counts_by_ion, comp.atoms)
    return {"composition": {el: {"fraction": comp.fraction(el), "error": comp.error(el)}
                            for el in comp.atoms},
            "ranged_ions": int(tally.counts_roi.sum()), "ratios": rat}

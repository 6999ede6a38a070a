"""``apt-daq info RUN.h5``: what a run holds."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from apt_daq.io.store import RunReader, writer_of


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="config, counts, duration and end state of a run file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_info)


def summarize(path: str) -> dict:
    with RunReader(path) as r:
        meta = r.meta
        log = r.log
        cfg = meta.get("config") or {}
        out = {
            "file": str(path),
            "state": meta.get("state"),
            "state_in_file": meta.get("state"),
            "state_note": None,
            "end_reason": meta.get("end_reason"),
            "started": meta.get("started"),
            "ended": meta.get("ended"),
            "simulated": meta.get("simulated"),
            "seed": meta.get("seed"),
            "instrument": (meta.get("instrument") or {}).get("name"),
            "specimen": (cfg.get("specimen") or {}).get("name"),
            "counts": {n: r.count(n) for n in ("raw", "hits", "derived", "truth", "lost", "log")},
            "pulses": int(log["pulses"][-1]) if len(log) else None,
            "instrument_time_s": float(log["time_s"][-1]) if len(log) else None,
            "voltage_v": [float(log["v_dc"].min()), float(log["v_dc"].max())] if len(log) else None,
            "laser_pj": sorted({round(float(x), 3) for x in log["laser_pj"] if x > 0}),
            "transitions": meta.get("transitions"),
        }
    _live_state(path, out)
    return out


def _live_state(path: str, out: dict) -> None:
    """A file that says ``running`` is running only while a live process holds its writer
    lock; otherwise its writer died (SIGKILL, power cut) and the run is ``interrupted``."""
    if out["state"] != "running" or out["ended"]:
        return
    holder = writer_of(path)
    if holder is not None:
        pid = f"pid {holder['pid']}" if holder.get("pid") else "a live process"
        out["state_note"] = f"{pid} is writing it"
        return
    with RunReader(path) as r:  # the writer may have ended between the two looks
        if r.meta.get("state") != "running" or r.meta.get("ended"):
            out["state"] = out["state_in_file"] = r.meta.get("state")
            out["ended"] = r.meta.get("ended")
            return
    out["state"] = "interrupted"
    out["state_note"] = "file says running; no writer holds it"


def _info(args: argparse.Namespace) -> int:
    info = summarize(args.file)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    t = Table(title=args.file, show_header=False)
    for k, v in info.items():
        if k == "state" and info["state_note"]:
            v = f"{v} ({info['state_note']})"
        if k not in ("transitions", "state_in_file", "state_note"):
            t.add_row(k, str(v))
    Console().print(t)
    return 0

"""``apt-daq info RUN.h5``: what a run holds (a POS, EPOS or APT file: :mod:`.info_ions`), for people (aligned ``name: value`` lines, one
record kind per line with what it is) and for scripts (``--json``: numbers as numbers)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

#: what each record count is, in ``apt-daq info``'s words
COUNT_LEGEND = {
    "raw": "DLD records as the detector gave them (/raw)",
    "hits": "detected ions, decoded (/hits)",
    "derived": "mass and position of each hit (/derived)",
    "truth": "simulated truth of each hit (/truth)",
    "lost": "simulated ions that evaporated but left no hit (/truth_lost)",
    "log": "instrument-state rows, one per readout block (/log)",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="config, counts, duration and end state of a run file; "
                       "ions, fields and ranges of a POS, EPOS or APT file")
    p.add_argument("file", help="a run file (.h5), or a .pos, .epos or .apt file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_info)


def summarize(path: str) -> dict:
    from apt_daq.io.store import RunReader

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
            "pulse_numbers": _pulse_numbers(meta),
            "instrument_time_s": round(float(log["time_s"][-1]), 3) if len(log) else None,
            "wall_time_s": _wall_time_s(meta.get("started"), meta.get("ended")),
            "voltage_v": ([round(float(log["v_dc"].min()), 1), round(float(log["v_dc"].max()), 1)]
                          if len(log) else None),
            "laser_pj": sorted({round(float(x), 3) for x in log["laser_pj"] if x > 0}),
            "transitions": [[round(float(t), 3), *rest]
                            for t, *rest in meta.get("transitions") or []],
        }
    imp = (meta.get("imported") or {}) if isinstance(meta, dict) else {}
    if out["voltage_v"] is None and imp.get("voltage_v"):  # an import: no instrument log
        out["voltage_v"] = imp["voltage_v"]
    if out["pulses"] is None and imp.get("pulse_count"):
        out["pulses"] = imp["pulse_count"]
    _live_state(path, out)
    return out


def _pulse_numbers(meta: dict) -> str | None:
    """What an imported run's pulse numbers are when its file had none (/meta "imported"
    "pulses": numbered by the importer, so no pulse count or detection rate comes of them)."""
    imp = meta.get("imported") or {}
    if "pulse" in imp.get("fields", ("pulse",)):
        return None
    return imp.get("pulses") or "not in the imported file"


def _live_state(path: str, out: dict) -> None:
    """A file that says ``running`` is running only while a live process holds its writer
    lock; otherwise its writer died (SIGKILL, power cut) and the run is ``interrupted``."""
    if out["state"] != "running" or out["ended"]:
        return
    from apt_daq.io.store import RunReader, writer_of

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


def _wall_time_s(started: str | None, ended: str | None) -> float | None:
    try:
        t = datetime.fromisoformat(ended) - datetime.fromisoformat(started)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return round(t.total_seconds(), 3)


def duration_text(seconds: float | None) -> str:
    """``13 min 30 s``, ``2 h 0 min 5 s``, ``4.25 s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.3g} s"
    h, rest = divmod(round(seconds), 3600)
    m, s = divmod(rest, 60)
    return " ".join(([f"{h} h"] if h else []) + ([f"{m} min"] if h or m else []) + [f"{s} s"])


def _time_text(iso: str | None) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S %Z").strip()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(iso or "-")


def lines(info: dict) -> list[str]:
    """The human-readable report of :func:`summarize`."""
    state = str(info["state"]) + (f" ({info['state_note']})" if info["state_note"] else "")
    v = info["voltage_v"]
    rows = [
        ("file", info["file"]),
        ("state", state),
        ("end reason", info["end_reason"] or "-"),
        ("started", _time_text(info["started"])),
        ("ended", _time_text(info["ended"]) + (
            f" ({duration_text(info['wall_time_s'])} wall clock)"
            if info["wall_time_s"] is not None else "")),
        ("instrument", info["instrument"] or "-"),
        ("specimen", info["specimen"] or "-"),
        ("simulated", ("yes" if info["simulated"] else "no") + (
            f", seed {info['seed']}" if info["simulated"] and info["seed"] is not None else "")),
        ("pulses", "-" if info["pulses"] is None else str(info["pulses"])),
        *([("pulse numbers", "none in the imported file (no pulse count, no detection rate)")]
          if info.get("pulse_numbers") else []),
        ("instrument time", duration_text(info["instrument_time_s"])),
        ("voltage", "-" if v is None else f"{v[0]:.0f}-{v[1]:.0f} V"),
        ("laser", ", ".join(f"{e:g}" for e in info["laser_pj"]) + " pJ"
         if info["laser_pj"] else "-"),
    ]
    width = max(len(k) for k, _ in rows) + 2
    out = [f"{k + ':':<{width}}{val}" for k, val in rows]
    counts = info["counts"]
    digits = max(len(str(n)) for n in counts.values())
    out.append("records:")
    out += [f"  {name:<{width - 2}}{n:>{digits}}  {COUNT_LEGEND.get(name, '')}".rstrip()
            for name, n in counts.items()]
    return out


def _info(args: argparse.Namespace) -> int:
    from apt_daq.commands.info_ions import ion_lines, is_ion_file, summarize_ions

    ions = is_ion_file(args.file)
    info = summarize_ions(args.file) if ions else summarize(args.file)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print("\n".join(ion_lines(info) if ions else lines(info)))
    return 0

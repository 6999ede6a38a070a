"""Faults of the HIL emulator: what can go wrong on a wire or in the instrument, and when.

A :class:`Fault` (from a YAML list, ``--fault`` or the control port) names a kind
(:data:`FAULT_KINDS`, documented in ``docs/hil.md``), a target and when it fires;
:func:`parse_fault` reads the one-line form, :func:`load_faults` the YAML list.
:class:`WireState` is one link's fault state while the emulator serves it. At most
:data:`MAX_PENDING_FAULTS` faults wait to fire.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAULT_KINDS: dict[str, str] = {
    "drop": "close the open connections of the target (the instrument stays up)",
    "stall": "the target's open links stop answering for duration_s; commands received "
             "meanwhile are lost; links opened later are served (the pty: all traffic stalls; "
             "DLD: frames held back)",
    "garbage": "the target answers garbage bytes: every reply for duration_s, at least the next "
               "one (DLD: a burst of bytes that is not a frame)",
    "slow": "every reply on the target's open links is delayed by delay_s for duration_s "
            "(links opened later are served at full speed; the pty: all replies)",
    "hv_trip": "the HV supply's over-current protection trips (output off, latched)",
    "interlock": "the laser safety interlock opens for duration_s (emission off), then closes",
    "overflow": "the DLD front end overflows for duration_s: it drops every record and reports "
                "the drops in its frames (dropped > 0), also while the laser is off",
    "reboot": "the whole instrument reboots: links dropped, devices reset (HV output off, "
              "setpoint 0, laser emission off), no service for duration_s",
}
TARGETS = ("laser", "hv", "hv_serial", "dld", "all")
DEFAULT_DURATION_S = {"stall": 1.0, "garbage": 0.0, "slow": 5.0, "interlock": 1.0,
                      "overflow": 1.0, "reboot": 1.0}
WIRE_TARGETS = ("laser", "hv", "hv_serial", "dld")
MAX_PENDING_FAULTS = 1000  # scheduled faults waiting; one more is refused
#: bounds of a fault's numbers: a fault lasts at most a day and fires within 30 days (a
#: run's longest), a burst floods at most 1e9 records; beyond them it is a typo
MAX_LIMITS: dict[str, float] = {"at_s": 2_592_000.0, "duration_s": 86_400.0,
                                "delay_s": 86_400.0, "at_pulse": 1e15, "records": 1e9}
MAX_FAULT_FILE_BYTES = 1 << 20  # a fault list is a few lines


@dataclass
class Fault:
    """One fault. ``at_s`` (instrument time since the emulator started) or ``at_pulse`` (laser
    pulses fired since it started) schedule it; neither: at once. ``duration_s`` and ``delay_s``
    are wall seconds (the time scale of links and driver timeouts)."""

    kind: str
    target: str = "all"
    at_s: float | None = None
    at_pulse: int | None = None
    duration_s: float | None = None
    delay_s: float = 0.2
    records: int = 100_000  # overflow: records of the burst that flooded the front end

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r}: expected one of "
                             f"{', '.join(FAULT_KINDS)}")
        if self.target not in TARGETS:
            raise ValueError(f"fault target {self.target!r}: expected one of "
                             f"{', '.join(TARGETS)}")
        if self.duration_s is None:
            self.duration_s = DEFAULT_DURATION_S.get(self.kind, 0.0)
        for name in ("at_s", "duration_s", "delay_s"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"fault {self.kind}: {name} must be a number, "
                                 f"got {value!r}") from None
            if not math.isfinite(number):
                raise ValueError(f"fault {self.kind}: {name} must be a finite number, "
                                 f"got {value!r}")
            _check_bound(self.kind, name, number)
            setattr(self, name, number)
        for name in ("at_pulse", "records"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"fault {self.kind}: {name} must be an integer >= 0, "
                                 f"got {value!r}")
            _check_bound(self.kind, name, value)
            setattr(self, name, value)
        if self.duration_s < 0 or self.delay_s < 0:
            raise ValueError("fault duration_s and delay_s must be >= 0")

    def targets(self) -> tuple[str, ...]:
        return WIRE_TARGETS if self.target == "all" else (self.target,)


def _check_bound(kind: str, name: str, value: float) -> None:
    if value > MAX_LIMITS[name]:
        raise ValueError(f"fault {kind}: {name} must be at most {MAX_LIMITS[name]:g}, "
                         f"got {value:g}")


_FIELDS = {"target": str, "at_s": float, "at_pulse": int, "duration_s": float,
           "delay_s": float, "records": int}


def parse_fault(spec: str) -> Fault:
    """``KIND[:key=value,...]`` or ``KIND key=value ...`` -> :class:`Fault`.

    ``stall:target=dld,duration_s=3``, ``interlock at_pulse=400000 duration_s=0.5``.
    """
    spec = spec.strip()
    kind, _, rest = spec.replace(":", " ", 1).partition(" ")
    kw: dict[str, Any] = {}
    for item in rest.replace(",", " ").split():
        key, eq, value = item.partition("=")
        if not eq or key not in _FIELDS:
            raise ValueError(f"fault {spec!r}: {item!r} is not key=value with key one of "
                             f"{', '.join(_FIELDS)}")
        try:
            kw[key] = _FIELDS[key](value)
        except ValueError:
            raise ValueError(f"fault {spec!r}: {key}={value!r} is not a "
                             f"{_FIELDS[key].__name__}") from None
    return Fault(kind.lower(), **kw)


def load_faults(path: str | Path) -> list[Fault]:
    """A YAML list of faults (each a mapping of :class:`Fault` fields)."""
    import yaml

    path = Path(path)
    if path.is_file() and path.stat().st_size > MAX_FAULT_FILE_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes: more than a fault list "
                         f"({MAX_FAULT_FILE_BYTES} at most)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text (UTF-8) file: byte {e.start}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{path}{where}: not valid YAML: {problem}") from None
    if isinstance(data, dict):
        data = data.get("faults", [])
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of faults (or a faults: key)")
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: fault {i}: expected a mapping, got {item!r}")
        try:
            out.append(Fault(**item))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: fault {i}: {e}") from None
    return out


@dataclass
class WireState:
    """Fault state of one link, in wall time (``time.monotonic``)."""

    stall_until: float = 0.0
    slow_until: float = 0.0
    delay_s: float = 0.0
    garbage_until: float = 0.0
    garbage_next: int = 0
    down_until: float = 0.0
    # TCP links are served one thread each: the links open when a stall or slow fault fired
    # are the ones it hits (a hung session); links opened later are served normally
    threads: set[threading.Thread] = field(default_factory=set)
    hit: set[threading.Thread] | None = None  # None: every link (the pty has only one)

    def clear(self) -> None:
        self.stall_until = self.slow_until = self.garbage_until = self.down_until = 0.0
        self.delay_s = 0.0
        self.garbage_next = 0
        self.hit = None

    def hits_me(self) -> bool:
        return self.hit is None or threading.current_thread() in self.hit


def garbage_line(rng: random.Random, n: int = 24) -> str:
    """ASCII junk without a line end: control characters and symbols, not a number."""
    alphabet = "".join(chr(c) for c in range(1, 128) if chr(c) not in "\n\r0123456789")
    return "".join(rng.choice(alphabet) for _ in range(n)) + "#!"

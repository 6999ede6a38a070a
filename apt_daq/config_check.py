"""``apt-daq config check``: any apt-daq YAML validated as what it is.

Above the foundation because a campaign file is checked by the campaign's own model
(:func:`apt_daq.campaign.load_sweep`); run, instrument and specimen files by
:mod:`apt_daq.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apt_daq.config import (
    RunFile,
    _load_tree,
    compose_yaml,
    detect_model,
    file_kind,
    load_yaml_model,
    preflight,
    where,
)
from apt_daq.errors import UserError


def check_file(path: str | Path) -> tuple[str, Any, list[str]]:
    """Validate any apt-daq YAML: a run file as :func:`~apt_daq.config.preflight` does, an
    instrument, specimen or campaign file as what it is. Returns (kind, model, warnings).
    A file that is no apt-daq config at all (a range file, a pyvisa-sim device file) is
    named as what it is, with where it belongs."""
    p = Path(path)
    if p.suffix.lower() in (".rrng", ".rng"):
        raise UserError(f"{p}:1: this is a range file, not an apt-daq config: name it in a "
                        f"run file (analysis: ranges: {p}) or give it to apt-daq analyze "
                        "--ranges")
    data, _ = compose_yaml(p)
    if isinstance(data, dict) and "devices" in data and "spec" in data:
        raise UserError(f"{p}:1: this is a pyvisa-sim device file, not an apt-daq config: "
                        f"use it as a driver's resource (drivers: hv: {{backend: scpi, "
                        f"resource: {p}@sim}})")
    kind = file_kind(data)
    if kind == "run":
        rf, warnings = preflight(path)
        return kind, rf, warnings + _range_file_warnings(p, rf)
    if kind == "campaign":
        from apt_daq.campaign.sweep import check_sweep, load_sweep

        sweep = load_sweep(path)
        check_sweep(sweep)  # set: and every axis value, as campaign --dry-run would
        return kind, sweep, []
    return kind, load_yaml_model(path, detect_model(data)), []


def _range_file_warnings(path: Path, rf: RunFile) -> list[str]:
    """The run file's range file (``analysis.ranges``) read as ``run`` reads it before the
    acquisition: a malformed one raises the same error here. Warns of a reference peak that
    names none of its ranges (the corrections then take the most counted central range)."""
    ranges = rf.resolve(rf.analysis.ranges)
    if ranges is None:
        return []
    from apt_daq.io.ranges import read_ranges

    table = read_ranges(ranges)
    ref = rf.analysis.reference_peak
    if ref is None or ref in table.names:
        return []
    _, lines = _load_tree(path)
    return [f"{where(lines, ('analysis', 'reference_peak'), str(path))}: {ref} names no range "
            f"of {ranges} (the corrections take the most counted central range instead)"]

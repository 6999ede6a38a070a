"""``apt-daq config check``: any apt-daq YAML validated as what it is.

Above the foundation because a campaign file is checked by the campaign's own model
(:func:`apt_daq.campaign.load_sweep`); run, instrument and specimen files by
:mod:`apt_daq.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apt_daq.config import compose_yaml, detect_model, file_kind, load_yaml_model, preflight


def check_file(path: str | Path) -> tuple[str, Any, list[str]]:
    """Validate any apt-daq YAML: a run file as :func:`~apt_daq.config.preflight` does, an
    instrument, specimen or campaign file as what it is. Returns (kind, model, warnings)."""
    data, _ = compose_yaml(Path(path))
    kind = file_kind(data)
    if kind == "run":
        rf, warnings = preflight(path)
        return kind, rf, warnings
    if kind == "campaign":
        from apt_daq.campaign import load_sweep

        return kind, load_sweep(path), []
    return kind, load_yaml_model(path, detect_model(data)), []

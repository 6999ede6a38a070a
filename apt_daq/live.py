"""A live dashboard PNG for long runs: hit map, mass spectrum, voltage and rate against time.

The run engine calls :func:`update_live_png` after every block; it accumulates histograms (cheap,
bounded memory) and redraws the image at most every ``REFRESH_S`` seconds of wall time, writing
to a temporary file and renaming it so a viewer never sees half an image.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REFRESH_S = 5.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_live_png(path: str | Path, others: Iterable[str | Path | None] = ()) -> Path:
    """``path`` as a Path once the dashboard may be drawn there, checked before the run starts
    (HV and laser still off), one line naming it otherwise: a ``.png`` name, not a folder, in a
    folder that can take it (made if missing), not one of the run's own files (``others``: its
    output, config, range file) and not an existing file other than a PNG image (an earlier
    dashboard is redrawn; anything else is left alone)."""
    from apt_daq.errors import UserError
    from apt_daq.io._common import check_output

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"--live {path}: takes a .png file name (the dashboard image)")
    for other in others:
        if other is not None and Path(other).absolute() == path.absolute():
            raise UserError(f"--live {path}: is also this run's file {other}; "
                            "give the dashboard its own name")
    check_output(path, True, [o for o in others if o is not None])
    if path.exists():
        with open(path, "rb") as f:
            if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                raise UserError(f"--live {path}: exists and is not a PNG image; "
                                "give the dashboard another name")
    path.absolute().parent.mkdir(parents=True, exist_ok=True)
    return path
MASS_EDGES = np.linspace(0.0, 120.0, 2401)  # 0.05 Da bins


@dataclass
class LiveState:
    det_edges: np.ndarray
    hitmap: np.ndarray
    spectrum: np.ndarray = field(default_factory=lambda: np.zeros(len(MASS_EDGES) - 1))
    t_s: list[float] = field(default_factory=list)
    v: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    last_draw: float = 0.0
    broken: str | None = None  # why the image could not be written (then no more tries)


def _state(session: Any) -> LiveState:
    st = getattr(session, "_live_state", None)
    if st is None:
        r = session.cfg.instrument.detector_diameter_mm / 2
        edges = np.linspace(-r, r, 161)
        st = LiveState(edges, np.zeros((160, 160)))
        session._live_state = st
    return st


def update_live_png(session: Any, hits: np.ndarray, derived: np.ndarray,
                    force: bool = False) -> None:
    st = _state(session)
    if len(hits):
        st.hitmap += np.histogram2d(hits["det_x"], hits["det_y"], bins=(st.det_edges,) * 2)[0]
        st.spectrum += np.histogram(derived["mass"], bins=MASS_EDGES)[0]
    if len(hits) or not force:  # the closing redraw adds no block (no rate drop to 0)
        st.t_s.append(session._now_s())
        st.v.append(session._v_set)
        # the block's measured rate (a block may end early when the detector buffer fills)
        st.rate.append(getattr(session, "last_rate", len(hits) / max(
            session.cfg.run.chunk_pulses, 1)))
    if st.broken or (not force and time.monotonic() - st.last_draw < REFRESH_S):
        return
    st.last_draw = time.monotonic()
    try:
        draw(st, session.live_png, title=session.cfg.run.name,
             target=session.cfg.run.target_detection_rate)
    except OSError as e:  # the dashboard is a view: the acquisition goes on without it
        st.broken = f"{e.filename}: {e.strerror or e}"
        logging.getLogger(__name__).warning("live dashboard not drawn any more: %s", st.broken)


def draw(st: LiveState, path: Any, title: str, target: float) -> None:
    from matplotlib.figure import Figure  # no pyplot: the user's backend is left alone

    fig = Figure(figsize=(10, 8), layout="constrained")
    ax = fig.subplots(2, 2)
    e = st.det_edges
    ax[0, 0].imshow(st.hitmap.T, origin="lower", extent=(e[0], e[-1], e[0], e[-1]),
                    cmap="viridis")
    ax[0, 0].set(title="detector hit map", xlabel="x (mm)", ylabel="y (mm)")
    centers = 0.5 * (MASS_EDGES[1:] + MASS_EDGES[:-1])
    ax[0, 1].semilogy(centers, np.maximum(st.spectrum, 0.5), lw=0.6)
    ax[0, 1].set(title="mass spectrum", xlabel="m/n (Da)", ylabel="counts")
    ax[1, 0].plot(st.t_s, st.v)
    ax[1, 0].set(title="specimen voltage", xlabel="instrument time (s)", ylabel="V_dc (V)")
    ax[1, 1].plot(st.t_s, 100 * np.asarray(st.rate))
    ax[1, 1].axhline(100 * target, ls="--", c="k", lw=0.8)
    ax[1, 1].set(title="detection rate", xlabel="instrument time (s)", ylabel="ions/pulse (%)")
    fig.suptitle(title)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")  # hidden: a viewer sees the whole image
    try:
        fig.savefig(tmp, dpi=80)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None

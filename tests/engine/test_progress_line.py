"""The run's plain progress line (a log file, CI) shows the laser energy it was given: a
0.005 pJ setting (a likely nJ slip that config check now warns about) read '0.0 pJ'."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from rich.console import Console

from apt_daq.engine.progress import Progress
from apt_daq.engine.states import State


@pytest.mark.parametrize(("pj", "shown"), [(0.005, "0.005 pJ"), (0.5, "0.5 pJ"),
                                           (5.0, "5.0 pJ"), (150.0, "150.0 pJ")])
def test_plain_progress_line_shows_the_laser_energy(pj: float, shown: str):
    out = io.StringIO()
    session = SimpleNamespace(state=State.ACQUIRING, transitions=[])
    run = SimpleNamespace(target_detection_rate=0.005, stop=SimpleNamespace(ions=1000))
    p = Progress(session, run, console=Console(file=out, force_terminal=False, width=200),
                 clock=lambda: 100.0, enter_resumes=False)
    p.update(500, 0.005, 5000.0, pj, 0)
    p.close()
    assert f" {shown}" in out.getvalue()

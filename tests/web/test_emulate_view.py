"""``apt-daq emulate CONFIG --serve [HOST:]PORT``: the read-only live view of the emulated
instrument, driven through the real drivers (docs/hil.md's example) and read over HTTP with
Bokeh's own client (the served document, no browser): its pulse and ion counters move, the HV
and laser show what the drivers set, there are no buttons. Without ``--serve`` the emulator
does no view work at all: ``Emulator(on_block=None)`` never calls the hook's path.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HIL_RUN = ROOT / "configs" / "runs" / "hil-nmc811-cr.yaml"
HV = {"backend": "serial", "limit_v": 6000, "ramp_v_per_s": 2000}

pytest.importorskip("bokeh")


def _texts(url: str) -> tuple[str, list[str]]:
    """(all the Div text, the button labels) of a freshly served document: the page's HTML
    carries the signed session token (the server signs its session ids, so a client cannot
    make its own), with which Bokeh's client pulls that session's document."""
    from bokeh.client.session import ClientSession
    from bokeh.models import Button, Div
    from bokeh.util.token import get_session_id

    page = urllib.request.urlopen(url, timeout=30).read().decode()
    token = re.search(r'"token":"([^"]+)"', page).group(1)  # type: ignore[union-attr]

    class Signed(ClientSession):
        @property
        def token(self) -> str:
            return token

    host = url.removeprefix("http://").split("/")[0]
    session = Signed(session_id=get_session_id(token), websocket_url=f"ws://{host}/ws")
    try:
        session.pull()
        doc = session.document
        divs = " ".join(m.text for m in doc.select({"type": Div}))
        return divs, [b.label for b in doc.select({"type": Button})]
    finally:
        session.close()


def _counter(text: str, name: str) -> int:
    m = re.search(rf"<td>{name}</td><td[^>]*>(?:<span[^>]*>)?([\d,]+)", text)
    assert m, f"no {name} in {text[:500]}"
    return int(m.group(1).replace(",", ""))


def _start(tmp: Path, *args: str) -> tuple[subprocess.Popen, dict[str, str], Path]:
    ports_file, err = tmp / "ports.json", tmp / "emulate.err"
    proc = subprocess.Popen(
        [sys.executable, "-m", "apt_daq.cli", "emulate", str(HIL_RUN), "--speed", "20",
         "--ports-file", str(ports_file), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=open(err, "wb"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 180
    while not (ports_file.exists() and ports_file.stat().st_size):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"emulator did not start: {err.read_text()}")
        time.sleep(0.1)
    first = proc.stdout.readline().decode()  # type: ignore[union-attr]
    assert json.loads(first) == json.loads(ports_file.read_text())  # stdout stays the ports
    return proc, json.loads(ports_file.read_text()), err


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_emulate_serve_shows_the_instrument(tmp_path: Path) -> None:
    from apt_daq import drivers

    proc, ports, err = _start(tmp_path, "--serve", "127.0.0.1:0")
    try:
        m = None
        deadline = time.monotonic() + 30
        while m is None and time.monotonic() < deadline:
            m = re.search(r"live view \(read-only\) of the emulator: (http://\S+)",
                          err.read_text())
            time.sleep(0.1)
        assert m, err.read_text()
        url = m.group(1)
        assert "token=" not in url  # loopback: no token, as the other views

        text, buttons = _texts(url)
        assert buttons == []  # an instrument: control goes through its wires
        assert _counter(text, "pulses") == 0

        with drivers.open_hv({**HV, "url": ports["hv_serial"]}) as hv, \
                drivers.open_laser({"backend": "scpi", "resource": ports["laser"]},
                                   hv=hv) as laser, \
                drivers.open_dld({"backend": "stream", "url": ports["dld"]}) as dld:
            hv.output(True)
            hv.ramp_to(3000)
            laser.set_energy(5.0)
            laser.emission(True)
            dld.start()
            raw = dld.read_chunk(timeout_s=10)
            assert raw is not None
            time.sleep(1.0)
            first, _ = _texts(url)
            for _ in range(3):
                dld.read_chunk(timeout_s=10)
            time.sleep(1.0)
            second, _ = _texts(url)
        p1, p2 = _counter(first, "pulses"), _counter(second, "pulses")
        i1, i2 = _counter(first, "ions"), _counter(second, "ions")
        assert 0 < p1 < p2, (p1, p2)
        assert 0 < i1 < i2, (i1, i2)
        assert "acquiring" in first
        assert "3,000 V" in first and "5 pJ" in first
        assert re.search(r"HV output</td><td[^>]*>on", first)
        # the drivers left: HV output and emission off, as the instrument shows them
        time.sleep(1.0)
        after, _ = _texts(url)
        assert re.search(r"HV output</td><td[^>]*>off", after), after
        assert re.search(r"laser emission</td><td[^>]*>off", after), after
        assert "idle" in after
    finally:
        _stop(proc)
    assert proc.returncode == 0, err.read_text()
    assert "Traceback" not in err.read_text()


def test_without_serve_nothing_of_the_view(tmp_path: Path, monkeypatch) -> None:
    """``on_block=None``: the pulse clock never reaches the hook's path; set, it gets each
    delivered block and the model state."""
    from apt_daq.sim.emulator import Emulator, EmulatorStatus, load_target
    from apt_daq.sim.instrument import SimBlock

    from apt_daq import drivers

    calls: list[Any] = []
    real = Emulator._notify
    monkeypatch.setattr(Emulator, "_notify", lambda self, blk, sent: (calls.append("notify"),
                                                                      real(self, blk, sent)))
    ins, sp, temp_k, seed, _ = load_target(HIL_RUN)
    emu = Emulator(ins, sp, base_temperature_k=temp_k, seed=seed, speed=20, serial=False,
                   block_pulses=200_000)
    assert emu.on_block is None
    got: list[tuple[Any, Any]] = []
    with emu:
        ports = emu.ports
        with drivers.open_hv({"backend": "scpi", "resource": ports["hv"], "limit_v": 6000,
                              "ramp_v_per_s": 2000}) as hv, \
                drivers.open_laser({"backend": "scpi", "resource": ports["laser"]},
                                   hv=hv) as laser, \
                drivers.open_dld({"backend": "stream", "url": ports["dld"]}) as dld:
            hv.output(True)
            hv.ramp_to(3000)
            laser.set_energy(5.0)
            laser.emission(True)
            dld.start()
            for _ in range(2):
                dld.read_chunk(timeout_s=10)
            assert emu.blocks >= 2 and calls == []
            emu.on_block = lambda blk, st: got.append((blk, st))
            for _ in range(2):
                dld.read_chunk(timeout_s=10)
    assert calls and got
    blk, st = got[0]
    assert isinstance(blk, SimBlock) and isinstance(st, EmulatorStatus)
    assert st.hv_output_on and st.laser_energy_pj == 5.0 and st.pulses >= blk.pulses


def test_emulate_imports_no_web() -> None:
    code = ("import sys, apt_daq.commands.emulate, apt_daq.sim.emulator; "
            "assert not [m for m in sys.modules if m.startswith('apt_daq.web')], "
            "[m for m in sys.modules if m.startswith('apt_daq.web')]")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)

"""Hardware in the loop: the real drivers and the run engine against the emulator process.

Every test ends with the emulator's own device log showing the HV output and the laser
emission off (what the instrument got, not what the drivers believe), and, where the run
stored data, the store holding every readout block the engine read up to the fault.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from apt_daq.drivers.base import BadReply, ConnectionLost, DriverError, DriverTimeout, SafetyError
from hil_support import BLOCK_PULSES, HIL_RUN, ROOT, EmulatorProcess, final_state

from apt_daq.commands.emulate import ports_overrides
from apt_daq.config import load_run
from apt_daq.io.store import RunReader
from apt_daq.run import Session, State

pytestmark = pytest.mark.hil

FAULT_PULSE = 1_600_000  # 8 readout blocks after DLD start: the rate has settled by then
BASE = {"run.start_voltage_v": 3000.0, "run.stop.ions": 10_000,
        "run.chunk_pulses": BLOCK_PULSES}


def hil_run(emulator, tmp_path: Path, overrides: dict[str, Any] | None = None
            ) -> tuple[Session, Any, BaseException | None]:
    """One acquisition through the engine and the real drivers; (session, result, error)."""
    rf = load_run(HIL_RUN, {**ports_overrides(emulator.ports), **BASE, **(overrides or {})})
    session = Session(rf, out=tmp_path / "run.h5", overwrite=True)
    try:
        return session, session.run(), None
    except DriverError as e:
        return session, None, e


def assert_safe(emulator) -> dict[str, Any]:
    log = emulator.log()
    hv_on, laser_on = final_state(log)
    assert not hv_on, f"HV output still on at the emulator: {log['hv'][-5:]}"
    assert not laser_on, f"laser emission still on at the emulator: {log['laser'][-5:]}"
    return log


def assert_kept(path: Path, log: dict[str, Any], fault_pulse: int | None) -> np.ndarray:
    """The store holds exactly the first k blocks the front end sent (no block torn or
    lost), and all blocks but the one in flight that ended before the fault."""
    sent = np.array([b[4] for b in log["blocks"]], np.int64)
    ends = np.array([b[2] + b[3] for b in log["blocks"]], np.int64)
    with RunReader(path) as r:
        raw = r.read("raw")
        assert r.count("hits") == r.meta["counters"]["ions"]
    cum = np.concatenate([[0], np.cumsum(sent)])
    k = int(np.searchsorted(cum, len(raw)))
    assert k < len(cum) and cum[k] == len(raw), "store is not a whole number of blocks"
    if fault_pulse is not None:
        before = int(np.count_nonzero(ends <= fault_pulse))
        assert k >= before - 1, f"only {k} of the {before} blocks before the fault stored"
        assert len(raw) > 0
    if len(raw):
        assert np.all(np.diff(raw["pulse"].astype(np.int64)) >= 0)
    return raw


# --------------------------------------------------------------------------- plain clients
def _ask(f, line: str) -> str:
    f.write((line + "\n").encode())
    f.flush()
    return f.readline().decode().strip() if "?" in line else ""


def test_any_scpi_client_talks_to_hv_and_laser(emulator):
    """A plain socket, not our driver: *IDN?, a setting, SYST:ERR?, an error in the queue."""
    emulator.reset()
    for name, setting, query, value in (("hv", "SOUR:VOLT 100", "SOUR:VOLT?", 100.0),
                                        ("laser", "SOUR:PULS:ENER 7.5", "SOUR:PULS:ENER?",
                                         7.5)):
        host, port = emulator.ports[name].split("::")[1:3]
        with socket.create_connection((host, int(port)), timeout=5) as s:
            f = s.makefile("rwb")
            assert _ask(f, "*IDN?").startswith("apt-daq,")
            _ask(f, setting)
            assert _ask(f, "SYST:ERR?") == '0,"No error"'
            assert float(_ask(f, query)) == value
            _ask(f, "BOGUS:CMD 1")
            assert _ask(f, "SYST:ERR?").startswith("-113,")
            assert _ask(f, "SYST:ERR?") == '0,"No error"'
    log = emulator.log()
    assert [r[1:] for r in log["hv"]] == [["setpoint_v", 100.0]]
    assert [r[1:] for r in log["laser"]] == [["energy_pj", 7.5]]


def test_serial_line_on_the_pty(emulator):
    """The HV line protocol on the pseudo-terminal, with plain os reads and writes."""
    import os
    import termios
    import tty

    emulator.reset()
    fd = os.open(emulator.ports["hv_serial"], os.O_RDWR | os.O_NOCTTY)
    try:
        tty.setraw(fd)
        termios.tcflush(fd, termios.TCIFLUSH)

        def ask(line: str) -> str:
            os.write(fd, (line + "\r\n").encode())
            buf = b""
            while not buf.endswith(b"\r\n"):
                buf += os.read(fd, 256)
            return buf.decode().strip()

        assert ask("ID?") == "APT-DAQ,HV-SIM,0,1.0"
        assert ask("V 250") == "OK"
        assert float(ask("V?")) == 250.0
        assert ask("V 99999").startswith("ERR 3 ")
        assert ask("XYZ").startswith("ERR 1 ")
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- whole runs
def test_cli_run_through_the_emulator(emulator, tmp_path):
    """`apt-daq run hil-nmc811-cr.yaml --ports-file F`: scpi laser, serial HV, stream DLD."""
    emulator.reset()
    out = tmp_path / "cli.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "apt_daq.cli", "run", str(HIL_RUN), "--ports-file",
         str(emulator.ports_file), "-o", str(out), "--ions", "8000", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "done" in proc.stdout
    log = assert_safe(emulator)
    raw = assert_kept(out, log, None)
    with RunReader(out) as r:
        assert r.meta["state"] == "done"
        assert r.count("hits") >= 8000
        assert len(raw) == r.count("raw")
    # the wires really carried it: the serial line protocol and SCPI
    cmds = log["commands"]
    assert "ID?" in cmds["hv_serial"] and "O 1" in cmds["hv_serial"]
    assert "OUTP ON" in cmds["laser"] and "OUTP OFF" in cmds["laser"]


def test_hv_over_scpi_recovers_a_dropped_link(emulator, tmp_path):
    """Drop: the SCPI HV driver reconnects and re-reads the state, or names the lost link
    (a setting in flight), or refuses the engine's next step: after a resync the driver counts
    the ramp from the reconnect (it cannot know when the setpoint was sent), so a feedback
    step right after it is a SafetyError. Each ends safe."""
    emulator.reset()
    emulator.fault(f"drop target=hv at_pulse={FAULT_PULSE}")
    _s, res, err = hil_run(emulator, tmp_path, {"drivers.hv.backend": "scpi"})
    log = assert_safe(emulator)
    assert "drop" in log["state"]["faults_fired"]
    assert err is None or isinstance(err, ConnectionLost | SafetyError), err
    assert log["commands"]["hv"].count("*IDN?") >= 2  # the driver came back
    assert_kept(tmp_path / "run.h5", log, FAULT_PULSE)
    if err is None:
        assert res.state == State.DONE


@pytest.mark.parametrize(("spec", "overrides", "error", "text"), [
    ("drop target=dld", {}, ConnectionLost, "closed the connection"),
    ("garbage target=dld", {}, BadReply, "corrupt stream"),
    ("stall target=laser duration_s=3", {"drivers.laser.retries": 0,
                                         "drivers.laser.timeout_s": 0.3}, DriverTimeout,
     "no reply"),
    ("garbage target=laser", {"drivers.laser.retries": 0}, BadReply, "unexpected reply"),
    ("slow target=laser delay_s=0.6 duration_s=3", {"drivers.laser.retries": 0,
                                                    "drivers.laser.timeout_s": 0.3},
     DriverTimeout, "no reply"),
    ("reboot duration_s=0.5", {}, DriverError, ""),
], ids=["drop", "garbage-dld", "stall", "garbage-scpi", "slow", "reboot"])
def test_wire_fault_named_error_safe_end_data_kept(emulator, tmp_path, spec, overrides, error,
                                                   text):
    emulator.reset()
    emulator.fault(f"{spec} at_pulse={FAULT_PULSE}")
    s, _res, err = hil_run(emulator, tmp_path, overrides)
    assert isinstance(err, error), f"expected {error.__name__}, got {err!r}"
    assert re.search(text, str(err)), str(err)
    assert s.state == State.FAILED
    log = assert_safe(emulator)
    assert spec.split()[0] in log["state"]["faults_fired"]
    assert_kept(tmp_path / "run.h5", log, FAULT_PULSE)
    with RunReader(tmp_path / "run.h5") as r:
        assert r.meta["state"] == "failed"
        assert type(err).__name__ in r.meta["end_reason"]


def test_slow_replies_within_timeout_are_tolerated(emulator, tmp_path):
    emulator.reset()
    emulator.fault(f"slow target=all delay_s=0.02 duration_s=1 at_pulse={FAULT_PULSE}")
    _s, res, err = hil_run(emulator, tmp_path)
    assert err is None and res.state == State.DONE, err
    assert_safe(emulator)


def test_hv_trip_ends_the_run_safe(emulator, tmp_path):
    emulator.reset()
    emulator.fault(f"hv_trip at_pulse={FAULT_PULSE}")
    _s, res, err = hil_run(emulator, tmp_path)
    assert err is None and res.state == State.FAILED
    assert "tripped" in res.reason
    log = assert_safe(emulator)
    assert any(r[1] == "trip" and r[2] == 1.0 for r in log["hv"])
    assert_kept(tmp_path / "run.h5", log, FAULT_PULSE)


@pytest.mark.parametrize(("spec", "why"), [("interlock duration_s=0.6", "laser interlock"),
                                           ("overflow duration_s=0.6", "detector overflow")])
def test_recoverable_fault_pauses_and_resumes(emulator, tmp_path, spec, why):
    emulator.reset()
    emulator.fault(f"{spec} at_pulse={FAULT_PULSE}")
    s, res, err = hil_run(emulator, tmp_path)
    assert err is None and res.state == State.DONE, err
    states = [(t[1], t[2]) for t in s.transitions]
    assert ("paused", why) in states, states
    assert ("acquiring", f"resumed after {why}") in states, states
    log = assert_safe(emulator)
    with RunReader(tmp_path / "run.h5") as r:
        raw = r.read("raw")
        assert r.count("hits") >= BASE["run.stop.ions"]
    # data on both sides of the pause
    assert raw["pulse"].min() < FAULT_PULSE < raw["pulse"].max()
    if "overflow" in spec:
        dropped = sum(1 for b in log["blocks"] if b[4] == 0 and b[3] > 0)
        assert dropped >= 1  # the block the front end dropped is not in the store


def test_fault_from_the_command_line(tmp_path):
    """--fault on the command line schedules it; ports file written, SIGTERM ends cleanly."""
    emu = EmulatorProcess(tmp_path, args=("--fault", "interlock:at_s=0,duration_s=30"))
    try:
        host, port = emu.ports["laser"].split("::")[1:3]
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            f = sock.makefile("rwb")
            for _ in range(50):
                if _ask(f, "SYST:INTL?") == "1":
                    break
            assert _ask(f, "SYST:INTL?") == "1"
            _ask(f, "OUTP ON")
            assert _ask(f, "SYST:ERR?").startswith("-300,")
    finally:
        emu.stop()
    assert emu.proc.returncode == 0
    assert not emu.ports_file.exists()
    assert json.loads(emu.log_file.read_text().splitlines()[0])["dld"].startswith("tcp://")


ENSEMBLE_SEEDS = 16


def _in_process_fractions(tmp_path: Path, seed: int, ions: int) -> dict[str, float]:
    """The element fractions of one in-process simulated run of the HIL run file."""
    from apt_daq.analysis.report import analyze_run

    rf = load_run(HIL_RUN, {**BASE, "run.seed": seed, "run.stop.ions": ions,
                            "drivers.laser": {"backend": "sim"},
                            "drivers.hv": {"backend": "sim", "limit_v": 12000,
                                           "ramp_v_per_s": 200},
                            "drivers.dld": {"backend": "sim"}})
    out = tmp_path / f"sim-{seed}.h5"
    assert Session(rf, out=out, overwrite=True).run().state == State.DONE
    return {el: v["fraction"] for el, v in analyze_run(out)["composition"].items()
            if v["fraction"]}


def test_hil_statistics_match_the_in_process_run(emulator, tmp_path):
    """The composition through the wires is drawn from the same distribution as the
    in-process simulated runs of the same run file. The reference spread is measured, not
    assumed: 16 in-process seeds. Binomial errors are not the reference, because Li leaves
    in correlated bursts (the FDA signal): at 20 000 ions its seed-to-seed sd is 0.014
    against a binomial 0.005, and one HIL seed's Li has read 0.216-0.289 from run to run
    (the feedback through the wires lags by up to a block, so the voltage paths differ)."""
    from apt_daq.analysis.report import analyze_run

    ions = 20_000
    emulator.reset(seed=7)
    _, res, err = hil_run(emulator, tmp_path, {"run.seed": 7, "run.stop.ions": ions})
    assert err is None and res.state == State.DONE, err
    hil = analyze_run(tmp_path / "run.h5")["composition"]
    ens = [_in_process_fractions(tmp_path, s, ions) for s in range(ENSEMBLE_SEEDS)]
    checked = 0
    for el, va in hil.items():
        ref = np.array([e.get(el, 0.0) for e in ens])
        if ref.mean() < 0.02:
            continue
        # the new draw against the ensemble: sd of a difference, mean estimated from n seeds
        sd = ref.std(ddof=1) * np.sqrt(1 + 1 / len(ref))
        assert abs((va["fraction"] or 0.0) - ref.mean()) < 5 * sd, (el, va, ref.round(4))
        checked += 1
    assert checked >= 4

"""The instruments' link watchdog, judged from the outside over loopback sockets: armed with
``SYST:COMM:WATC <s>`` (line protocol ``W <s>``), a wire that hears no command line for that
long turns HV output / laser emission off by itself, so a controller that is killed (SIGKILL,
a crash, a pulled cable) cannot leave them on; a wire that keeps talking is left alone, and
a disarmed one never fires (docs/protocols.md, "Link watchdog")."""

from __future__ import annotations

import time

import pytest
from test_emulator_hardening import Client


def hv_on(c: Client) -> None:
    c.send(b"SOUR:VOLT 500\n")
    c.send(b"OUTP ON\n")
    assert c.ask("OUTP?") == "1"


def wait_until(cond, timeout_s: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def test_a_silent_controller_leaves_hv_and_laser_off(fresh):
    hv, laser = Client(fresh.ports["hv"]), Client(fresh.ports["laser"])
    hv.send(b"SYST:COMM:WATC 0.5\n")
    assert hv.ask("SYST:COMM:WATC?") == "0.500"
    assert hv.ask("SYST:ERR?") == '0,"No error"'
    laser.send(b"SYSTEM:COMMUNICATE:WATCHDOG 0.5\n")  # the long form
    hv_on(hv)
    laser.send(b"OUTP ON\n")
    assert laser.ask("OUTP?") == "1"
    t = wait_until(lambda: not fresh.leap.hv.output_on and not fresh.leap.laser.emission_on,
                   5.0)
    assert t is not None, "the watchdog never turned the outputs off"
    assert t < 0.5 + 1.0, f"off {t:.2f} s after the last command (watchdog 0.5 s)"
    assert hv.ask("OUTP?") == "0" and laser.ask("OUTP?") == "0"
    events = [what for _, what in fresh.events]
    assert any("hv: watchdog" in e for e in events), events
    assert any("laser: watchdog" in e for e in events), events
    assert any(r[1] == "watchdog" for r in fresh.leap.hv.received)


def test_the_watchdog_reports_why_in_the_error_queue(fresh):
    hv = Client(fresh.ports["hv"])
    hv.send(b"SYST:COMM:WATC 0.3\n")
    hv_on(hv)
    assert wait_until(lambda: not fresh.leap.hv.output_on, 5.0) is not None
    err = hv.ask("SYST:ERR?")
    assert err.startswith("-300,") and "watchdog" in err, err
    # the output stays off; switching it on again takes a command, which re-arms the timer
    hv_on(hv)
    assert fresh.leap.hv.output_on


def test_a_talking_controller_keeps_its_output(fresh):
    hv = Client(fresh.ports["hv"])
    hv.send(b"SYST:COMM:WATC 0.5\n")
    hv_on(hv)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.0:  # four watchdog periods, a query every 0.15 s
        assert hv.ask("MEAS:VOLT?")
        assert fresh.leap.hv.output_on, "the watchdog fired on a controller that talks"
        time.sleep(0.15)


def test_a_disarmed_watchdog_never_fires(fresh):
    hv = Client(fresh.ports["hv"])
    hv.send(b"SYST:COMM:WATC 0.3\n")
    hv.send(b"SYST:COMM:WATC 0\n")
    hv_on(hv)
    time.sleep(1.0)
    assert fresh.leap.hv.output_on
    assert hv.ask("SYST:COMM:WATC?") == "0.000"


@pytest.mark.parametrize("bad", ["-1", "1e9", "nan"])
def test_a_watchdog_out_of_range_is_refused(fresh, bad):
    hv = Client(fresh.ports["hv"])
    hv.send(f"SYST:COMM:WATC {bad}\n".encode())
    assert hv.ask("SYST:ERR?").startswith(("-222,", "-104,", "-113,", "-108,"))
    assert hv.ask("SYST:COMM:WATC?") == "0.000"


def test_the_serial_line_protocol_has_the_watchdog_too(fresh):
    import os

    path = fresh.ports.get("hv_serial")
    if path is None:
        pytest.skip("the emulator serves no pty here")
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        def ask(line: str) -> str:
            os.write(fd, (line + "\r\n").encode())
            buf = b""
            t0 = time.monotonic()
            while not buf.endswith(b"\r\n") and time.monotonic() - t0 < 3:
                buf += os.read(fd, 256)
            return buf.decode().strip()

        assert ask("W 0.4") == "OK"
        assert ask("W?") == "0.400"
        assert ask("V 300") == "OK" and ask("O 1") == "OK"
        assert wait_until(lambda: not fresh.leap.hv.output_on, 5.0) is not None
        assert ask("O?") == "0"
        err = ask("E?")
        assert err.startswith("5 ") and "watchdog" in err, err
        assert ask("W -2").startswith("ERR 3")
    finally:
        os.close(fd)

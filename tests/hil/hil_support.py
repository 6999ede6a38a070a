"""Helpers of the HIL tests: the emulator as a separate process (as a lab runs it), reached
only over its wires and its control port; always killed at the end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from apt_daq.io.store import RunReader

ROOT = Path(__file__).resolve().parents[2]
HIL_RUN = ROOT / "configs" / "runs" / "hil-nmc811-cr.yaml"
SPEED = 20.0  # instrument s per wall s: 0.1 s wall per 200k-pulse readout block
BLOCK_PULSES = 200_000
START_TIMEOUT_S = 180.0  # a cold numba cache compiles the physics kernels first


class EmulatorProcess:
    """``python -m apt_daq.sim.emulator`` in a subprocess, with its ports and control port."""

    def __init__(self, tmp: Path, speed: float = SPEED, args: tuple[str, ...] = ()):
        self.ports_file = tmp / "ports.json"
        self.log_file = tmp / "emulator.log"
        cmd = [sys.executable, "-m", "apt_daq.sim.emulator", str(HIL_RUN), "--ports-file",
               str(self.ports_file), "--speed", str(speed), "--block-pulses",
               str(BLOCK_PULSES), *args]
        self._log = open(self.log_file, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (self.ports_file.exists() and self.ports_file.stat().st_size):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"emulator did not start: {self.log_file.read_text()}")
            time.sleep(0.1)
        self.ports: dict[str, str] = json.loads(self.ports_file.read_text())
        host, port = self.ports["control"].removeprefix("tcp://").rsplit(":", 1)
        self._ctl = socket.create_connection((host, int(port)), timeout=10)
        self._ctl_file = self._ctl.makefile("rwb")

    def control(self, line: str) -> Any:
        self._ctl_file.write((line + "\n").encode())
        self._ctl_file.flush()
        return json.loads(self._ctl_file.readline())

    def fault(self, spec: str) -> None:
        reply = self.control(f"fault {spec}")
        assert reply["ok"], reply

    def log(self) -> dict[str, Any]:
        return self.control("log")

    def reset(self, seed: int = 1) -> None:
        assert self.control(f"reset seed={seed}")["ok"]

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it has not ended in 10 s."""
        try:
            if getattr(self, "_ctl", None) is not None:
                self._ctl.close()
        finally:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            self._log.close()


def start_run(emulator: EmulatorProcess, out: Path) -> subprocess.Popen:
    """``apt-daq run`` of the HIL config driving ``emulator`` over its wires, writing ``out``;
    returned once the file holds more than 3000 hits (mid-acquisition). Fails with the run's
    stderr if it ends first, or after 120 s without them (the run killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "apt_daq.cli", "run", str(HIL_RUN), "--ports-file",
         str(emulator.ports_file), "-o", str(out), "--ions", "100000000", "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        try:
            with RunReader(out) as r:
                if r.count("hits") > 3000:
                    return proc
        except Exception:  # not there yet
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("no hits in time")


def final_state(log: dict[str, Any]) -> tuple[bool, bool]:
    """(HV output on, laser emission on) from the emulator's device models' ``received`` logs:
    the last output/emission setting, where a trip, a reset (reboot) or an open interlock
    also switches off."""
    hv_on = laser_on = False
    for _, what, value in log["hv"]:
        if what == "output":
            hv_on = bool(value)
        elif what == "reset" or (what == "trip" and value):
            hv_on = False
    for _, what, value in log["laser"]:
        if what == "emission":
            laser_on = bool(value)
        elif what == "reset" or (what == "interlock" and value):
            laser_on = False
    return hv_on, laser_on

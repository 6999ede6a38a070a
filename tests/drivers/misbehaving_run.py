"""`apt-daq run` against a misbehaving fake instrument (tests/drivers/fake_hv.py, fake_laser.py),
judged as the HV and laser CLI tests judge it: the fault happened, no traceback, exit 2 with
one error line naming the instrument, and "off" reached the instrument after the fault.

A module of its own, imported by this name beside the fakes (not from a conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_against(fake, config_text: str, tmp_path: Path,
                timeout_s: float) -> subprocess.CompletedProcess[str]:
    """``apt-daq run`` of ``config_text`` (written to tmp_path/run.yaml) with the fake serving;
    the fake is closed after it. Checks that the fault happened and nothing raised a
    traceback."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(config_text)
    try:
        proc = subprocess.run([sys.executable, "-m", "apt_daq.cli", "run", str(cfg), "-o",
                               str(tmp_path / "r.h5"), "--quiet"], capture_output=True,
                              text=True, timeout=timeout_s, cwd=ROOT)
    finally:
        fake.close()
    assert fake.bad, "the fault never happened"
    assert "Traceback" not in proc.stderr
    return proc


def assert_failed_naming(proc: subprocess.CompletedProcess[str], instrument: str) -> None:
    """Exit 2, and the first ``error:`` line is about ``instrument`` (e.g. "laser RESOURCE")."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors and errors[0].startswith(f"error: {instrument}"), proc.stderr


def assert_off_after_fault(fake, still_on: str) -> None:
    """An "off" command reached the instrument after the fault, and it is off at the end
    (``still_on``: the message if it is not)."""
    after = fake.received[fake.bad_since:]
    assert any(fake.is_off(line) for _, line, _ in after), after[-10:]
    assert not fake.on, still_on

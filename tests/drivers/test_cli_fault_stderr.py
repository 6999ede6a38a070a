"""A run whose HV supply goes silent or answers garbage mid-run, through `apt-daq run`: the
one error line leads with "NOT verified off" (tests/drivers/test_session_control_races.py), and
stderr no longer repeats it in four log lines before it (two ERROR records of the failed safe
off, two WARNINGs of its read-back; an outside audit counted 4-7 lines per driver fault). The
log records are held by the CLI and printed only when no error line ends the command."""

from __future__ import annotations

import logging

import pytest
from apt_daq.drivers.base import WallClock
from fake_hv import FakeHv
from misbehaving_run import ROOT, assert_failed_naming, run_against
from test_readback_lies_dec5 import CLI_HV


@pytest.mark.parametrize("mode", ["silent", "garbage"])
def test_an_unverified_off_is_one_error_line_not_five(tmp_path, mode: str) -> None:
    fake = FakeHv(mode, WallClock(), after_setpoints=8)
    proc = run_against(fake, CLI_HV.format(root=ROOT, resource=fake.resource), tmp_path,
                       timeout_s=120)
    assert_failed_naming(proc, f"HV supply {fake.resource}")
    lines = proc.stderr.splitlines()
    assert "NOT verified off" in next(ln for ln in lines if ln.startswith("error:"))
    chatter = [ln for ln in lines if ln.startswith(("ERROR", "WARNING apt_daq.drivers",
                                                    "WARNING apt_daq.run"))]
    assert chatter == [], proc.stderr
    assert len(lines) <= 2, proc.stderr  # the error line, and where the failed run is kept


def test_held_safe_off_records_are_printed_when_no_error_line_says_them(capsys) -> None:
    from apt_daq.drivers.errors import SAFE_OFF_RECORD

    from apt_daq.cli import _StderrHandler

    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("apt_daq.test_held")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.error("safe off after the fault failed: %s", "gone", extra=SAFE_OFF_RECORD)
        log.warning("plain")
        assert capsys.readouterr().err == "WARNING apt_daq.test_held: plain\n"
        handler.let_go(print_them=True)  # e.g. an abort or a signal: no error line
        assert "safe off after the fault failed: gone" in capsys.readouterr().err
        log.error("safe off after the fault failed: %s", "again", extra=SAFE_OFF_RECORD)
        handler.let_go(print_them=False)  # an error line said it
        assert capsys.readouterr().err == ""
    finally:
        log.removeHandler(handler)


def test_a_second_command_in_one_process_lets_go_of_what_it_held(capsys, monkeypatch) -> None:
    """Two commands in one process (a notebook, a test): the second finds the first one's
    handler installed (logging.basicConfig then does nothing) and must let go of that one; it
    let go of a new, uninstalled handler, so the installed one held the records for ever."""
    from apt_daq.drivers.errors import SAFE_OFF_RECORD

    from apt_daq import cli

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as outside pytest: no handler yet
    log = logging.getLogger("apt_daq.test_second")

    def command(parser, args) -> int:  # ends without an error line: the held record prints
        log.error("safe off after the fault failed: %s", "link gone", extra=SAFE_OFF_RECORD)
        return 0

    monkeypatch.setattr(cli, "_run_command", command)
    try:
        for _ in range(2):
            assert cli._main(["info", "x"]) == 0
            assert "safe off after the fault failed: link gone" in capsys.readouterr().err
    finally:
        for h in root.handlers:
            h.close()

"""The CLI never surprises: one line per error whatever the terminal, a quiet exit on a closed
pipe, argument errors that name the argument, a readable ``info``, a visible PAUSED state, a
warning when ``--ions`` cuts a schedule short, and a notice while numba compiles."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "configs" / "runs" / "nmc811-cr-5pj.yaml"
SCHEDULE = ROOT / "configs" / "runs" / "nmc811-cr-5-20pj.yaml"


def cli(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    """``apt-daq ARGS`` with stdout and stderr pipes (not a terminal) and no COLUMNS hint."""
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run([sys.executable, "-m", "apt_daq.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env={**base, **(env or {})}, timeout=300, **kw)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A short simulated run written by the engine (warm kernels: a few seconds)."""
    from apt_daq.run import Session

    out = tmp_path_factory.mktemp("run") / "small.h5"
    Session.from_yaml(RUN, {"run.stop.ions": 3000}, out=out, handle_signals=False).run()
    return out


# ------------------------------------------------------------------ one line per error
def test_an_error_is_one_line_when_stderr_is_a_pipe(tmp_path: Path) -> None:
    deep = tmp_path / "a-folder-with-a-rather-long-name" / "and-another-one-below-it"
    deep.mkdir(parents=True)
    p = deep / "run.yaml"
    p.write_text(RUN.read_text().replace("../", f"{RUN.parent.parent}/")
                 .replace("  seed: 1", "  a_misspelt_key_with_a_long_name_that_runs_on: 1"))
    proc = cli("config", "check", str(p))
    assert proc.returncode == 2
    line = next(i for i, s in enumerate(p.read_text().splitlines(), 1) if "a_misspelt" in s)
    want = (f"error: {p}:{line} run.a_misspelt_key_with_a_long_name_that_runs_on: unknown key "
            "(misspelt?)")
    assert len(want) > 80
    assert proc.stderr.splitlines() == [want], proc.stderr


def test_a_closed_pipe_ends_quietly_with_141() -> None:
    """`apt-daq config schema | head -1`: the reader is gone before the first write."""
    proc = subprocess.Popen([sys.executable, "-m", "apt_daq.cli", "config", "schema"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()  # before the interpreter has even started: every write fails
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == "", err


def test_info_json_into_a_closed_pipe_ends_quietly(small_run: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "apt_daq.cli", "info", "--json",
                             str(small_run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "BrokenPipeError" not in err and "Traceback" not in err, err


# ------------------------------------------------------------------ argument errors
@pytest.mark.parametrize("args, name", [(["--ions", "-5"], "--ions"), (["--ions", "0"], "--ions"),
                                        (["--seed", "-1"], "--seed")])
def test_a_bad_argument_is_blamed_on_the_argument(tmp_path: Path, args, name) -> None:
    proc = cli("run", str(RUN), "-o", str(tmp_path / "r.h5"), "--quiet", *args)
    assert proc.returncode == 2
    assert f"argument {name}: " in proc.stderr, proc.stderr
    assert "yaml" not in proc.stderr.split("error:", 1)[-1], proc.stderr  # not the YAML line
    assert not (tmp_path / "r.h5").exists()


# ------------------------------------------------------------------ --ions and a schedule
def test_ions_cutting_a_schedule_short_is_one_warning_line(tmp_path: Path) -> None:
    proc = cli("run", str(SCHEDULE), "-o", str(tmp_path / "r.h5"), "--quiet", "--ions", "2000")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "warning: --ions run.stop.ions: 2000 ends the run in step 0 (5 pJ, after 2000 of its "
        "200000 ions): steps 1-3 (10 pJ, 15 pJ, 20 pJ) will not run"], proc.stderr


def test_ions_past_the_schedule_warns_nothing() -> None:
    from apt_daq.config import load_run, schedule_cut_short

    assert schedule_cut_short(load_run(SCHEDULE).run) is None  # stop.ions 800000 = 4 x 200000
    assert schedule_cut_short(load_run(SCHEDULE, {"run.stop.ions": 10**7}).run) is None
    assert "step 3 (20 pJ) will not run" in schedule_cut_short(
        load_run(SCHEDULE, {"run.stop.ions": 600_000}).run)


# ------------------------------------------------------------------ info
def test_info_is_readable(small_run: Path) -> None:
    proc = cli("info", str(small_run))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "{" not in text and "[" not in text, text  # no Python reprs
    assert not re.search(r"\d\.\d{4,}", text), text  # no float noise (809.9999999999998)
    assert re.search(r"instrument time:\s+(\d+ h )?(\d+ min )?\d+ s\b", text), text
    for name, legend in [("raw", "DLD records"), ("hits", "detected ions"),
                         ("lost", "left no hit"), ("log", "readout block")]:
        assert re.search(rf"^\s+{name}\s+\d+\s+.*{legend}", text, re.M), (name, text)
    assert all(len(ln) <= 100 for ln in text.splitlines()), text


def test_info_json_is_clean(small_run: Path) -> None:
    proc = cli("info", "--json", str(small_run))
    info = json.loads(proc.stdout)
    assert info["state"] == "done"
    assert all(isinstance(v, int) for v in info["counts"].values())
    assert info["counts"]["hits"] >= 3000
    t = info["instrument_time_s"]
    assert isinstance(t, float | int) and t == round(t, 3)
    assert all(v == round(v, 1) for v in info["voltage_v"])
    assert isinstance(info["pulses"], int)


# ------------------------------------------------------------------ pause and abort
class _FakeSession:
    def __init__(self) -> None:
        from apt_daq.run import State

        self.state = State.ACQUIRING
        self.transitions: list[tuple[float, str, str]] = []


def _progress(session, clock):
    import io

    from rich.console import Console

    from apt_daq.config import load_run
    from apt_daq.run import _Progress

    r = load_run(RUN, {"run.stop.ions": 10_000}).run
    con = Console(file=io.StringIO(), force_terminal=True, width=160)
    return _Progress(session, r, console=con, clock=clock, enter_resumes=True)


def test_progress_shows_paused_with_its_keys_and_no_eta_while_paused() -> None:
    from apt_daq.run import State

    now = [0.0]
    s = _FakeSession()
    p = _progress(s, lambda: now[0])
    try:
        for t, ions in [(0.0, 0), (1.0, 1000), (2.0, 2000)]:
            now[0] = t
            p.update(ions, 0.005, 3000.0, 5.0, 0)
        assert p.eta_s() == pytest.approx(8.0)  # 8000 ions to go at 1000 ions/s
        s.state = State.PAUSED
        s.transitions.append((2.0, "paused", "pause requested"))
        now[0] = 500.0
        assert p.eta_s() is None
        shown = p.marker()
        assert "PAUSED" in shown and "Enter" in shown and "Ctrl-C" in shown, shown
        s.state = State.ACQUIRING
        s.transitions.append((2.0, "acquiring", "resumed after pause requested"))
        for t, ions in [(501.0, 3000), (502.0, 4000)]:
            now[0] = t
            p.update(ions, 0.005, 3000.0, 5.0, 0)
        # the pause counts for nothing: still 1000 ions/s, not 4000 ions in 502 s
        assert p.eta_s() == pytest.approx(6.0)
        assert p.marker() == ""
    finally:
        p.close()


def _read_all(fd: int, sink: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every writer of the terminal has gone
            return
        if not chunk:
            return
        sink.append(chunk)


def _screen_lines(raw: bytes) -> list[str]:
    """The lines a terminal shows at the end: text written at the cursor, carriage return,
    line feed, cursor up (``ESC[nA``) and erase line (``ESC[2K``, ``ESC[K``) as a terminal
    does them (a progress bar redraws and clears itself with these); other escapes ignored."""
    screen: list[list[str]] = [[]]
    row = col = 0
    for tok in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r|\n|[^\x1b\r\n]",
                          raw.decode(errors="replace")):
        if tok == "\r":
            col = 0
        elif tok == "\n":
            row, col = row + 1, 0
            while len(screen) <= row:
                screen.append([])
        elif tok.startswith("\x1b["):
            arg, op = tok[2:-1], tok[-1]
            if op == "A":
                row = max(0, row - int(arg or 1))
            elif op == "K":
                screen[row] = [] if arg == "2" else screen[row][:col]
        elif not tok.startswith("\x1b"):
            line = screen[row]
            line.extend(" " * (col - len(line)))
            line[col:col + 1] = [tok]
            col += 1
    return ["".join(ln).rstrip() for ln in screen]


class _TerminalRun:
    """``apt-daq run`` on a pseudo-terminal (stdin, stdout and stderr), as an operator runs it;
    its screen output collected."""

    def __init__(self, out: Path) -> None:
        import fcntl
        import pty
        import struct
        import termios
        import threading

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        self.out = out
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "apt_daq.cli", "run", str(RUN), "-o", str(out), "--ions",
             "100000000"], stdin=slave, stdout=slave, stderr=slave, cwd=ROOT,
            env={**env, "TERM": "xterm", "PYTHONUNBUFFERED": "1"})
        os.close(slave)
        self.got: list[bytes] = []
        self.reader = threading.Thread(target=_read_all, args=(self.master, self.got),
                                       daemon=True)
        self.reader.start()

    def lines(self, since: int = 0) -> list[str]:
        return _screen_lines(b"".join(self.got[since:]))

    def wait_for(self, pred, what: str, timeout_s: float = 240.0) -> None:
        import time

        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if pred():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode} before {what}: "
                                     + "\n".join(self.lines())[-2000:])
            time.sleep(0.1)
        raise AssertionError(f"no {what}: " + "\n".join(self.lines())[-2000:])

    def transitions(self) -> list:
        from apt_daq.io.store import RunReader

        try:
            with RunReader(self.out) as r:
                return list(r.meta.get("transitions") or [])
        except Exception:  # not created yet, or between two of the writer's flushes
            return []

    def end(self, timeout_s: float = 60.0) -> int:
        """The exit code, once the process has ended and its screen output is all read."""
        code = self.proc.wait(timeout=timeout_s)
        self.reader.join(10)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)
        os.close(self.master)


@pytest.fixture
def terminal_run(tmp_path):
    run = _TerminalRun(tmp_path / "r.h5")
    yield run
    run.close()


def _pause(run: _TerminalRun) -> str:
    """Ctrl-C once: the screen shows PAUSED; returns that line."""
    import signal

    run.wait_for(lambda: any("rate" in ln and "pJ" in ln for ln in run.lines()), "progress bar")
    n0 = len(run.got)
    run.proc.send_signal(signal.SIGINT)
    run.wait_for(lambda: any("PAUSED" in ln for ln in run.lines(n0)), "PAUSED")
    return next(ln for ln in run.lines(n0) if "PAUSED" in ln)


def test_ctrl_c_on_a_terminal_shows_paused_and_enter_resumes(terminal_run) -> None:
    import signal

    marker = _pause(terminal_run)
    assert "Enter resumes" in marker and "Ctrl-C" in marker, marker
    assert "ETA" not in marker, marker
    n0 = len(terminal_run.got)
    os.write(terminal_run.master, b"\n")
    terminal_run.wait_for(lambda: any("resumed" in t[2] for t in terminal_run.transitions()),
                          "resume on Enter", 60)
    terminal_run.wait_for(lambda: any("ETA" in ln for ln in terminal_run.lines(n0)),
                          "the bar back", 60)
    terminal_run.proc.send_signal(signal.SIGTERM)
    assert terminal_run.end() == 143
    lines = terminal_run.lines()
    assert [ln for ln in lines if "SIGTERM" in ln] == ["aborted: signal SIGTERM"], lines[-20:]


def test_ctrl_c_twice_on_a_terminal_ends_with_one_clean_line(terminal_run) -> None:
    """The bar is cleared before the final line; the reason is said once."""
    import signal

    _pause(terminal_run)
    terminal_run.proc.send_signal(signal.SIGINT)
    assert terminal_run.end() == 130
    lines = terminal_run.lines()
    text = "\n".join(lines)
    assert "Traceback" not in text, text[-3000:]
    assert "aborted: aborted" not in text, text[-3000:]
    final = [ln for ln in lines if "while paused" in ln]
    assert final == ["aborted: signal SIGINT while paused (pause requested)"], text[-3000:]


# ------------------------------------------------------------------ numba's first compile
def test_a_cold_kernel_cache_is_announced_before_the_run(tmp_path: Path) -> None:
    """An empty numba cache: `apt-daq run` says it is compiling before it goes quiet."""
    import time

    out = tmp_path / "r.h5"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "apt_daq.cli", "run", str(RUN), "-o", str(out), "--ions", "2000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
        env={**env, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"})
    try:
        t0 = time.time()
        first = proc.stderr.readline().decode()
        assert first.strip() == "compiling kernels (first run only, ~45 s)...", first
        assert time.time() - t0 < 30  # said at once, not after the compile
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_warmup_compiles_what_a_run_needs(tmp_path: Path) -> None:
    """`apt-daq warmup` (make install runs it) on an empty cache: afterwards a run is quiet."""
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    warm = cli("warmup", env=env)
    assert warm.returncode == 0, warm.stderr
    assert "compiling kernels" in warm.stderr and "kernels compiled" in warm.stdout, warm
    run = cli("run", str(RUN), "-o", str(tmp_path / "r.h5"), "--ions", "2000", env=env)
    assert run.returncode == 0, run.stderr
    assert "compiling" not in run.stderr, run.stderr
    again = cli("warmup", env=env)
    assert "already compiled" in again.stdout, again

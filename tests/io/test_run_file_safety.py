"""Run files are never harmed, and say how a run ended. Judged from outside: the bytes on disk,
the exit codes and stderr of `apt-daq` subprocesses (docs/formats.md, "The HDF5 run store").

(a) --overwrite with a run that cannot start leaves the old file byte-identical;
(b) a second writer on the same -o fails at once with one line, the first finishes;
(c) disk full (RLIMIT_FSIZE) is one error line, and a readable file that says so;
(d) a SIGKILLed run reads `interrupted`, and its lock does not block the next run;
(e) `.part` files of a killed export/import are removed, a live process's are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from apt_daq.commands.info import summarize
from apt_daq.errors import DataFileError
from apt_daq.io.store import RunReader

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs/runs/nmc811-cr-5pj.yaml"
HIL = ROOT / "configs/runs/hil-nmc811-cr.yaml"
# wide enough that rich never wraps an error line
ENV = {**os.environ, "COLUMNS": "400", "MPLBACKEND": "Agg"}

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only (flock, rlimit)")


def _cmd(*args: object, pre: str = "") -> list[str]:
    """``apt-daq ARGS`` as `python -c` (``pre`` runs first: limits, signal dispositions)."""
    code = f"import sys\n{pre}\nfrom apt_daq.cli import main\nsys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *map(str, args)]


def _apt_daq(*args: object, pre: str = "", timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(*args, pre=pre), capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _hits(path: Path) -> int:
    """Hits on disk now (0 while the file is being created)."""
    try:
        with RunReader(path) as r:
            return r.count("hits")
    except Exception:  # caught between two flushes: not yet
        return 0


def _wait_for(cond, timeout_s: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------------ (a) failed start
def test_overwrite_by_a_run_that_cannot_start_leaves_the_old_file(run: Path, tmp_path: Path):
    """`--ports-file` naming an emulator that is not running: the drivers cannot connect. The
    old run (a finished one) stays byte for byte, and nothing is left beside it."""
    port = _closed_port()
    ports = tmp_path / "ports.json"
    ports.write_text(json.dumps({"laser": f"TCPIP::127.0.0.1::{port}::SOCKET",
                                 "hv": f"TCPIP::127.0.0.1::{port}::SOCKET",
                                 "hv_serial": str(tmp_path / "no-such-pty"),
                                 "dld": f"tcp://127.0.0.1:{port}"}))
    before, listing = _sha(run), sorted(os.listdir(tmp_path))
    p = _apt_daq("run", HIL, "--ports-file", ports, "-o", run, "--overwrite", "--quiet")
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and len(_error_lines(p.stderr)) >= 1
    assert _sha(run) == before
    assert sorted(os.listdir(tmp_path)) == listing  # no temporary file, no lock file
    with RunReader(run) as r:
        assert r.meta["state"] == "done"


# ------------------------------------------------------------------------ (b) two writers
def test_second_writer_on_one_file_fails_at_once_and_the_first_finishes(tmp_path: Path):
    """The first run is paused (Ctrl-C once) so it certainly holds the file while the second
    starts; Enter on its terminal resumes it."""
    out = tmp_path / "two.h5"
    master, slave = pty.openpty()
    with open(tmp_path / "first.err", "w") as err:
        first = subprocess.Popen(_cmd("run", CONFIG, "-o", out, "--overwrite", "--quiet",
                                      "--ions", 100_000),
                                 stdin=slave, stdout=subprocess.DEVNULL, stderr=err, env=ENV)
    os.close(slave)
    try:
        _wait_for(lambda: out.exists() or first.poll() is not None, 240, "the first run")
        first.send_signal(signal.SIGINT)  # pause at the next block: the run holds the file
        second = _apt_daq("run", CONFIG, "-o", out, "--overwrite", "--quiet", "--ions", 2000)
        t0 = time.monotonic()
        while first.poll() is None and time.monotonic() - t0 < 120:
            os.write(master, b"\n")  # resume (repeated: the pause may not have begun)
            time.sleep(0.3)
        first.wait(timeout=5)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        os.close(master)
    first_err = (tmp_path / "first.err").read_text()
    assert second.returncode == 2, second.stderr
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
    assert "another run is writing it" in lines[0] and str(out) in lines[0]
    assert f"pid {first.pid}" in lines[0]
    assert first.returncode == 0, first_err
    with RunReader(out) as r:
        assert r.meta["state"] == "done"
        assert r.count("hits") >= 100_000
    assert sorted(os.listdir(tmp_path)) == ["first.err", "two.h5"]


# ------------------------------------------------------------------------ (c) disk full
LIMIT = 12_000_000  # bytes: a 200 000-ion run needs ~40 MB
FSIZE = ("import resource, signal\n"
         "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
         "resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))\n")


def _assert_sound(path: Path, limit: int) -> int:
    """The file opens, its data sets are row-aligned, every stored hit is a real one."""
    assert path.stat().st_size <= limit
    with RunReader(path) as r:
        n = r.count("hits")
        assert 0 < n
        assert r.count("derived") == r.count("truth") == n
        hits = r.read("hits")
        assert np.all(np.diff(hits["pulse"].astype(np.int64)) >= 0)  # evaporation order
        assert np.all(hits["pulse"][-100:] > 0)
        return n


def test_disk_full_is_one_error_and_leaves_a_readable_file(tmp_path: Path):
    out = tmp_path / "full.h5"
    p = _apt_daq("run", CONFIG, "-o", out, "--ions", 200_000, "--quiet",
                 pre=FSIZE.format(limit=LIMIT))
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    errors = _error_lines(p.stderr)
    assert len(errors) == 1 and "disk full" in errors[0] and str(out) in errors[0], p.stderr
    n = _assert_sound(out, LIMIT)
    assert f"after {n} hits" in errors[0]
    with RunReader(out) as r:
        assert r.meta["state"] == "failed: disk full"
        assert "disk full" in r.meta["end_reason"] and r.meta.get("ended")
        log = r.log
        assert log["hv_on"][-1] == 0 and log["laser_on"][-1] == 0  # the end made it in
    assert sorted(os.listdir(tmp_path)) == ["full.h5"]


WRITER = """
import math, sys
import numpy as np
from apt_daq.errors import DataFileError
from apt_daq.hits import HIT_DTYPE, RAW_DTYPE
from apt_daq.io import store
if sys.argv[2] == "outside":  # the disk fills from elsewhere: the writer's check sees room
    store.RunWriter._room = lambda self: math.inf
w = store.RunWriter(sys.argv[1], {"seed": 1}, overwrite=True)
i = 0
try:
    while True:
        h = np.zeros(20000, HIT_DTYPE)
        h["pulse"] = np.arange(i * 20000, (i + 1) * 20000) + 1
        w.append(raw=np.zeros(20000, RAW_DTYPE), hits=h)
        i += 1
except DataFileError as e:
    print(f"{i} {e}", flush=True)
w.set_meta("end_reason", "disk full")
w.log(np.zeros(1, store.LOG_DTYPE))
w.append(hits=np.zeros(5, HIT_DTYPE))
w.finish("failed")
w.close()
w.close()
"""


@pytest.mark.parametrize("old", [False, True], ids=["new-file", "overwrite"])
@pytest.mark.parametrize("how", ["checked", "outside"])
def test_disk_full_at_the_store(tmp_path: Path, how: str, old: bool):
    """`checked`: the writer sees the chunk will not fit; `outside`: the write itself fails
    (ENOSPC/EFBIG from HDF5), and the writer must not flush what never reached the disk.
    Either way: one DiskFull, then every call is quiet, no segfault, every chunk before kept
    (with --overwrite: the old file as it was, the run set aside beside it as
    ``w.failed-<time>.h5``: a run that fails never harms the file it was to replace)."""
    out = tmp_path / "w.h5"
    limit = 12_000_123
    if old:
        out.write_bytes(b"an old run" * 1000)
    p = subprocess.run([sys.executable, "-c", FSIZE.format(limit=limit) + WRITER, str(out), how],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    chunks, message = p.stdout.strip().split(" ", 1)
    assert "disk full after" in message and "every chunk written before" in message
    target = out
    if old:
        assert out.read_bytes() == b"an old run" * 1000
        (target,) = [f for f in tmp_path.iterdir() if f.name.startswith("w.failed-")]
    with RunReader(target) as r:
        assert r.meta["state"] == "failed: disk full"
        hits = r.read("hits")
    assert len(hits) == 20000 * int(chunks) > 0
    np.testing.assert_array_equal(hits["pulse"], np.arange(len(hits)) + 1)
    assert target.stat().st_size <= limit
    assert sorted(os.listdir(tmp_path)) == sorted({"w.h5", target.name})


# ------------------------------------------------------------------------ (d) SIGKILL
@pytest.mark.parametrize("old", [False, True], ids=["new-file", "overwrite"])
def test_killed_run_reads_interrupted_and_does_not_block_the_next(tmp_path: Path, run: Path,
                                                                  old: bool):
    out = tmp_path / "killed.h5"
    if old:
        out.write_bytes(run.read_bytes())
        before = _sha(out)
    p = subprocess.Popen(_cmd("run", CONFIG, "-o", out, "--overwrite", "--quiet",
                              "--ions", 3_000_000),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)

    def written() -> Path | None:
        if not old:
            return out
        temps = list(tmp_path.glob(".killed.h5.*.unfinished"))
        return temps[0] if temps else None

    try:
        _wait_for(lambda: p.poll() is not None or (written() and _hits(written()) > 0), 240,
                  "the first stored hits")
        assert p.poll() is None, "the run ended before it could be killed"
        for attempt in range(10):  # a read between two of the writer's flushes may fail
            try:
                live = summarize(str(written()))
                break
            except Exception:
                if attempt == 9:
                    raise
                time.sleep(0.05)
        assert live["state"] == "running" and str(p.pid) in live["state_note"]
    finally:
        p.kill()
        p.wait()
    data = written()
    q = _apt_daq("info", data, "--json")
    assert q.returncode == 0, q.stderr
    info = json.loads(q.stdout)
    assert info["state"] == "interrupted" and info["state_in_file"] == "running"
    assert info["counts"]["hits"] > 0
    with RunReader(data) as r:
        assert r.count("hits") == r.count("derived") > 0
    if old:  # the old run is untouched; the killed run's data is beside it
        assert _sha(out) == before
    # the dead writer's lock blocks nobody
    again = _apt_daq("run", CONFIG, "-o", out, "--overwrite", "--quiet", "--ions", 3000)
    assert again.returncode == 0, again.stderr
    if old:
        assert re.search(r"\.killed\.h5\.\w+\.unfinished: left by an interrupted run",
                         again.stderr), again.stderr
    with RunReader(out) as r:
        assert r.meta["state"] == "done"
    assert summarize(str(out))["state"] == "done"


# ------------------------------------------------------------------------ (e) .part files
HOLD = """
import signal, sys, time
from apt_daq.io._common import atomic_output
# Ctrl-C as a terminal delivers it: default handling and unblocked, whatever this child
# inherited from the test process (an earlier test may leave SIGINT ignored or blocked; under
# pytest-xdist's file order one did, and this child slept through the Ctrl-C)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
signal.signal(signal.SIGINT, signal.default_int_handler)
try:
    with atomic_output(sys.argv[1]) as tmp:
        tmp.write_bytes(b"half a file")
        print(tmp.name, flush=True)
        time.sleep(300)
except KeyboardInterrupt:
    pass
"""


@contextlib.contextmanager
def _part_of(target: Path, kill: bool):
    """A `.part` of ``target`` being written by a live process, or left by a killed one."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=ENV)
    try:
        part = target.parent / p.stdout.readline().strip()
        assert part.exists() and part.name.endswith(".part")
        if kill:
            p.kill()
            p.wait()
        yield part
    finally:
        if p.poll() is None:  # Ctrl-C: atomic_output deletes its file on the way out
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        p.stdout.close()


def test_part_files_of_killed_export_and_import_are_removed(run: Path, tmp_path: Path):
    epos, imported = tmp_path / "x.epos", tmp_path / "imported.h5"
    # the live one first: a later atomic_output of the same target would clean the dead one
    with (_part_of(epos, kill=False) as live, _part_of(epos, kill=True) as dead,
          _part_of(imported, kill=True) as dead_import):
        p = _apt_daq("export", run, "--format", "epos", "-o", epos)
        assert p.returncode == 0, p.stderr
        assert not dead.exists() and live.exists()
        assert dead.name in p.stderr and "removed" in p.stderr
        assert live.name not in p.stderr
        assert epos.stat().st_size > 0 and epos.stat().st_size % 44 == 0
        q = _apt_daq("import", epos, "-o", imported)
        assert q.returncode == 0, q.stderr
        assert not dead_import.exists() and dead_import.name in q.stderr
        with RunReader(imported) as r:
            assert r.count("hits") == epos.stat().st_size // 44
    assert not live.exists()  # its own process deleted it on Ctrl-C
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []


# ------------------------------------------------------------------------ the rule, in-process
@pytest.mark.parametrize(("hits", "state", "result", "fate"), [
    (0, "aborted", False, "kept"),   # aborted during the ramp: nothing to keep
    (0, "failed", False, "kept"),    # a failed connect
    (0, None, False, "kept"),        # closed without finish: still "running"
    (0, "done", False, "replaced"),  # a run that ended well replaces the old one, even empty
    (10, "failed", True, "replaced"),  # a fracture: the measurement's result
    # an error, a full disk, an abort after data: the old file is never harmed by a run that
    # fails, and what the new one measured is never thrown away (the specimen is gone): set
    # aside beside it. Before, such a run replaced the old file (a campaign's finished run
    # was replaced by a disk-full partial).
    (10, "failed", False, "aside"),
    (10, "aborted", False, "aside"),
    (10, None, False, "aside"),
])
def test_overwrite_rule(run: Path, hits: int, state: str | None, result: bool, fate: str):
    from apt_daq.hits import HIT_DTYPE
    from apt_daq.io.store import RunWriter

    run.chmod(0o640)
    before, listing = _sha(run), sorted(os.listdir(run.parent))
    with RunWriter(run, {"seed": 7}, overwrite=True) as w:
        if hits:
            w.append(hits=np.zeros(hits, HIT_DTYPE))
        if state:
            w.finish(state, result=result)
        with pytest.raises(DataFileError, match=f"another run is writing it \\(pid {os.getpid()}"):
            RunWriter(run, overwrite=True)
        assert _sha(run) == before  # untouched while the new run is written
    after = sorted(os.listdir(run.parent))
    if fate == "kept":
        assert _sha(run) == before and after == listing  # no temporary file, no lock left
        return
    if fate == "aside":
        assert _sha(run) == before
        (aside,) = set(after) - set(listing)
        assert aside.startswith(f"{run.stem}.{state or 'running'}-") and w.kept_as is not None
        assert w.kept_as.name == aside
        with RunReader(run.parent / aside) as r:
            assert r.meta["seed"] == 7 and r.count("hits") == hits
        return
    assert after == listing
    assert run.stat().st_mode & 0o777 == 0o640  # the replacement keeps the old file's mode
    with RunReader(run) as r:
        assert r.meta["seed"] == 7 and r.count("hits") == hits
        assert r.meta["state"] == (state or "running")


def test_a_run_aborted_before_any_hit_says_the_old_file_is_kept(run: Path):
    """An --overwrite run aborted before it stored a hit leaves the old file as it was; its
    result names no file (the CLI's last line said '0 ions in 0 pulses ... -> run.h5', as if
    run.h5 now held an empty run)."""
    from apt_daq.run import Session

    before = _sha(run)
    s = Session.from_yaml(CONFIG, {}, out=run,
                          overwrite=True, handle_signals=False)
    s.abort()  # before it starts: nothing is recorded
    res = s.run()
    assert res.state.name == "ABORTED" and res.ions == 0
    assert res.path is None
    assert _sha(run) == before


def test_a_stored_config_todays_models_refuse_leaves_the_run_readable(tmp_path: Path, capsys):
    """A run written when analysis.fda_ions took any string (now checked: 'Xx+' is no ion),
    or hand-edited: info and analyze gave a pydantic traceback. The refused value is dropped
    for its default, with one warning naming it; the hits are all there."""
    import h5py

    from apt_daq.cli import main

    out = tmp_path / "old.h5"
    assert _apt_daq("run", CONFIG, "-o", out, "--ions", 2000, "--quiet").returncode == 0
    with h5py.File(out, "r+") as f:
        cfg = json.loads(f["meta"].attrs["config"])
        cfg["analysis"]["fda_ions"] = ["Xx+", "Li+"]
        f["meta"].attrs["config"] = json.dumps(cfg)
    hits = _hits(out)
    capsys.readouterr()
    assert main(["analyze", str(out), "--no-store", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ions_total"] == hits
    assert main(["info", str(out)]) == 0
    with RunReader(out) as r:
        assert r.run_file is not None and r.run_file.run.seed == cfg["run"]["seed"]


SLOW_EXPORT = """
import signal, sys, time
import apt_daq.io.epos as epos
from apt_daq.cli import main
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT])
for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):  # as a shell leaves them
    signal.signal(s, signal.SIG_DFL)
write = epos.EposWriter.write
def slow(self, ions):  # an export of a run too large to finish before the signal
    write(self, ions)
    print("writing", flush=True)
    time.sleep(300)
epos.EposWriter.write = slow
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT])
def test_a_signal_outside_a_run_exits_128_plus_n_and_leaves_no_part(run: Path, tmp_path: Path,
                                                                    sig: signal.Signals):
    """An export (or import, range...) ended by SIGTERM, SIGHUP or SIGQUIT: the shell's exit
    code 128 + n, not a killed process's -n (SIGQUIT: a core dump), and its temporary file
    gone at once, not left for the next write of the target to clean."""
    out = tmp_path / "x.epos"
    p = subprocess.Popen([sys.executable, "-c", SLOW_EXPORT, "export", str(run), "--format",
                          "epos", "-o", str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert p.stdout.readline().strip() == "writing"
        assert [f for f in tmp_path.iterdir() if f.name.endswith(".part")]
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 128 + sig, err
    assert f"terminated by {sig.name}" in err and "Traceback" not in err
    assert not out.exists()
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []


def test_structured_meta_reads_as_json_even_if_json_keys_lost_it(run: Path):
    """One point of a fresh-clone campaign wrote a run whose /meta json_keys had lost
    ``ranges`` and ``ion_table``: the ranges read as text and ``analyze`` failed ("string
    indices must be integers"). The writer now keeps the list itself; such files still read."""
    import h5py

    from apt_daq.io.store.meta import STRUCTURED

    with h5py.File(run, "r") as f:
        keys = [k.decode() if isinstance(k, bytes) else str(k) for k in f["meta"].attrs["json_keys"]]
    lost = sorted(set(keys) & STRUCTURED)
    assert lost, keys
    with RunReader(run) as r:
        want = {k: r.meta[k] for k in lost}
    with h5py.File(run, "r+") as f:
        f["meta"].attrs["json_keys"] = [k for k in keys if k not in lost]
    with RunReader(run) as r:
        assert {k: r.meta[k] for k in lost} == want
    assert all(isinstance(v, dict | list) for v in want.values()), want

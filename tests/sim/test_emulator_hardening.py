"""The HIL emulator's exposure and limits, judged from the outside over real loopback sockets
and the pty: no client input kills a server thread or poisons what other clients share;
lines, error queue, logs and connections are bounded; nothing listens beyond loopback
without ``--allow-remote``; a fault with a non-finite time is refused (docs/hil.md,
"Exposure and limits")."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path

import pytest
from apt_daq.drivers import dld_stream as fr
from apt_daq.sim.devices import HISTORY_MAX, History, HvSupplyModel, LaserModel
from apt_daq.sim.emulator import (
    DldStreamServer,
    Emulator,
    Fault,
    load_faults,
    load_target,
    parse_fault,
    serve,
)
from apt_daq.sim.scpi_server import (
    MAX_CLIENTS,
    MAX_LINE,
    QUEUE_DEPTH,
    RemoteHostRefused,
    TcpLineServer,
    is_loopback,
    serve_hv,
    serve_laser,
)
from apt_daq.sim.serial_server import serve_hv_tcp
from emulator_support import HIL_RUN

ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20


# --------------------------------------------------------------------------- helpers


def addr(resource: str) -> tuple[str, int]:
    """(host, port) of ``TCPIP::h::p::SOCKET`` or ``tcp://h:p``."""
    if resource.startswith("TCPIP::"):
        host, port = resource.split("::")[1:3]
    else:
        host, port = resource.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


class Client:
    """A plain socket client: ``ask`` a line, read one reply line (with a timeout)."""

    def __init__(self, resource: str, timeout: float = 5.0):
        self.sock = socket.create_connection(addr(resource), timeout=timeout)
        self.file = self.sock.makefile("rwb")

    def send(self, data: bytes) -> None:
        self.file.write(data)
        self.file.flush()

    def ask(self, line: bytes | str) -> str:
        self.send((line.encode() if isinstance(line, str) else line) + b"\n")
        reply = self.file.readline()
        assert reply.endswith(b"\n"), f"connection closed instead of a reply to {line!r}"
        return reply.decode("ascii").rstrip("\r\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def closed_by_server(sock: socket.socket, timeout: float = 3.0) -> bool:
    """True if the server closes ``sock`` within ``timeout`` (EOF or reset)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def control(emu: Emulator, line: str) -> dict:
    c = Client(emu.ports["control"])
    try:
        return json.loads(c.ask(line))
    finally:
        c.close()


def printable_ascii(text: str) -> bool:
    return all(" " <= ch <= "~" for ch in text)


# --------------------------------------------------------------------------- encoding
@pytest.mark.parametrize("bad", [b"\xff", b"SOUR:VOLT \xe9", b"*IDN?\x80\x00\x1b", b"\xc3\xa9"])
@pytest.mark.parametrize("name", ["hv", "laser"])
def test_a_non_ascii_byte_does_not_poison_the_error_queue(fresh, name, bad):
    """Client A sends a line with non-ASCII bytes; client B, connected later, reads the
    shared error queue (a sane ASCII reply) and gets correct answers; A is still served."""
    a = Client(fresh.ports[name])
    a.send(bad + b"\n")
    assert a.ask("*OPC?") == "1"  # A's bad line has been handled
    b = Client(fresh.ports[name])
    err = b.ask("SYST:ERR?")
    assert err.startswith(("-113,", "-108,", "-104,")) and printable_ascii(err), err
    assert b.ask("SYST:ERR?") == '0,"No error"'
    assert b.ask("*IDN?").startswith("apt-daq,")
    assert a.ask("*IDN?").startswith("apt-daq,")
    c = Client(fresh.ports[name])  # a third client after all that
    assert c.ask("*IDN?").startswith("apt-daq,")
    for x in (a, b, c):
        x.close()


def test_a_non_ascii_byte_on_the_tcp_line_protocol():
    """The HV line protocol on TCP echoes the bad command in its ERR reply: it is ASCII."""
    srv, _ = serve_hv_tcp(HvSupplyModel())
    try:
        a = Client(f"tcp://{srv.host}:{srv.port}")
        reply = a.ask(b"\xff\xfeV 1")
        assert reply.startswith("ERR 1 ") and printable_ascii(reply), reply
        assert a.ask("E?").startswith("1 ")
        assert a.ask("ID?") == "APT-DAQ,HV-SIM,0,1.0"
        a.close()
    finally:
        srv.stop()


def pty_open(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    termios.tcflush(fd, termios.TCIFLUSH)
    return fd


def pty_ask(fd: int, data: bytes, timeout: float = 5.0) -> str:
    os.write(fd, data + b"\r\n")
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\r\n"):
        left = deadline - time.monotonic()
        r, _, _ = select.select([fd], [], [], max(left, 0))
        assert r, f"no reply to {data[:40]!r} on the pty within {timeout} s"
        buf += os.read(fd, 4096)
    return buf.decode("ascii").strip()


def test_a_non_ascii_byte_on_the_pty(fresh):
    """The pty has one serving thread: a non-ASCII byte must not end it."""
    fd = pty_open(fresh.ports["hv_serial"])
    try:
        reply = pty_ask(fd, b"\xe9\xff")
        assert reply.startswith("ERR 1 ") and printable_ascii(reply), reply
        assert pty_ask(fd, b"ID?") == "APT-DAQ,HV-SIM,0,1.0"
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- line length
def test_a_1mb_line_is_discarded_and_others_are_served(fresh):
    """1 MB without a newline: other clients are answered meanwhile; at its newline the
    line is dropped whole (-223 "Too much data" in the queue) and the link goes on."""
    a = Client(fresh.ports["hv"], timeout=10)
    a.send(b"SOUR:VOLT " + b"9" * MB)
    b = Client(fresh.ports["hv"])
    assert b.ask("*IDN?").startswith("apt-daq,HV-SIM")
    a.send(b"9" * MB)  # still the same line
    assert b.ask("MEAS:VOLT?") == "0.000"
    a.send(b"\n")  # its end: no reply of its own
    assert a.ask("SYST:ERR?").startswith('-223,"Too much data')
    assert a.ask("SYST:ERR?") == '0,"No error"'
    assert a.ask("SOUR:VOLT?") == "0.000"  # the 2 MB setting was never applied
    assert a.ask("*IDN?").startswith("apt-daq,HV-SIM")
    a.send(b"X" * (MAX_LINE + 1) + b"\n")  # just over, its newline in the same read
    assert a.ask("*OPC?") == "1"  # A's lines are handled in order: that one is done
    assert b.ask("SYST:ERR?").startswith('-223,"Too much data')  # the queue is shared
    assert b.ask("SYST:ERR?") == '0,"No error"'
    assert not [r for r in fresh.leap.hv.received if r[1] == "setpoint_v"]
    a.close()
    b.close()


def test_a_line_of_exactly_max_line_bytes_is_served(fresh):
    c = Client(fresh.ports["hv"])
    line = "SOUR:VOLT " + "0" * (MAX_LINE - len("SOUR:VOLT ") - 1) + "5"
    assert len(line) == MAX_LINE
    c.send(line.encode() + b"\n")
    assert c.ask("SYST:ERR?") == '0,"No error"'
    assert float(c.ask("SOUR:VOLT?")) == 5.0
    c.close()


def test_overlong_lines_on_the_pty_and_the_control_port(fresh):
    fd = pty_open(fresh.ports["hv_serial"])
    try:
        reply = pty_ask(fd, b"V " + b"1" * MB)
        assert reply.startswith("ERR 2 ") and "too long" in reply, reply
        assert pty_ask(fd, b"ID?") == "APT-DAQ,HV-SIM,0,1.0"
    finally:
        os.close(fd)
    c = Client(fresh.ports["control"])
    reply = json.loads(c.ask(b"fault " + b"x" * MB))
    assert reply["ok"] is False and "too long" in reply["error"]
    assert json.loads(c.ask("status"))["hv_output_on"] is False
    c.close()


SERVER_SCRIPT = """
import sys
from apt_daq.sim.devices import HvSupplyModel
from apt_daq.sim.scpi_server import serve_hv
srv, iface = serve_hv(HvSupplyModel())
print(srv.port, flush=True)
sys.stdin.read()
srv.stop()
"""


def _vm(pid: int, key: str) -> int:
    """A /proc/PID/status memory field in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_line_without_end_does_not_grow_server_memory():
    """16 MB without a newline into a server process: its peak resident memory grows by
    far less than that (the buffer holds at most MAX_LINE bytes plus one read)."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        port = int(proc.stdout.readline())
        res = f"TCPIP::127.0.0.1::{port}::SOCKET"
        other = Client(res)
        assert other.ask("*IDN?").startswith("apt-daq,HV-SIM")
        before = _vm(proc.pid, "VmHWM")
        flood = Client(res, timeout=30)
        chunk = b"A" * MB
        for _ in range(16):
            flood.send(chunk)
        assert other.ask("*IDN?").startswith("apt-daq,HV-SIM")  # served meanwhile
        flood.send(b"\n")  # the end of the line; the reply below shows it was all read
        reply = flood.ask("SYST:ERR?")
        grown_kb = _vm(proc.pid, "VmHWM") - before
        assert grown_kb < 6 * 1024, f"server peak memory grew by {grown_kb} kB"
        assert reply.startswith('-223,"Too much data'), reply
        flood.close()
        other.close()
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


# --------------------------------------------------------------------------- error queue
def test_the_error_queue_overflows_to_minus_350(fresh):
    """SCPI: a full queue keeps its oldest errors; the last becomes -350 Queue overflow."""
    c = Client(fresh.ports["laser"])
    c.send(b"*CLS\n" + b"BOGUS\n" * (QUEUE_DEPTH + 10))
    errors = [c.ask("SYST:ERR?") for _ in range(QUEUE_DEPTH + 1)]
    assert all(e.startswith("-113,") for e in errors[:QUEUE_DEPTH - 1]), errors
    assert errors[QUEUE_DEPTH - 1] == '-350,"Queue overflow"'
    assert errors[QUEUE_DEPTH] == '0,"No error"'
    c.close()


def test_an_error_message_with_quotes_stays_one_scpi_string(fresh):
    c = Client(fresh.ports["hv"])
    c.send(b'BOGUS "x"\n')
    assert c.ask("SYST:ERR?") == '-113,"Undefined header: BOGUS ""x"""'
    c.close()


# --------------------------------------------------------------------------- connections
def test_connections_beyond_the_cap_are_closed_and_logged(fresh):
    clients = [Client(fresh.ports["hv"]) for _ in range(MAX_CLIENTS)]
    for c in clients:
        assert c.ask("*IDN?").startswith("apt-daq,HV-SIM")
    extra = socket.create_connection(addr(fresh.ports["hv"]), timeout=5)
    assert closed_by_server(extra), "connection over the cap was not closed"
    extra.close()
    laser = Client(fresh.ports["laser"])  # the cap is per server
    assert laser.ask("*IDN?").startswith("apt-daq,LASER-SIM")
    laser.close()
    events = [e[1] for e in control(fresh, "log")["events"]]
    assert any("refused" in e and f"{MAX_CLIENTS} clients" in e for e in events), events
    clients.pop().close()  # a slot frees up
    deadline = time.monotonic() + 5
    while True:
        again = socket.create_connection(addr(fresh.ports["hv"]), timeout=5)
        if not closed_by_server(again, 0.3) or time.monotonic() > deadline:
            break
        again.close()
    again.sendall(b"*IDN?\n")
    assert again.makefile("rb").readline().startswith(b"apt-daq,HV-SIM")
    again.close()
    for c in clients:  # the first eight were served all along
        assert c.ask("*OPC?") == "1"
        c.close()


def test_a_dld_client_frame_cannot_grow_without_end(fresh):
    """A header announcing a huge frame, then bytes: the front end drops the link once more
    than 64 KiB are pending instead of buffering up to the 1 GiB frame limit."""
    head = fr.HEADER.pack(fr.MAGIC, 1 << 29, fr.VERSION, fr.START, 0, 0, 0, 0, 0)
    s = socket.create_connection(addr(fresh.ports["dld"]), timeout=5)
    try:
        s.sendall(head)
        try:
            for _ in range(64):
                s.sendall(b"\0" * 4096)
        except OSError:
            pass
        assert closed_by_server(s)
    finally:
        s.close()
    events = [e[1] for e in control(fresh, "log")["events"]]
    assert any("over 65536 bytes" in e for e in events), events


# --------------------------------------------------------------------------- histories
def test_histories_are_bounded():
    """The device models' received logs keep the last HISTORY_MAX entries (and slice)."""
    hv = HvSupplyModel()
    for i in range(HISTORY_MAX + 10):
        hv.set_voltage(float(i % 1000))
    assert len(hv.received) == HISTORY_MAX
    assert hv.received[-1][2] == float((HISTORY_MAX + 9) % 1000)
    assert hv.received[:2] == [hv.received[0], hv.received[1]]
    h = History(range(10), maxlen=5)
    assert h[:3] == [5, 6, 7] and h[-2:] == [8, 9] and h[::2] == [5, 7, 9] and h[0] == 5


# --------------------------------------------------------------------------- loopback only
def test_loopback_detection():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "", "::", "192.168.1.20", "10.0.0.1"):
        assert not is_loopback(host), host


@pytest.mark.parametrize("start", [
    lambda: TcpLineServer(lambda line: None, "0.0.0.0"),
    lambda: serve_hv(HvSupplyModel(), "0.0.0.0"),
    lambda: serve_laser(LaserModel(), "0.0.0.0"),
    lambda: serve_hv_tcp(HvSupplyModel(), "0.0.0.0"),
    lambda: DldStreamServer("0.0.0.0"),
    lambda: Emulator(*load_target(HIL_RUN)[:2], host="0.0.0.0", warm_up=False),
    lambda: serve(HIL_RUN, host="0.0.0.0"),
], ids=["TcpLineServer", "serve_hv", "serve_laser", "serve_hv_tcp", "DldStreamServer",
        "Emulator", "serve"])
def test_library_entries_refuse_a_remote_host(start):
    with pytest.raises(RemoteHostRefused, match="allow-remote"):
        start()


def test_library_allows_a_remote_host_when_asked():
    srv = TcpLineServer(lambda line: "pong", "0.0.0.0", allow_remote=True).start()
    try:
        c = Client(f"tcp://127.0.0.1:{srv.port}")
        assert c.ask("ping") == "pong"
        c.close()
    finally:
        srv.stop()


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apt_daq.cli", "emulate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "80"})


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""  # nothing served, no ports printed
    return lines[0]


def test_cli_refuses_a_remote_host_without_allow_remote():
    line = one_error_line(run_cli(str(HIL_RUN), "--host", "0.0.0.0"))
    assert "0.0.0.0" in line and "not loopback" in line and "--allow-remote" in line


def test_cli_serves_a_remote_host_with_allow_remote_and_warns(tmp_path):
    ports_file = tmp_path / "ports.json"
    err_file = tmp_path / "stderr.txt"
    with open(err_file, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "apt_daq.cli", "emulate", str(HIL_RUN), "--host", "0.0.0.0",
             "--allow-remote", "--ports-file", str(ports_file), "--speed", "20"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 180  # a cold numba cache compiles first
        while not (ports_file.exists() and ports_file.stat().st_size):
            assert proc.poll() is None, err_file.read_text()
            assert time.monotonic() < deadline, "emulator did not start"
            time.sleep(0.1)
        ports = json.loads(ports_file.read_text())
        warning = err_file.read_text().splitlines()[0]
        assert warning.startswith("warning:") and "0.0.0.0" in warning
        assert "anyone who can reach" in warning and "HV supply" in warning
        _, port = addr(ports["hv"])
        c = Client(f"tcp://127.0.0.1:{port}")
        assert c.ask("*IDN?").startswith("apt-daq,HV-SIM")
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


# --------------------------------------------------------------------------- faults
@pytest.mark.parametrize("spec", ["stall duration_s=nan", "slow:delay_s=inf",
                                  "interlock at_s=nan", "overflow duration_s=-inf",
                                  "stall duration_s=NaN"])
def test_a_fault_with_a_non_finite_time_is_refused(spec):
    with pytest.raises(ValueError, match="finite"):
        parse_fault(spec)


def test_fault_dataclass_and_yaml_refuse_non_finite(tmp_path):
    with pytest.raises(ValueError, match="duration_s must be a finite number"):
        Fault("stall", duration_s=float("nan"))
    with pytest.raises(ValueError, match="at_s"):
        Fault("stall", at_s=float("inf"))
    f = tmp_path / "faults.yaml"
    f.write_text("- {kind: stall, duration_s: .nan}\n")
    with pytest.raises(ValueError, match=r"fault 0: .*finite"):
        load_faults(f)
    f.write_text("- {kind: stall, duration_s: soon}\n")
    with pytest.raises(ValueError, match="must be a number"):
        load_faults(f)
    f.write_text("- {kind: overflow, records: .nan}\n")
    with pytest.raises(ValueError, match="records must be an integer"):
        load_faults(f)
    assert Fault("stall", duration_s=2).duration_s == 2.0  # finite ones still pass
    assert Fault("overflow", records=5.0, at_pulse=10).records == 5


@pytest.mark.parametrize("text, says", [
    ("faults: [\n", r"faults\.yaml:2: not valid YAML"),                 # a traceback before
    ("- {kind: stall, duration_s: 1.0e+300}\n", "duration_s must be at most 86400"),  # a 1e300 s stall
    ("- {kind: slow, delay_s: 1.0e5}\n", "delay_s must be at most 86400"),
    ("- {kind: overflow, records: 1.0e+12}\n", "records must be at most 1e"),
])
def test_a_fault_file_that_cannot_be_a_fault_list_is_one_error(tmp_path, text, says):
    f = tmp_path / "faults.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=says):
        load_faults(f)


def test_a_fault_file_that_is_not_text_or_too_big_is_named(tmp_path):
    f = tmp_path / "faults.yaml"
    f.write_bytes(b"- {kind: \xff\xfe}\n")
    with pytest.raises(ValueError, match=r"faults\.yaml: not a text \(UTF-8\) file"):
        load_faults(f)
    f.write_text("# " + "x" * (2 * MB) + "\n")
    with pytest.raises(ValueError, match="more than a fault list"):
        load_faults(f)


def test_control_port_refuses_a_nan_fault(fresh):
    reply = control(fresh, "fault stall target=hv duration_s=nan")
    assert reply["ok"] is False and "finite" in reply["error"]
    assert control(fresh, "status")["faults_fired"] == []
    reply = control(fresh, "reset seed=-1")
    assert reply["ok"] is False and "seed" in reply["error"]
    c = Client(fresh.ports["hv"])  # and the wire is not stalled
    assert c.ask("*IDN?").startswith("apt-daq,HV-SIM")
    c.close()


def test_cli_refuses_a_nan_fault():
    line = one_error_line(run_cli(str(HIL_RUN), "--fault", "stall:duration_s=nan"))
    assert "duration_s" in line and "finite" in line

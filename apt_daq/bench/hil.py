"""HIL emulator on loopback: the SCPI query round trip of the emulator's HV supply (a plain
socket client and our driver) beside a raw TCP echo of the same line, and the DLD record
stream (emulator front end -> ``StreamDld.read_chunk``) in hits/s beside raw socket transfer
of the same bytes, all measured in the same run."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import numpy as np

from apt_daq.bench import Result, echo_server, median_us, result
from apt_daq.hits import RAW_DTYPE
from apt_daq.shipped import configs_dir


def _line_client(host: str, port: int) -> tuple[socket.socket, Callable[[bytes], bytes]]:
    cli = socket.create_connection((host, port))
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()

    def ask(line: bytes) -> bytes:
        cli.sendall(line)
        while b"\n" not in buf:
            buf.extend(cli.recv(65536))
        i = buf.index(b"\n")
        out = bytes(buf[:i])
        del buf[:i + 1]
        return out

    return cli, ask


def _records(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = np.zeros(n, RAW_DTYPE)
    raw["pulse"] = np.sort(rng.integers(0, 20 * n, n))
    for k in ("t_x1", "t_x2", "t_y1", "t_y2", "t_mcp"):
        raw[k] = rng.integers(0, 40_000, n)
    raw["v_dc"], raw["laser_pj"] = 3200.0, 5.0
    return raw


def scpi_round_trip(n: int) -> list[Result]:

    from apt_daq import drivers
    from apt_daq.config import InstrumentConfig, SpecimenConfig, load_yaml_model
    from apt_daq.sim.emulator import Emulator

    root = configs_dir()
    ins = load_yaml_model(root / "instruments/leap5000xs.yaml", InstrumentConfig)
    sp = load_yaml_model(root / "specimens/nmc811-cr.yaml", SpecimenConfig)
    srv, port = echo_server()
    echo_cli, echo = _line_client("127.0.0.1", port)
    echo_us = median_us(lambda: echo(b"MEAS:VOLT?\n"), n)
    emu = Emulator(ins, sp, speed=1.0, warm_up=False, serial=False).start()
    try:
        host, p = emu.ports["hv"].split("::")[1:3]
        cli, ask = _line_client(host, int(p))
        plain_us = median_us(lambda: ask(b"MEAS:VOLT?\n"), n)
        cli.close()
        cfg = {"backend": "scpi", "resource": emu.ports["hv"], "limit_v": 6000,
               "options": {"transport": "socket"}}
        with drivers.open_hv(cfg) as hv:
            drv_us = median_us(hv.voltage, n)
    finally:
        emu.stop()
        echo_cli.close()
        srv.close()
    return [
        result("hil.scpi_query_plain_socket", plain_us, "us", echo_us,
               "median MEAS:VOLT? round trip to the emulator's HV supply vs raw socket echo"),
        result("hil.scpi_query_driver", drv_us, "us", echo_us,
               "median hv.voltage() (socket transport) against the emulator vs raw echo"),
    ]


def stream_throughput(duration_s: float, block_records: int = 50_000) -> list[Result]:
    from apt_daq.drivers import dld_stream as fr
    from apt_daq.drivers.dld import StreamDld
    from apt_daq.sim.emulator import DldStreamServer

    recs = _records(block_records)
    # -- the emulator's front end -> the stream driver
    srv = DldStreamServer(max_queued=8).start()
    dld = StreamDld(srv.url, max_chunk_records=1 << 22)
    dld.connect()
    dld.start()
    stop = threading.Event()
    deadline = time.monotonic() + 5
    while not srv.running and time.monotonic() < deadline:
        time.sleep(0.01)

    def produce() -> None:
        first = 0
        while not stop.is_set():
            srv._put(fr.encode_data(recs, first_pulse=first, n_pulses=20 * block_records),
                     block=True)
            first += 20 * block_records

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    hits = 0
    dld.read_chunk(5.0)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < duration_s:
        hits += len(dld.read_chunk(5.0))
    stream_rate = hits / (time.perf_counter() - t0)
    stop.set()
    dld.close()
    srv.stop()
    # -- baseline: the same bytes over a raw socket, no framing, no decoding
    payload = fr.encode_data(recs, first_pulse=0, n_pulses=1)
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    done = threading.Event()

    def send() -> None:
        conn, _ = lsock.accept()
        with conn:
            try:
                while not done.is_set():
                    conn.sendall(payload)
            except OSError:
                pass

    threading.Thread(target=send, daemon=True).start()
    cli = socket.create_connection(("127.0.0.1", port))
    buf = bytearray(1 << 22)
    view = memoryview(buf)
    got = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < duration_s:
        got += cli.recv_into(view)
    raw_rate = got / RAW_DTYPE.itemsize / (time.perf_counter() - t0)
    done.set()
    cli.close()
    lsock.close()
    return [result("hil.dld_stream_hits_per_s", stream_rate, "hits/s", raw_rate,
                   f"emulator front end -> StreamDld.read_chunk, {block_records}-record "
                   "frames, vs raw socket bytes/40")]


def run(quick: bool = False) -> list[Result]:
    n = 300 if quick else 3000
    return scpi_round_trip(n) + stream_throughput(0.5 if quick else 2.0)

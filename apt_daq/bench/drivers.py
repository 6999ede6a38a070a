"""Driver round trips on loopback: an SCPI query through the HV driver (pyvisa-py and the raw
socket transport) and a setting (command + ``SYST:ERR?``), each beside a raw TCP echo round
trip of the same line measured in the same run (the floor any socket protocol pays)."""

from __future__ import annotations

import socket

from apt_daq.bench import Result, echo_server, median_us, result


def run(quick: bool = False) -> list[Result]:
    from apt_daq import drivers
    from apt_daq.sim.devices import HvSupplyModel
    from apt_daq.sim.scpi_server import serve_hv

    n = 300 if quick else 3000
    srv, port = echo_server()
    cli = socket.create_connection(("127.0.0.1", port))
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def echo() -> None:
        cli.sendall(b"MEAS:VOLT?\n")
        buf = b""
        while not buf.endswith(b"\n"):
            buf += cli.recv(65536)

    echo_us = median_us(echo, n)
    server, _ = serve_hv(HvSupplyModel())
    out: list[Result] = []
    try:
        for transport in ("socket", "visa"):
            cfg = {"backend": "scpi", "resource": server.resource, "limit_v": 6000,
                   "options": {"transport": transport}}
            with drivers.open_hv(cfg) as hv:
                q_us = median_us(hv.voltage, n)
                s_us = median_us(lambda hv=hv: hv.set_voltage(0.0), n)
            out.append(result(f"drivers.scpi_query_{transport}", q_us, "us", echo_us,
                              "median MEAS:VOLT? round trip vs raw socket echo"))
            out.append(result(f"drivers.scpi_setting_{transport}", s_us, "us", echo_us,
                              "median SOUR:VOLT + SYST:ERR? vs one raw socket echo"))
    finally:
        server.stop()
        cli.close()
        srv.close()
    return out

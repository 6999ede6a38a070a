"""Open pages that stop reading, judged from outside: what the client's socket sees.

A client that opened the view's websocket and then stopped reading (a suspended laptop, a
stalled SSH tunnel) kept its Bokeh session and ~2 MB of socket buffers for as long as its TCP
connection lived: memory grew with every such client (a helper's measurement, Dec 2026, 20
clients: +38 MB on a static view, flat but never given back). The server now pings every page
and drops one whose pong is late; a client that answers pings (every browser does, from its
network stack) stays.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("bokeh", reason="the web extra is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from synthetic_runs import make_run
from test_rebinding import _bokeh_token, _get  # the page fetch and token of the S1 tests

PING_S = 1.0


@pytest.fixture
def served(tmp_path, monkeypatch):
    import apt_daq.web.server as server_mod
    from apt_daq.web import serve_file

    monkeypatch.setattr(server_mod, "PING_S", PING_S)
    server, follower = serve_file(str(make_run(tmp_path / "run.h5", n=2000)), "127.0.0.1:0")
    yield server
    server.close(linger_s=0)
    follower.stop()


def _token(port: int) -> str:
    status, body = _get(port, f"127.0.0.1:{port}")
    token = _bokeh_token(body)
    assert status == 200 and token, "the page carries no Bokeh session token"
    return token


def _open_and_stop_reading(port: int, token: str) -> socket.socket:
    """A websocket handshake by hand, then nothing: the client never reads or answers."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: bokeh, {token}\r\n"
               f"Origin: http://127.0.0.1:{port}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head[:200]
    return s


def _closed_by_server(s: socket.socket, within_s: float) -> float | None:
    """Drain what the server sent; the seconds until its end of the stream, or None."""
    t0 = time.monotonic()
    while (left := within_s - (time.monotonic() - t0)) > 0:
        s.settimeout(left)
        try:
            if not s.recv(65536):
                return time.monotonic() - t0
        except TimeoutError:
            return None
        except ConnectionResetError:
            return time.monotonic() - t0
    return None


def test_a_client_that_stops_reading_is_dropped(served) -> None:
    s = _open_and_stop_reading(served.port, _token(served.port))
    try:
        time.sleep(3 * PING_S)  # never read: no pong goes back
        # a ping, its timeout, then tornado's close handshake (5 s) and the abort
        took = _closed_by_server(s, within_s=2 * PING_S + 15)
    finally:
        s.close()
    assert took is not None, "the server still holds a client that answered no ping"


def test_a_client_that_answers_pings_stays(served) -> None:
    from tornado import httpclient, websocket

    port = served.port

    async def main() -> bool:
        req = httpclient.HTTPRequest(f"ws://127.0.0.1:{port}/ws", headers={
            "Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}"})
        ws = await websocket.websocket_connect(req, subprotocols=["bokeh", _token(port)])
        try:
            end = time.monotonic() + 5 * PING_S  # several pings answered by the client
            while (left := end - time.monotonic()) > 0:
                try:
                    msg = await asyncio.wait_for(ws.read_message(), left)
                except TimeoutError:
                    break
                if msg is None:
                    return False  # closed by the server
            return ws.protocol is not None and not ws.protocol.is_closing()
        finally:
            ws.close()

    assert asyncio.run(main()), "the server dropped a client that answered its pings"

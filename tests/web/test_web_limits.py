"""The view's server against a hostile client on the lab network (an outside audit, Dec 2026),
judged from outside: HTTP answers and the server's log lines.

- six 90 MB POSTs without the token took the server from 99 to 748 MB (tornado buffered each
  whole body before anything looked at it): a body above 1 MiB is now refused unread;
- each websocket upgrade without the token logged a 10-line traceback (50 requests: 500
  lines): now one line each.
"""

from __future__ import annotations

import http.client
import logging
import sys
from pathlib import Path

import pytest

pytest.importorskip("bokeh", reason="the web extra is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from synthetic_runs import make_run


@pytest.fixture
def served(tmp_path):
    from apt_daq.web import serve_file

    server, follower = serve_file(str(make_run(tmp_path / "run.h5", n=2000)), "0.0.0.0:0")
    yield server
    server.close(linger_s=0)
    follower.stop()


def test_a_large_body_is_refused_unread(served) -> None:
    from apt_daq.web.server import MAX_BODY_BYTES

    c = http.client.HTTPConnection("127.0.0.1", served.port, timeout=20)
    try:
        c.request("POST", "/metadata", body=b"x" * (8 * MAX_BODY_BYTES))
        status = c.getresponse().status
    except (ConnectionError, http.client.HTTPException):
        status = None  # the connection dropped before the body was read: refused
    assert status in (None, 400, 413), status


def test_a_websocket_without_the_token_is_one_log_line(served, caplog) -> None:
    caplog.set_level(logging.ERROR)
    for _ in range(5):
        c = http.client.HTTPConnection("127.0.0.1", served.port, timeout=20)
        c.request("GET", "/ws", headers={
            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Origin": f"http://127.0.0.1:{served.port}"})
        c.getresponse()  # tornado upgrades, then the handler refuses it and closes
        c.close()
    records = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in records), [
        r.getMessage() for r in records]


def test_a_flood_of_junk_websocket_messages_is_a_few_log_lines(tmp_path, caplog) -> None:
    """An audit's client queued 2000 non-JSON messages on an open websocket: the server closed
    it after the first, but parsed and logged every one queued (3996 error lines in 0.1 s).
    Judged from the log records the server's loggers let out."""
    import asyncio
    import math

    from test_rebinding import _bokeh_token, _get
    from tornado import httpclient, websocket

    from apt_daq.web import serve_file
    from apt_daq.web.server import LOG_BURST, _OneLine

    _OneLine._window[:] = [-math.inf, 0, 0]
    server, follower = serve_file(str(make_run(tmp_path / "run.h5", n=2000)), "127.0.0.1:0")
    host = f"127.0.0.1:{server.port}"
    try:
        token = _bokeh_token(_get(server.port, host)[1])
        assert token

        async def flood() -> int:
            req = httpclient.HTTPRequest(f"ws://{host}/ws", headers={
                "Host": host, "Origin": f"http://{host}"})
            ws = await websocket.websocket_connect(req, subprotocols=["bokeh", token])
            for _ in range(3):
                await ws.read_message()  # the ACK
            sent = 0
            try:
                for _ in range(2000):
                    await ws.write_message("junk")
                    sent += 1
            except websocket.WebSocketClosedError:
                pass
            await asyncio.sleep(2.0)  # the server works through what it received
            return sent

        caplog.set_level(logging.WARNING)
        sent = asyncio.run(flood())
        assert sent > 50  # the flood reached the server before it closed the socket
        lines = [r for r in caplog.records if r.name.startswith(("bokeh", "tornado"))]
        assert len(lines) <= LOG_BURST, [r.getMessage()[:80] for r in lines[:20]]
        assert _get(server.port, host)[0] == 200  # and the server still answers
    finally:
        server.close(linger_s=0)
        follower.stop()

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

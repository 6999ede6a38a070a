"""The loopback view against a DNS-rebinding page (an outside audit, Dec 2026, finding S1),
judged from outside: HTTP status codes, websocket handshakes and the run file's /meta.

A page on ``evil.example`` whose name is rebound to 127.0.0.1 makes the operator's browser
send ``Host: evil.example:PORT`` (and ``Origin: http://evil.example:PORT``) to the tokenless
loopback server. Tornado takes an Origin equal to the Host as same-origin, so the page could
load the view, get a Bokeh session token, open ``/ws`` and click Pause, then Resume (laser on
again), or Abort. The loopback server now refuses any request whose Host is not a loopback
name of its port, and any Origin that is not such a loopback origin, before Bokeh sees it. No
browser is needed: plain HTTP requests and tornado's websocket client.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("bokeh", reason="the web extra is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from synthetic_runs import make_run

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "configs" / "runs" / "nmc811-cr-5pj.yaml"
EVIL = "evil.example"


def _get(port: int, host: str, path: str = "/") -> tuple[int, str]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def _bokeh_token(body: str) -> str | None:
    m = re.search(r'"token":\s*"([^"]+)"', body)
    return m.group(1) if m else None


def _websocket(port: int, host: str, origin: str, token: str,
               clicks: tuple[str, ...] = ()) -> str:
    """Open /ws as a browser at ``origin`` would (Host header ``host``), click the buttons
    whose labels start with ``clicks`` in order; 'refused ...' or the first message's type."""
    from tornado import httpclient, websocket

    n = 0

    async def send(ws, msgtype: str, content: dict) -> None:
        nonlocal n
        n += 1
        for part in ({"msgid": f"t{n}", "msgtype": msgtype}, {}, content):
            await ws.write_message(json.dumps(part))

    async def recv(ws) -> list:
        parts = []
        for _ in range(3):
            text = await asyncio.wait_for(ws.read_message(), 20)
            if text is None:
                raise ConnectionError("closed by the server")
            parts.append(json.loads(text))
        return parts

    async def main() -> str:
        req = httpclient.HTTPRequest(f"ws://127.0.0.1:{port}/ws",
                                     headers={"Host": host, "Origin": origin})
        try:
            ws = await websocket.websocket_connect(req, subprotocols=["bokeh", token])
        except Exception as e:  # the handshake refused
            return f"refused {type(e).__name__}: {e}"
        try:
            first = (await recv(ws))[0]["msgtype"]
        except (TimeoutError, ConnectionError) as e:
            return f"refused after open: {e}"
        if clicks:
            await send(ws, "PULL-DOC-REQ", {})
            while (msg := await recv(ws))[0]["msgtype"] != "PULL-DOC-REPLY":
                pass
            buttons: dict[str, str] = {}

            def walk(o) -> None:
                if isinstance(o, dict):
                    if o.get("name") == "Button":
                        label = (o.get("attributes") or {}).get("label") or ""
                        buttons[label] = o.get("id")
                    for v in o.values():
                        walk(v)
                elif isinstance(o, list):
                    for v in o:
                        walk(v)

            walk(msg[2])
            for want in clicks:
                bid = next(i for label, i in buttons.items() if label.startswith(want))
                await send(ws, "PATCH-DOC", {"events": [{
                    "kind": "MessageSent", "msg_type": "bokeh_event", "msg_data": {
                        "type": "event", "name": "button_click", "values": {
                            "type": "map", "entries": [["model", {"id": bid}]]}}}]})
                await asyncio.sleep(1.0)
        ws.close()
        return first

    return asyncio.run(main())


# ------------------------------------------------------------------ a file view on loopback
@pytest.fixture
def loopback(tmp_path):
    from apt_daq.web import serve_file

    server, follower = serve_file(str(make_run(tmp_path / "run.h5", n=2000)), "127.0.0.1:0")
    yield server
    server.close(linger_s=0)
    follower.stop()


def test_a_foreign_host_gets_no_page_and_no_session(loopback) -> None:
    port = loopback.port
    for host in (f"{EVIL}:{port}", EVIL, f"127.0.0.1.{EVIL}:{port}", f"localhost:{port}.x",
                 f"localhost:{port + 1}", ""):
        status, body = _get(port, host)
        assert status in (403, 421), (host, status)
        assert _bokeh_token(body) is None, host
    status, body = _get(port, f"{EVIL}:{port}@127.0.0.1")  # tornado: not a host at all
    assert status in (400, 403, 421) and _bokeh_token(body) is None, status
    for path in ("/autoload.js", "/static/js/bokeh.min.js", "/ws"):
        assert _get(port, f"{EVIL}:{port}", path)[0] in (403, 421), path


def test_loopback_names_still_get_the_page(loopback) -> None:
    port = loopback.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}",
                 f"[::1]:{port}"):
        status, body = _get(port, host)
        assert status == 200, (host, status)
        assert _bokeh_token(body), host


def test_the_websocket_needs_a_loopback_host_and_origin(loopback) -> None:
    port = loopback.port
    # a session token as the operator's own page gets it (the rebinding page cannot even
    # get one now: its GET is refused above)
    token = _bokeh_token(_get(port, f"127.0.0.1:{port}")[1])
    assert token
    for host, origin in ((f"{EVIL}:{port}", f"http://{EVIL}:{port}"),
                         (f"127.0.0.1:{port}", f"http://{EVIL}:{port}"),
                         (f"{EVIL}:{port}", f"http://127.0.0.1:{port}"),
                         (f"127.0.0.1:{port}", "http://127.0.0.1:1"),  # another local page
                         (f"127.0.0.1:{port}", "null")):
        said = _websocket(port, host, origin, token)
        assert said.startswith("refused"), (host, origin, said)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        token = _bokeh_token(_get(port, host)[1])
        assert _websocket(port, host, f"http://{host}", token) == "ACK", host


def test_the_token_server_still_takes_any_host_with_the_token(tmp_path) -> None:
    from apt_daq.web import serve_file

    server, follower = serve_file(str(make_run(tmp_path / "run.h5", n=2000)), "0.0.0.0:0")
    try:
        port = server.port
        status, body = _get(port, f"daq-pc.lab:{port}", f"/?token={server.token}")
        assert status == 200 and _bokeh_token(body)
        status, body = _get(port, f"daq-pc.lab:{port}")
        assert status in (302, 403) and _bokeh_token(body) is None
    finally:
        server.close(linger_s=0)
        follower.stop()


def test_a_half_open_request_is_dropped(loopback) -> None:
    """Slowloris (S10): a request whose header never ends is closed after the header timeout
    (2000 such connections had all been held, 1404 of them still after 20 s)."""
    from apt_daq.web import server as srv

    s = socket.create_connection(("127.0.0.1", loopback.port), timeout=srv.HEADER_TIMEOUT_S + 10)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        t0 = time.monotonic()
        assert s.recv(1) == b""  # closed by the server, nothing answered
        assert time.monotonic() - t0 < srv.HEADER_TIMEOUT_S + 5
    finally:
        s.close()


# ------------------------------------------------------------------ a run served on loopback
def _transitions(out: Path) -> list[tuple[str, str]]:
    from apt_daq.io.store import RunReader

    with RunReader(out) as r:
        return [(str(t[1]), str(t[-1])) for t in r.meta.get("transitions") or []]


def test_a_rebinding_page_cannot_pause_resume_or_abort_a_run(tmp_path) -> None:
    from apt_daq.io.store import RunReader

    out = tmp_path / "live.h5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "apt_daq.cli", "run", str(RUN), "-o", str(out), "--ions",
         "100000000", "--quiet", "--serve", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines: list[bytes] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        port = None
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            port = next((int(m.group(1)) for b in list(lines)
                         if (m := re.search(rb"http://127\.0\.0\.1:(\d+)/", b))), None)
            time.sleep(0.2)
        assert port, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else lines
        evil = f"{EVIL}:{port}"
        # the attack as the audit ran it: the page and a session through the rebound name
        status, body = _get(port, evil)
        assert status in (403, 421) and _bokeh_token(body) is None
        # even holding a session id the operator's page got, the rebound name cannot click
        token = _bokeh_token(_get(port, f"127.0.0.1:{port}")[1])
        said = _websocket(port, evil, f"http://{evil}", token, clicks=("Pause", "Resume"))
        assert said.startswith("refused"), said
        said = _websocket(port, evil, f"http://{evil}", token, clicks=("Abort", "Abort"))
        assert said.startswith("refused"), said
        time.sleep(1.0)
        assert proc.poll() is None, "the rebinding page ended the run"
        # the operator's own page still works: Abort (two clicks) ends the run
        token = _bokeh_token(_get(port, f"127.0.0.1:{port}")[1])
        said = _websocket(port, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}", token,
                          clicks=("Abort", "Abort"))
        assert said == "ACK", said
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with RunReader(out) as r:
        assert str(r.meta["state"]).startswith("aborted"), r.meta["state"]
    states = [s for s, _ in _transitions(out)]
    assert "paused" not in states, _transitions(out)

"""The Bokeh server of the live view, on its own thread with its own event loop.

Loopback (127.0.0.0/8, ::1, localhost) needs no token, but takes only requests addressed to
a loopback name of its port: any other ``Host`` header (a DNS-rebinding page: its own name,
resolved to 127.0.0.1) or a websocket/CORS ``Origin`` other than that loopback origin is
answered 403 before Bokeh sees the request. Any other address needs a token, as
Jupyter does: one is made at start (or taken from ``APT_DAQ_TOKEN``) and printed in the URL;
a request must carry it as the ``token`` query parameter or the ``apt_daq_token`` cookie
(set by the first request that carried the parameter), else it is sent to a page that refuses
it (HTTP 403). The websocket is held to the same rule, and Bokeh's session ids are signed
with a per-process secret, so none can be forged from outside.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from apt_daq.errors import UserError

COOKIE = "apt_daq_token"
TOKEN_ENV = "APT_DAQ_TOKEN"
DEFAULT_PORT = 5006


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_address(spec: str) -> Address:
    """``PORT``, ``HOST:PORT`` or ``[IPV6]:PORT``; the host defaults to 127.0.0.1."""
    text = str(spec).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        p = int(port)
    except ValueError:
        p = -1
    if not 0 <= p <= 65535:
        raise UserError(f"--serve {spec}: expected [HOST:]PORT with PORT 0-65535 "
                        "(0: any free port)")
    return Address(host, p)


#: the largest request body or websocket message the view takes (its own are a few kB)
MAX_BODY_BYTES = 1 << 20
#: a request's headers (or a keep-alive connection's next request) must arrive within this
#: and a body within BODY_TIMEOUT_S, else the connection is closed (a slowloris client's
#: 2000 half-open connections had all been held, 1404 still after 20 s)
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 10.0
#: every open page is pinged this often and dropped if its pong is this late: a client that
#: stopped reading (a frozen tab's machine, a stalled tunnel) held its session and ~2 MB of
#: socket buffers for as long as its TCP connection lived. A browser answers a ping from its
#: network stack, background tabs included
PING_S = 30.0


def loopback_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` header values a browser sends to a loopback server at ``host:port``: the
    loopback names with the port, and bare (a browser leaves out port 80)."""
    names = {"127.0.0.1", "localhost", "[::1]"}
    h = host.strip("[]").lower()
    names.add(f"[{h}]" if ":" in h else h)
    return frozenset(names | {f"{n}:{port}" for n in names})


def _host_guard(app: Any, hosts: frozenset[str], where: str) -> Any:
    """``app`` behind a check of each request's ``Host`` (one of ``hosts``) and ``Origin``
    (absent, or ``http://`` one of ``hosts``): anything else gets 403 before any of the
    application's handlers (page, session, websocket) runs."""
    from tornado.routing import Router
    from tornado.web import RequestHandler

    origins = frozenset(f"http://{h}" for h in hosts)

    class ForeignHost(RequestHandler):
        """403 for every method, whatever the path."""

        def prepare(self) -> None:
            self.set_status(403)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish("apt-daq live view: this server answers only to its loopback address "
                        f"({where}); a request for another host name or from another "
                        "origin is refused\n")

    class HostGuard(Router):
        def find_handler(self, request: Any, **kwargs: Any) -> Any:
            host = request.headers.get("Host", "").strip().lower()
            origin = request.headers.get("Origin")
            if host in hosts and (origin is None or origin.strip().lower() in origins):
                return app.find_handler(request, **kwargs)
            return app.get_handler_delegate(request, ForeignHost)

    return HostGuard()


class _OneLine(logging.Filter):
    """A request's exception (a client without the token opening the websocket, a malformed
    message) logged as one line, not a traceback of 10-70 lines per request; and at most
    :data:`LOG_BURST` lines of the web server every :data:`LOG_WINDOW_S` (2000 junk messages
    a client queued before the server closed it were parsed one by one: 3996 error lines in
    0.1 s), the count of those left out said on the next line let through."""

    _lock: ClassVar[threading.Lock] = threading.Lock()
    #: start, lines passed, lines left out: shared by every logger's filter
    _window: ClassVar[list[float]] = [-math.inf, 0, 0]

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            w, now = self._window, time.monotonic()
            if now - w[0] >= LOG_WINDOW_S:
                left_out, w[:] = w[2], [now, 0, 0]
            else:
                left_out = 0
            if w[1] >= LOG_BURST:
                w[2] += 1
                return False
            w[1] += 1
        if record.exc_info and record.exc_info[1] is not None:
            e = record.exc_info[1]
            said = " ".join(record.getMessage().split()[:6])  # tornado adds the whole request
            record.msg, record.args = f"{said}: {type(e).__name__}: {e}", None
            record.exc_info = record.exc_text = None
        if left_out:
            record.msg = f"({left_out} more web server lines left out) {record.getMessage()}"
            record.args = None
        return True


LOG_BURST = 10  # web server log lines let through every LOG_WINDOW_S
LOG_WINDOW_S = 10.0


def _one_line_logs() -> None:
    # a logger's filters see only what is logged to it, not what its children pass up
    for name in ("tornado.application", "tornado.general", "bokeh.server.views.ws",
                 "bokeh.server.protocol_handler", "bokeh.server.connection",
                 "bokeh.server.session", "bokeh.server.tornado"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OneLine) for f in logger.filters):
            logger.addFilter(_OneLine())


def _auth(token: str) -> Any:
    from bokeh.server.auth_provider import AuthProvider
    from tornado.web import RequestHandler

    class Refused(RequestHandler):
        """Where a request without the token lands: 403, and how to get in."""

        def get(self) -> None:
            self.set_status(403)
            self.write("<html><body><h3>apt-daq live view: this address needs the token</h3>"
                       "<p>Open the URL printed when the view started "
                       "(<code>...?token=...</code>); it sets a cookie for this browser.</p>"
                       "</body></html>")

    class TokenAuth(AuthProvider):
        @property
        def get_user(self) -> Callable[[Any], str | None]:
            def user(handler: Any) -> str | None:
                given = handler.get_argument("token", None)
                cookie = handler.get_cookie(COOKIE)
                for candidate in (given, cookie):
                    if candidate and hmac.compare_digest(candidate.encode(), token.encode()):
                        if given and candidate is given and not _is_websocket(handler):
                            handler.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
                        return "operator"
                return None

            return user

        @property
        def login_url(self) -> str:
            return "/token-required"

        @property
        def login_handler(self) -> type:
            return Refused

    return TokenAuth()


def _is_websocket(handler: Any) -> bool:
    from tornado.websocket import WebSocketHandler

    return isinstance(handler, WebSocketHandler)


class LiveServer:
    """Serves ``make_doc(doc)`` documents at ``/`` on a background thread until ``close()``."""

    def __init__(self, make_doc: Callable[[Any], None], address: Address,
                 token: str | None = None):
        self.address = address
        if token is None and not address.loopback:
            token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
        self.token = token
        self._make_doc = make_doc
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: Any = None
        self._server: Any = None
        self.port = 0
        self._thread = threading.Thread(target=self._main, name="apt-daq-live-view", daemon=True)

    @property
    def url(self) -> str:
        host = self.address.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        if ":" in host:
            host = f"[{host}]"
        query = f"?token={self.token}" if self.token else ""
        return f"http://{host}:{self.port}/{query}"

    def start(self) -> LiveServer:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            e = self._error
            if isinstance(e, OSError):
                raise UserError(f"--serve {self.address.host}:{self.address.port}: cannot "
                                f"listen there ({e.strerror or e})") from None
            raise e
        if not self._ready.is_set():
            raise UserError("live view: the web server did not start within 30 s")
        return self

    def _main(self) -> None:
        try:
            asyncio.set_event_loop(asyncio.new_event_loop())
            from bokeh.application import Application
            from bokeh.application.handlers.function import FunctionHandler
            from bokeh.server.server import BaseServer
            from bokeh.server.tornado import BokehTornado
            from bokeh.server.util import bind_sockets
            from bokeh.util.token import generate_secret_key
            from tornado.httpserver import HTTPServer
            from tornado.ioloop import IOLoop

            host = self.address.host
            sockets, self.port = bind_sockets(host, self.address.port)
            hosts = loopback_hosts(host, self.port) if self.address.loopback else None
            if hosts is not None:
                origins = sorted(h for h in hosts if h.endswith(f":{self.port}"))
            else:  # any name the machine is reached by; the token guards the door
                origins = [f"*:{self.port}"]
            kw: dict[str, Any] = {}
            if self.token:
                kw["auth_provider"] = _auth(self.token)
            app = BokehTornado(
                {"/": Application(FunctionHandler(self._make_doc))},
                extra_websocket_origins=origins, secret_key=generate_secret_key().encode(),
                sign_sessions=True, exclude_cookies=[COOKIE],
                websocket_max_message_size_bytes=MAX_BODY_BYTES,
                websocket_ping_interval=PING_S, websocket_ping_timeout=PING_S, **kw)
            # a view's requests are small GETs and websocket messages: a body or message is
            # refused at these sizes before it is buffered (six 90 MB POSTs without the token
            # had taken the server from 99 to 748 MB), and one not sent in time is dropped
            http = HTTPServer(app if hosts is None else _host_guard(app, hosts, self.url),
                              max_body_size=MAX_BODY_BYTES, max_buffer_size=MAX_BODY_BYTES,
                              idle_connection_timeout=HEADER_TIMEOUT_S,
                              body_timeout=BODY_TIMEOUT_S)
            _one_line_logs()
            http.add_sockets(sockets)
            self._loop = IOLoop.current()
            self._server = BaseServer(self._loop, app, http)
            self._server.start()
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.start()
        self._loop.close(all_fds=True)

    def close(self, linger_s: float = 1.0) -> None:
        """Stop serving after ``linger_s`` (so open pages get the last refresh: the end state);
        open pages keep their last picture."""
        if self._loop is None or not self._thread.is_alive():
            return
        time.sleep(linger_s)

        def stop() -> None:
            try:
                self._server.stop(wait=False)
            finally:
                self._loop.stop()

        self._loop.add_callback(stop)
        self._thread.join(timeout=10)

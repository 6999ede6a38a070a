"""The live web view (Bokeh server): ``apt-daq run RUN.yaml --serve [HOST:]PORT`` and
``apt-daq view RUN.h5 --serve [HOST:]PORT``. See docs/live.md.

Needs the ``web`` extra (``pip install 'apt-daq[web]'``: Bokeh).
"""

from __future__ import annotations

from typing import Any

from apt_daq.errors import UserError
from apt_daq.web.server import Address, LiveServer, is_loopback, parse_address

__all__ = ["Address", "LiveServer", "is_loopback", "parse_address", "serve_file",
           "serve_session"]


def _need_bokeh() -> None:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        raise UserError("the live view needs Bokeh: pip install 'apt-daq[web]' "
                        "(or pip install 'bokeh>=3.4')") from None


def serve_session(session: Any, spec: str, token: str | None = None) -> LiveServer:
    """Serve a live view of ``session`` (before ``session.run()``), with Pause / Resume / Abort
    wired to its thread-safe ``pause()``, ``resume()`` and ``abort()``. Returns the started
    server; call ``close()`` when the run has ended."""
    _need_bokeh()
    from apt_daq.web.document import Controls, build
    from apt_daq.web.sources import attach_session

    snap, poll = attach_session(session)
    controls = Controls(session.pause, session.resume, session.abort)

    def make(doc: Any) -> None:
        build(doc, snap, controls, poll=poll, time_label="wall time since start (s)")

    return LiveServer(make, parse_address(spec), token).start()


def serve_file(path: str, spec: str, token: str | None = None) -> tuple[LiveServer, Any]:
    """Serve a read-only live view of a run file, following it while another process writes
    it. Returns the started server and the follower (stop both when done)."""
    _need_bokeh()
    from apt_daq.web.document import build
    from apt_daq.web.sources import FileFollower

    follower = FileFollower(path)
    follower.start()

    def make(doc: Any) -> None:
        build(doc, follower.snap, None, time_label="instrument time (s)")

    try:
        return LiveServer(make, parse_address(spec), token).start(), follower
    except BaseException:
        follower.stop()
        raise

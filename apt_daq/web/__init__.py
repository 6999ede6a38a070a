"""The live web view (Bokeh server): ``apt-daq run RUN.yaml --serve [HOST:]PORT``,
``apt-daq view RUN.h5 --serve [HOST:]PORT`` and ``apt-daq emulate CONFIG --serve [HOST:]PORT``.
See docs/live.md.

Needs the ``web`` extra (``pip install 'apt-daq[web]'``: Bokeh).
"""

from __future__ import annotations

from typing import Any

from apt_daq.errors import UserError
from apt_daq.web.server import Address, LiveServer, is_loopback, parse_address

__all__ = ["Address", "LiveServer", "is_loopback", "parse_address", "serve_emulator",
           "serve_file", "serve_session"]


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


def serve_emulator(emulator: Any, spec: str, token: str | None = None, config: Any = None
                   ) -> tuple[LiveServer, Any]:
    """Serve a read-only live view of a running ``apt_daq.sim.emulator.Emulator`` (its
    ``on_block`` hook is set). ``config``: the run YAML it was built from, for the spectrum's
    ranges (an instrument YAML has none). Returns the started server and the feed (close the
    server and stop the feed when the emulator has stopped)."""
    _need_bokeh()
    from apt_daq.web.document import build
    from apt_daq.web.sources import EmulatorFeed

    feed = EmulatorFeed(emulator, title=f"emulator: {_name(config)}",
                        ranges=_emulator_ranges(config)).start()

    def make(doc: Any) -> None:
        build(doc, feed.snap, None, poll=feed.poll, time_label="instrument time (s)")

    try:
        return LiveServer(make, parse_address(spec), token).start(), feed
    except BaseException:
        feed.stop()
        raise


def _name(config: Any) -> str:
    from pathlib import Path

    return Path(str(config)).stem if config else "leap"


def _emulator_ranges(config: Any) -> Any:
    from pathlib import Path

    if not config:
        return None
    try:
        from apt_daq.config import RunFile, compose_yaml, detect_model, load_run

        data, _ = compose_yaml(Path(str(config)))
        if detect_model(data if isinstance(data, dict) else {}) is not RunFile:
            return None
        from apt_daq.web.sources import _ranges_of

        return _ranges_of(load_run(config))
    except Exception:  # the emulator has checked its file; the spectrum goes without ranges
        return None

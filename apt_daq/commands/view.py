"""``apt-daq view RUN.h5 [--serve [HOST:]PORT]``: a read-only live web view of a run file,
following it while a run writes it (docs/live.md)."""

from __future__ import annotations

import argparse
import threading

#: apt_daq.web.server.DEFAULT_PORT, said here so that ``--help`` does not import the server
#: (tests/foundation/test_startup.py checks they agree)
DEFAULT_PORT = 5006


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="a read-only live web view of a run file (while it is "
                       "written or after)")
    p.add_argument("file", help="run file (.h5), finished or being written")
    p.add_argument("--serve", metavar="[HOST:]PORT", default=f"127.0.0.1:{DEFAULT_PORT}",
                   help=f"where to serve it (default 127.0.0.1:{DEFAULT_PORT}; port 0: any "
                   "free port; a host other than loopback needs the printed token)")
    p.set_defaults(func=_view)


def _view(args: argparse.Namespace) -> int:
    from apt_daq.web import serve_file

    server, follower = serve_file(args.file, args.serve)
    print(f"live view (read-only) of {args.file}: {server.url}", flush=True)
    print("Ctrl-C stops the view (not the run)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        follower.stop()
    return 0

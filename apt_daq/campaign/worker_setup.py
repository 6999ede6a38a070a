"""Preloaded by every worker process of a campaign's LocalCluster (dask's ``preload``).

A terminal's Ctrl-C goes to the whole process group: the workers are in it. Each died of it
with two tracebacks (~60 lines on stderr) while the campaign's own process cancelled the
points and closed the cluster, which stops them anyway. So a worker ignores SIGINT; the
campaign's process decides, and SIGTERM/SIGKILL from the cluster's close still end it.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


def dask_setup(worker: Any) -> None:
    """Ignore SIGINT in this worker process (its main thread: the only one that may)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)

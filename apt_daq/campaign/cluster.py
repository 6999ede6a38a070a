"""The dask cluster: a LocalCluster of one-thread workers, or an existing scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from apt_daq.errors import UserError

if TYPE_CHECKING:
    from distributed import Client


def worker_env() -> dict[str, str]:
    """Environment of every worker process: one thread per worker for numba, OpenMP and BLAS
    (the workers are the parallelism), and a shared numba cache so kernels compile once."""
    cache = os.environ.get("NUMBA_CACHE_DIR") or str(Path.cwd() / ".numba-cache")
    env = {"NUMBA_CACHE_DIR": cache, "MPLBACKEND": "Agg"}
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        env[var] = "1"
    return env


_ADDRESS = re.compile(r"(?:(?:tcp|tls)://)?(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):\d{1,5}")


def check_scheduler_address(address: str) -> None:
    """Refuse (one line) an address that is not ``[tcp://|tls://]HOST:PORT`` before any
    connection is tried (dask's own error for ``garbage`` is a traceback)."""
    m = _ADDRESS.fullmatch(address)
    port = int(address.rsplit(":", 1)[1]) if m else 0
    if not m or not 0 < port < 65536:
        raise UserError(f"--scheduler {address}: expected [tcp://]HOST:PORT, e.g. "
                        "tcp://10.0.0.5:8786 (the address `dask scheduler` prints)")


@contextlib.contextmanager
def connect(workers: int | None = None, scheduler: str | None = None,
            timeout_s: float = 30.0) -> Iterator[Client]:
    """A dask client: on ``scheduler`` (``tcp://HOST:PORT``) if given, else on a new
    LocalCluster of ``workers`` processes with one thread each. Closed on the way out."""
    from distributed import Client, LocalCluster

    if scheduler:
        check_scheduler_address(scheduler)
        try:
            client = Client(scheduler, timeout=timeout_s)
        except OSError as e:
            raise UserError(f"scheduler {scheduler}: cannot connect ({e})") from None
        except (ValueError, TypeError, MemoryError) as e:  # a reply that is not dask's: an
            # HTTP server's "HTTP/1.1" read as a frame length asked numpy for 3 EiB
            raise UserError(f"scheduler {scheduler}: the service there does not answer as a "
                            f"dask scheduler ({type(e).__name__})") from None
        try:
            try:
                client.wait_for_workers(1, timeout=timeout_s)
            except TimeoutError:
                raise UserError(f"scheduler {scheduler}: no workers after {timeout_s:g} s "
                                "(start some with `dask worker ADDRESS`)") from None
            yield client
        finally:
            client.close()
        return
    n = max(1, workers or os.cpu_count() or 1)
    quiet = logging.getLogger().getEffectiveLevel() > logging.DEBUG
    dlog = logging.getLogger("distributed")
    level = dlog.level
    if quiet:  # the scheduler runs in this process and logs every worker at INFO
        dlog.setLevel(logging.ERROR)
    # the scheduler's HTTP server (health, metrics) on a free loopback port, never 8787
    # the workers ignore SIGINT (worker_setup): a terminal's Ctrl-C reaches them too
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address="127.0.0.1:0",
                           silence_logs=logging.ERROR if quiet else False, env=worker_env(),
                           preload=["apt_daq.campaign.worker_setup"])
    client = Client(cluster)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()
        with contextlib.suppress(Exception):
            cluster.close()
        dlog.setLevel(level)

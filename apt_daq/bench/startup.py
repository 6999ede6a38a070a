"""Start-up: the wall time of short ``apt-daq`` commands as whole processes, beside a bare
``python -c "import numpy, h5py"`` timed the same way, interleaved with them, in the same run.

Each figure is the median of a few runs of a fresh interpreter (the entry point's own
``from apt_daq.cli import main; main()``), output to a pipe. The target (issue 22): ``--help``,
``info`` and ``config check`` within 0.3 s of the baseline; each note gives the difference.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from apt_daq.bench import Result, result

BASELINE = [sys.executable, "-c", "import numpy, h5py"]
ENTRY = [sys.executable, "-c", "import sys; from apt_daq.cli import main; sys.exit(main())"]


def _small_run(path: Path) -> Path:
    """A finished run file of 10 000 hits and a 100-row log, written without the simulator."""
    import numpy as np

    from apt_daq.hits import HIT_DTYPE
    from apt_daq.io.store import RunWriter

    n = 10_000
    hits = np.zeros(n, HIT_DTYPE)
    hits["pulse"] = np.arange(n) * 100
    hits["tof"], hits["v_dc"], hits["multiplicity"] = 500.0, 5000.0, 1
    with RunWriter(path, {"simulated": True, "instrument": {"name": "LEAP 5000 XS"}}) as w:
        w.append(hits=hits)
        w.finish("done")
    return path


def _wall_s(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])}: exit {p.returncode}: {p.stderr.decode()[-300:]}")
    return dt


def run(quick: bool = False) -> list[Result]:
    repeat = 3 if quick else 9
    out: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="apt-daq-bench-startup-") as d:
        small = _small_run(Path(d) / "small.h5")
        cases = {
            "start-up: apt-daq --help": ["--help"],
            "start-up: apt-daq info RUN.h5": ["info", str(small)],
            "start-up: apt-daq config check FILE": ["config", "check", "nmc811-cr-5pj"],
        }
        times: dict[str, list[float]] = {name: [] for name in ("baseline", *cases)}
        for cmd in ([BASELINE] + [ENTRY + a for a in cases.values()]):
            _wall_s(cmd)  # warm-up: page cache, .pyc files
        for _ in range(repeat):  # interleaved: noise falls on value and baseline alike
            times["baseline"].append(_wall_s(BASELINE))
            for name, args in cases.items():
                times[name].append(_wall_s(ENTRY + args))
        base = statistics.median(times["baseline"])
        for name in cases:
            v = statistics.median(times[name])
            out.append(result(name, v, "s", base,
                              f"process wall time, median of {repeat}; baseline python -c "
                              f"'import numpy, h5py'; {v - base:+.3f} s beside it (target <= "
                              "+0.3 s)"))
    return out

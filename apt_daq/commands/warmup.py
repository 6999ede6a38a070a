"""``apt-daq warmup``: compile the numba kernels a simulated run and its summary use, once,
into the numba cache (``make install`` runs it), so the first ``apt-daq run`` starts at once.

numba compiles a kernel the first time it is called and keeps the machine code in its cache
(``NUMBA_CACHE_DIR``; in a source checkout the CLI defaults it to ``.numba-cache/src-<digest of
the sources>``, as make and the tests do: :func:`apt_daq.shipped.default_numba_cache`). A cold cache costs ~45 s on the first run; :func:`cold_kernels` tells,
without compiling anything, whether that is about to happen (``apt-daq run`` then says so).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

#: what ``apt-daq run`` prints on stderr before a run that will compile
NOTICE = "compiling kernels (first run only, ~45 s)..."

#: kernels every run compiles (module: names); their cache index says whether it is warm
KERNELS: dict[str, tuple[str, ...]] = {
    "apt_daq.pipeline.process": ("fused_kernel", "records_kernel"),
    "apt_daq.pipeline.tof": ("mass_da",),
    "apt_daq.pipeline.reconstruction": ("bas_kernel",),
    "apt_daq.sim.physics": ("event_pulses_seeded",),
    "apt_daq.sim.detector": ("assemble_block",),
}
SIM_MODULES = frozenset({"apt_daq.sim.physics", "apt_daq.sim.detector"})


def run_config() -> Path:
    """The shipped run config a warm-up simulates."""
    from apt_daq.shipped import configs_dir

    return configs_dir() / "runs" / "nmc811-cr-5pj.yaml"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("warmup", help="compile the numba kernels into the cache (once; "
                       "make install runs it)")
    p.set_defaults(func=_warmup)


def cache_dir() -> str:
    return os.environ.get("NUMBA_CACHE_DIR") or "__pycache__ beside each module"


def cold_kernels(sim: bool = True) -> list[str]:
    """The kernels of :data:`KERNELS` (without the simulator's unless ``sim``) that the numba
    cache does not hold for this source, numba and Python: a look at each kernel's cache
    index, nothing compiled. A name that is not a cached kernel (renamed) is left out."""
    cold = []
    for module, names in KERNELS.items():
        if module in SIM_MODULES and not sim:
            continue
        try:
            m = importlib.import_module(module)
        except ImportError:
            continue
        for name in names:
            index = getattr(getattr(getattr(m, name, None), "_cache", None), "_cache_file", None)
            if index is None:
                continue
            try:
                warm = bool(index._load_index())  # {} if missing, stale or another version
            except Exception:
                warm = False
            if not warm:
                cold.append(f"{module}.{name}")
    return cold


def warm(out: Path) -> None:
    """Compile by doing what a first run does: a short simulated run and its summary."""
    from apt_daq.analysis.report import analyze_run
    from apt_daq.config import load_run
    from apt_daq.run import Session

    rf = load_run(run_config(), {"run.stop.ions": 2000})
    Session(rf, out=out, handle_signals=False).run()
    analyze_run(out)


def _warmup(args: argparse.Namespace) -> int:
    from apt_daq.errors import UserError

    if not cold_kernels():
        print(f"kernels already compiled (numba cache: {cache_dir()})")
        return 0
    if not run_config().is_file():
        raise UserError(f"{run_config()}: not found (apt-daq warmup runs from a source checkout)")
    print(NOTICE, file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="apt-daq-warmup-") as d:
        warm(Path(d) / "warmup.h5")
    left = cold_kernels()
    print(f"kernels compiled (numba cache: {cache_dir()})"
          + (f"; still not cached: {', '.join(left)}" if left else ""))
    return 0 if not left else 1

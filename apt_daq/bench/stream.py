"""Analysis of a large run, streamed: the composition/spectrum/ranging pass over the ion stream
of a 10^8-ion run file (10^7 with ``--quick``), beside a plain h5py read of the same hits in
the same chunks, each measured in a fresh process after start-up (imports and the numba cache
loaded, one chunk warmed), with that process's peak RSS. And ``apt-daq analyze`` of the same
file as a whole process (start-up and every pass: spectrum, ranges, reconstruction, ROI,
FDA, MRP, peaks, multi-hits), timed from outside with its peak RSS, on it and on a run of a
tenth of its ions: the marginal rate (the added ions over the added seconds, start-up and
fixed parts cancelled) beside the same for a whole python process that reads the same hits
with h5py in the same chunks.

The file is built synthetically with numpy (not the simulator): eight distinct 2^20-hit
blocks of NMC811-like ions (every isotopologue, RP ~ 2355, detector-wide positions, voltage
ramping) repeated with running pulse numbers, written through :class:`RunWriter` with a
stored calibration and range table, in a temporary folder deleted afterwards. It needs
~3.3 GB free (33 B per hit); with less free space it falls back to 10^7 ions and says so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from apt_daq.bench import Result, result

BLOCK = 1 << 20


def build_run(path: Path, n: int, seed: int = 0, calibrated: bool = True) -> None:
    """A run file of ``n`` hits (see module doc); ``calibrated=False`` stores no calibration,
    so an analysis fits one first (its pass 1)."""
    from apt_daq.bench.pipeline import IONS
    from apt_daq.config import InstrumentConfig
    from apt_daq.hits import HIT_DTYPE
    from apt_daq.io.store import RunWriter
    from apt_daq.isotopes import isotopologues, parse_ion
    from apt_daq.pipeline.corrections import Calibration
    from apt_daq.pipeline.ranging import ranges_for_ions
    from apt_daq.pipeline.tof import flight_time_ns
    from apt_daq.rangetable import table_to_meta

    inst = InstrumentConfig()
    rng = np.random.default_rng(seed)
    peaks = [(m, p) for ion in IONS for m, p in isotopologues(*parse_ion(ion))]
    mu = np.array([m for m, _ in peaks])
    w = np.array([p for _, p in peaks])
    blocks = []
    for b in range(8):
        h = np.zeros(BLOCK, HIT_DTYPE)
        m = mu[rng.choice(len(mu), BLOCK, p=w / w.sum())] * (1 + rng.normal(0, 1 / 2355, BLOCK))
        r = 38 * np.sqrt(rng.random(BLOCK))
        phi = rng.uniform(0, 2 * np.pi, BLOCK)
        h["det_x"], h["det_y"] = r * np.cos(phi), r * np.sin(phi)
        h["v_dc"] = 4000 + 500 * b + rng.uniform(0, 500, BLOCK)
        h["tof"] = flight_time_ns(m, h["v_dc"], inst.flight_path_mm, h["det_x"], h["det_y"],
                                  inst.t0_ns)  # fmt: skip
        h["laser_pj"] = 5.0
        h["multiplicity"] = 1
        h["pulse"] = np.cumsum(rng.geometric(0.01, BLOCK))
        blocks.append(h)
    cal = Calibration((0.998, 0.0005, -1e-5), (1.0, 1e-4, -1e-4, 2e-4, 0.0, 2e-4),
                      t0_ns=float(inst.t0_ns), flight_path_mm=float(inst.flight_path_mm),
                      source="bench")  # fmt: skip
    meta = {"instrument": inst.model_dump(mode="json"), "calibration": cal.as_dict(),
            "ranges": table_to_meta(ranges_for_ions(IONS))}  # fmt: skip
    if not calibrated:
        del meta["calibration"]
    with RunWriter(path, meta) as wr:
        pulse0 = 0
        for i, s in enumerate(range(0, n, BLOCK)):
            h = blocks[i % 8][: min(BLOCK, n - s)].copy()
            h["pulse"] += pulse0
            pulse0 = int(h["pulse"][-1])
            wr.append(hits=h)
        wr.finish("completed")


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB: VmHWM of /proc/self/status (reset by exec),
    else getrusage's ru_maxrss (which Linux carries over from the parent across fork and
    exec: a child started by a large bench would report the parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(path: str, what: str) -> None:
    """In a fresh process: warm up, then one timed pass; prints JSON (ions, wall and CPU
    seconds, peak RSS in MB)."""
    from apt_daq.analysis.composition import stream_composition
    from apt_daq.io.store import RunReader
    from apt_daq.pipeline.histogram import count_kernel, hist_kernel
    from apt_daq.pipeline.ions import ION_CHUNK, open_stream

    if what == "stream":
        with RunReader(path) as r:
            stream = open_stream(r, positions="none")
            for c in stream:  # warm up: the kernels' cache, the first chunk's buffers
                hist_kernel(c.mass[:10], 0.0, 100.0, np.zeros(10, np.int64))
                count_kernel(c.ion[:10], np.zeros(10, np.int64))
                break
            t0, c0 = time.perf_counter(), time.process_time()
            n = stream_composition(stream).ions
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    else:  # baseline: the same hits, the same chunks, read and dropped
        import h5py

        with h5py.File(path, "r", locking=False) as f:
            d = f["hits"]
            d[:ION_CHUNK]
            t0, c0 = time.perf_counter(), time.process_time()
            n = d.shape[0]
            for i in range(0, n, ION_CHUNK):
                d[i : i + ION_CHUNK]
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = peak_rss_mb()
    print(json.dumps({"ions": n, "wall": wall, "cpu": cpu, "rss_mb": rss}))


def _measure(path: Path, what: str) -> dict:
    code = "import sys; from apt_daq.bench.stream import _child; _child(sys.argv[1], sys.argv[2])"
    out = subprocess.run([sys.executable, "-c", code, str(path), what], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


_HWM = ("from pathlib import Path\n"
        "print([ln for ln in Path('/proc/self/status').read_text().splitlines()"
        " if ln.startswith('VmHWM')][0], file=sys.stderr)\n")
_WHOLE = {  # whole processes, timed from outside: start-up, imports and every pass included
    "analyze": "import sys\nfrom apt_daq.cli import main\n"
               "rc = main(['analyze', sys.argv[1], '--json', '--no-store'])\n" + _HWM
               + "sys.exit(rc)\n",
    "read": "import sys, h5py\nwith h5py.File(sys.argv[1], 'r', locking=False) as f:\n"
            "    d = f['hits']\n    for i in range(0, d.shape[0], 1 << 19):\n"
            "        d[i:i + (1 << 19)]\n" + _HWM,
}


def _whole_process(path: Path, what: str) -> dict:
    """Wall seconds of a whole ``apt-daq analyze --json --no-store`` process (``analyze``) or
    of a fresh python that reads the same hits in the same chunks with h5py (``read``), and
    its peak RSS (VmHWM, printed by the process itself at exit)."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _WHOLE[what], str(path)], check=True,
                         capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - t0
    hwm = [ln for ln in res.stderr.splitlines() if ln.startswith("VmHWM")][-1]
    return {"wall": wall, "rss_mb": int(hwm.split()[1]) / 1024}


def _whole_best(paths: dict[int, Path], rounds: int) -> dict[tuple[str, int], dict]:
    """Best (fastest) of ``rounds`` whole processes of each kind on each run, alternated (read
    and analyze, small run and large) so load on the machine hits all of them alike."""
    best: dict[tuple[str, int], dict] = {}
    for _ in range(rounds):
        for n, path in paths.items():
            for what in ("read", "analyze"):
                m = _whole_process(path, what)
                if (what, n) not in best or m["wall"] < best[(what, n)]["wall"]:
                    best[(what, n)] = m
    return best


def _analyze_results(paths: dict[int, Path], size_gb: float, note: str,
                     rounds: int = 1) -> list[Result]:
    """`apt-daq analyze` as a whole process on two runs of the same ions (``paths``: ions ->
    file), as a marginal rate: the added ions over the added seconds (start-up, imports and
    the fixed parts of the analysis cancel), beside the same for a whole python process
    that reads the same hits with h5py; the large run's whole-process times in the note."""
    best = _whole_best(paths, rounds)
    small, large = sorted(paths)

    def marginal(what: str) -> float:
        dt = best[(what, large)]["wall"] - best[(what, small)]["wall"]
        return (large - small) / dt if dt > 0 else float("inf")

    a, b = best[("analyze", large)], best[("read", large)]
    a0, b0 = best[("analyze", small)], best[("read", small)]
    return [
        result("apt-daq analyze, whole process, on a large run", marginal("analyze"), "ions/s",
               marginal("read"),
               f"marginal rate: ({large:.0e} - {small:.0e}) ions over the difference of two "
               f"whole processes' wall times ({large:.0e} ions, {size_gb:.1f} GB file{note}: "
               f"{a['wall']:.1f} s, {large / a['wall'] / 1e6:.1f} M ions/s with start-up; "
               f"{small:.0e} ions: {a0['wall']:.2f} s): every pass (spectrum, ranges, "
               f"reconstruction, ROI, FDA, MRP, peaks, multi-hits); baseline the same for a "
               f"whole python process reading the same hits with h5py in the same chunks "
               f"({b['wall']:.1f} s and {b0['wall']:.2f} s)"),
        result("apt-daq analyze peak RSS", a["rss_mb"], "MB", b["rss_mb"],
               f"the whole analyze process on {large:.0e} ions against the plain h5py read's "
               f"(on {small:.0e} ions: {a0['rss_mb']:.0f} MB; bounded: "
               "tests/analysis/test_bounded_memory.py)"),
    ]  # fmt: skip


def run(quick: bool = False) -> list[Result]:
    n = 10**7 if quick else 10**8
    need = 33 * n * 1.1 * 1.2  # and the tenth
    with tempfile.TemporaryDirectory(prefix="apt-daq-bench-stream-") as d:
        note = ""
        if shutil.disk_usage(d).free < need + (2 << 30):
            n, note = 10**7, f" (only {shutil.disk_usage(d).free / 1e9:.1f} GB free: 10^7 ions)"
        path = Path(d) / "big.h5"
        t0 = time.perf_counter()
        build_run(path, n)
        t_build = time.perf_counter() - t0
        small = Path(d) / "small.h5"  # the marginal rate's other size
        build_run(small, n // 10)
        best: dict[str, dict] = {}
        for _ in range(1 if n >= 10**8 else 2):  # alternated: load on the machine hits both
            for what in ("baseline", "stream"):
                m = _measure(path, what)
                if what not in best or m["wall"] < best[what]["wall"]:
                    best[what] = m
        size_gb = path.stat().st_size / 1e9
        whole = _analyze_results({n: path, n // 10: small}, size_gb, note,
                                 rounds=1 if n >= 10**8 else 2)
    s, b = best["stream"], best["baseline"]
    return [
        *whole,
        result("stream analysis of a large run (composition, spectrum, ranging)",
               s["ions"] / s["wall"], "ions/s", b["ions"] / b["wall"],
               f"{s['ions']:.0e} ions, {size_gb:.1f} GB file{note}; peak RSS {s['rss_mb']:.0f} MB "
               f"(baseline {b['rss_mb']:.0f} MB); CPU time {s['ions'] / s['cpu'] / 1e6:.1f} M "
               f"ions/s (baseline {b['ions'] / b['cpu'] / 1e6:.1f} M); baseline h5py read of "
               f"the same hits in the same chunks; file built in {t_build:.0f} s"),
        result("stream analysis peak RSS", s["rss_mb"], "MB", b["rss_mb"],
               "the streamed pass's process against the plain read's (bounded: the chunk, "
               "not the run)"),
    ]  # fmt: skip

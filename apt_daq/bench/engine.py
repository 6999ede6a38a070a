"""End-to-end acquisition throughput: the run engine on the simulator (sim + pipeline + store).

- ``engine ions/s (N-ion chunks)``: detected ions per second of wall time of a settled
  simulated run (Cr-coated NMC811, 5 pJ, 0.5 %, started at its operating voltage, 1e6 ions
  per run after a 20k-ion warm-up; counted from the end of the first block, so without the
  run's fixed set-up, which the note gives with it), at ~5k ions per DLD chunk (1e6 pulses)
  and ~50k (1e7 pulses, 262144 records). The engine uses the machine's two cores: the
  simulated DLD fires the next chunk on its own thread while the engine builds and stores the
  last one, and the virtual LEAP detects and assembles each sub-block on a second thread while
  it generates the next one's events (numba kernels without the GIL). Baseline: the same run
  with the chunk/store overlap switched off (``SimDld.arm`` a no-op). Best of 3 each (noise
  only ever adds time); the note gives the CPU seconds, which threads do not reduce.
- ``engine 1e10 pulses``: CPU seconds the engine's instrument model spends on 10^10 pulses of
  empty blocks (field off), beside one simpy timeout per pulse (scaled).
- ``engine peak RSS``: peak resident memory of a run 10x longer than a short one, beside the
  short one (each in a fresh process): flat in run length when the two agree.
- ``apt-daq run ions/s (whole process)``: what a user waits for. ``apt-daq run`` of the
  shipped default config (sim backends, default readout, the end-of-run summary included) timed
  as a subprocess at two ion counts (1M and 6M; --quick 0.2M and 1.2M); the marginal rate
  (difference of ions / difference of wall time) leaves out start-up, ramp-up and the fixed
  part of the summary. Best of 2 (--quick: 1). Baseline: the fused pipeline kernel on one
  core in the same bench run (hits/s), the machine's speed at the same moment; the note gives
  the children's CPU seconds, which show how loaded the machine was.
- ``apt-daq run: its file's bytes written plainly``: the ceiling the file system sets. The
  run stores ~130 B an ion, and on a VM the page cache may take fresh pages at a few hundred
  MB/s: the bytes the large run added over the small one are written to a plain file in the
  same folder right after each large run (8 MiB pieces, no HDF5, no engine), as ions/s;
  baseline: the run's marginal rate. A run near this figure waits on the disk, not on the
  engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import simpy

from apt_daq.bench import Result, result
from apt_daq.shipped import configs_dir

RUN = configs_dir() / "runs" / "nmc811-cr-5pj.yaml"
SETTLED_V = 3150.0  # the run's operating voltage at 0.5 % (found by the feedback)


def _overrides(ions: int, chunk_pulses: int, max_records: int) -> dict:
    return {"run.stop.ions": ions, "run.start_voltage_v": SETTLED_V,
            "run.chunk_pulses": chunk_pulses, "drivers.dld.max_chunk_records": max_records}


def _session_run(path: Path, ions: int, chunk_pulses: int, max_records: int,
                 overlap: bool = True) -> tuple[float, float, float]:
    """(wall s, CPU s, settled ions/s) of one run: settled = from the end of the first block to
    the end of the run (no connecting, file creation or first-block set-up); ``overlap=False``
    fires every chunk on the engine's thread."""
    from apt_daq.config import load_run
    from apt_daq.drivers.sim_backends import SimDld
    from apt_daq.run import Session

    cfg = load_run(RUN, _overrides(ions, chunk_pulses, max_records))
    first: list[tuple[float, int]] = []

    def on_block(_session: Session, block: dict) -> None:
        if not first:
            first.append((time.perf_counter(), block["ions"]))

    arm = SimDld.arm
    if not overlap:
        SimDld.arm = lambda self: None  # type: ignore[method-assign]
    try:
        t, c = time.perf_counter(), time.process_time()
        res = Session(cfg, out=path, overwrite=True, on_block=on_block).run()
        t_end = time.perf_counter()
        settled = (res.ions - first[0][1]) / (t_end - first[0][0])
        return t_end - t, time.process_time() - c, settled
    finally:
        SimDld.arm = arm  # type: ignore[method-assign]


def _count(path: Path) -> int:
    from apt_daq.io.store import RunReader

    with RunReader(path) as r:
        return r.count("hits")


def _rss_mb(ions: int) -> float:
    """Peak RSS (MB) of a fresh process running ``ions`` ions end to end: VmHWM of the process
    (``ru_maxrss`` survives exec on Linux and would report the parent's peak)."""
    code = (
        "import json, resource, sys, tempfile\n"
        "from apt_daq.bench.engine import _session_run\n"
        "from pathlib import Path\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        f"    _session_run(Path(d) / 'rss.h5', {ions}, 10_000_000, 262144)\n"
        "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')]\n"
        "kb = int(hwm[0].split()[1]) if hwm else "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps(kb / 1024))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def run(quick: bool = False) -> list[Result]:
    out: list[Result] = []
    ions = 200_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        _session_run(tmp / "warm.h5", 20_000, 1_000_000, 65536)  # compile / warm caches
        for label, chunk, recs in (("5k", 1_000_000, 65536), ("50k", 10_000_000, 262144)):
            best: dict[bool, tuple[float, float, float]] = {}
            for _ in range(3):
                for overlap in (True, False):
                    w, c, settled = _session_run(tmp / "run.h5", ions, chunk, recs, overlap)
                    if overlap not in best or settled > best[overlap][2]:
                        best[overlap] = (w, c, settled)
            n = _count(tmp / "run.h5")
            per_chunk = n / max(1, -(-ions // max(1, int(chunk * 0.0047))))
            (w2, c2, s2), (w1, c1, s1) = best[True], best[False]
            out.append(result(
                f"engine ions/s ({label}-ion chunks)", s2, "detected ions/s (wall, 2 cores)",
                s1, f"sim + pipeline + HDF5 store, settled (after the first block), {n} ions, "
                f"~{per_chunk:.0f} per chunk, vs the same run with the chunk/store overlap off; "
                f"whole run incl. set-up {n / w2 / 1e6:.2f} vs {n / w1 / 1e6:.2f} M/s, CPU "
                f"{c2:.2f} vs {c1:.2f} s"))

    # empty blocks: the instrument model's cost of 1e10 pulses with the field off
    from apt_daq.bench.sim import _leap

    idle = _leap()
    idle.hv.set_output(False)
    n_blocks = 100 if quick else 1000
    t = time.process_time()
    for _ in range(n_blocks):
        idle.advance(10_000_000)
    per_1e10 = (time.process_time() - t) * 1e10 / (1e7 * n_blocks)
    env = simpy.Environment()

    def per_pulse(env: simpy.Environment, n: int):
        for _ in range(n):
            yield env.timeout(1e-5)

    n_p = 100_000 if quick else 1_000_000
    env.process(per_pulse(env, n_p))
    t = time.process_time()
    env.run()
    base = (time.process_time() - t) * 1e10 / n_p
    out.append(result("engine 1e10 pulses", per_1e10, "s CPU", base,
                      "empty blocks of 1e7 pulses vs one simpy event per pulse (scaled)"))

    short = 100_000 if quick else 300_000
    rss_s, rss_l = _rss_mb(short), _rss_mb(10 * short)
    out.append(result("engine peak RSS", rss_l, "MB", rss_s,
                      f"{10 * short} ions vs {short} ions (50k-ion chunks), fresh processes"))
    out += whole_process(quick)
    return out


def _cli_run_s(ions: int, path: Path) -> tuple[float, float]:
    """(wall s, children's CPU s) of ``apt-daq run`` of the default config, summary included."""
    import resource

    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "apt_daq.cli", "run", str(RUN), "--ions", str(ions),
                    "-o", str(path), "--overwrite", "--quiet"], check=True,
                   capture_output=True, text=True)
    wall = time.perf_counter() - t
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)


def _kernel_hits_per_s() -> float:
    """The fused decode/m-n/ranging kernel on one core, hits/s (the same-run baseline)."""
    from apt_daq.bench.pipeline import synthetic_raw
    from apt_daq.config import load_run
    from apt_daq.pipeline import decode_chunk

    inst = load_run(RUN).instrument
    raw = synthetic_raw(1_000_000, inst)
    decode_chunk(raw[:1000], inst, None)  # compile / load cache
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        decode_chunk(raw, inst, None)
        best = min(best, time.perf_counter() - t)
    return len(raw) / best


def _plain_write_s(path: Path, nbytes: int) -> float:
    """Wall s of writing ``nbytes`` to a new file ``path`` in 8 MiB pieces (no fsync): what the
    file system and the page cache take, without HDF5 or the engine."""
    import numpy as np

    piece = np.ones(8 << 20, np.uint8)  # touched: its pages are not the ones being measured
    t = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(nbytes // len(piece)):
            f.write(piece)
        f.write(piece[:nbytes % len(piece)])
    wall = time.perf_counter() - t
    path.unlink()
    return wall


def whole_process(quick: bool = False) -> list[Result]:
    """``apt-daq run`` as a whole process: marginal detected ions/s (see module doc), and the
    same bytes written plainly to the same folder right after each large run."""
    small, large = (200_000, 1_200_000) if quick else (1_000_000, 6_000_000)
    best: dict[int, tuple[float, float]] = {}
    sizes: dict[int, int] = {}
    plain = float("inf")
    with tempfile.TemporaryDirectory() as d:
        _cli_run_s(20_000, Path(d) / "warm.h5")
        for _ in range(1 if quick else 2):
            for n in (small, large):
                w, c = _cli_run_s(n, Path(d) / "run.h5")
                sizes[n] = (Path(d) / "run.h5").stat().st_size
                if n not in best or w < best[n][0]:
                    best[n] = (w, c)
            plain = min(plain, _plain_write_s(Path(d) / "plain.bin", sizes[large] - sizes[small]))
    (w1, c1), (w2, c2) = best[small], best[large]
    rate = (large - small) / max(w2 - w1, 1e-9)
    per_ion = (sizes[large] - sizes[small]) / (large - small)
    return [
        result("apt-daq run ions/s (whole process)", rate, "detected ions/s (marginal)",
               _kernel_hits_per_s(),
               f"apt-daq run of the shipped default (sim, summary included), {small} and "
               f"{large} ions: {w1:.2f} and {w2:.2f} s wall, {c1:.2f} and {c2:.2f} s CPU "
               f"(marginal {(large - small) / max(c2 - c1, 1e-9) / 1e6:.2f} M ions per CPU "
               "s); baseline: the fused pipeline kernel, one core, hits/s"),
        result("apt-daq run: its file's bytes written plainly", (large - small) / plain,
               "ions/s equivalent", rate,
               f"the two runs' difference in file size ({per_ion:.0f} B an ion) written to a "
               f"plain file in the same folder in 8 MiB pieces, best of "
               f"{1 if quick else 2}: {per_ion * (large - small) / plain / 1e6:.0f} MB/s. The "
               "ceiling the page cache and the file system set for the run at the same "
               "moment; baseline: the run's marginal rate above"),
    ]

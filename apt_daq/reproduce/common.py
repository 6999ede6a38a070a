"""Shared machinery of the paper reproduction: simulated runs (cached, in a small process
pool), their analysis through the same pipeline a user runs, and small statistics helpers.

Runs go to ``<out>/runs/<key>.h5`` with a ``<key>.json`` sidecar holding the run file and the
overrides; a later call with the same inputs reuses the file instead of simulating again.
"""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from apt_daq.reproduce.spec import (  # re-exported: the figures take them from here
    RECON_FIELD,
    RUNS,
    SPECIMENS,
    RunOutcome,
    RunSpec,
    code_digest,
    run_field,
)
from apt_daq.shipped import default_numba_cache

__all__ = ["RECON_FIELD", "RUNS", "SPECIMENS", "RunOutcome", "RunSpec", "code_digest", "run_field"]



@dataclass
class Context:
    """Where and how big: output folder, detected ions per run (or per schedule step), seed
    offset, worker processes. ``null``: every run is the physics-free stream of
    :mod:`apt_daq.reproduce.null` instead of a simulation (the same figure code, the same
    criteria); ``null_model``: :func:`apt_daq.reproduce.reproduce` also evaluates the rows on
    it (a second pass in ``out/null``)."""

    out: Path
    ions: int = 200_000
    seed: int = 0
    workers: int = 2
    log: Callable[[str], None] = field(default=lambda s: None)
    null: bool = False
    null_model: bool = True
    null_specs: dict[str, RunSpec] = field(default_factory=dict, repr=False)
    profile_ions: int | None = None  # Fig. 3's 5 pJ step (its depth profile); None: ions

    @property
    def runs_dir(self) -> Path:
        d = self.out / "runs"
        d.mkdir(parents=True, exist_ok=True)
        return d


def _simulate(args: tuple) -> dict:
    # (spec, out, digest): the digest is the caller's, so that a file edited while the run
    # simulates cannot make the sidecar disagree with the cache lookup that asked for it
    spec, out, *rest = args
    digest = rest[0] if rest else spec.digest()
    default_numba_cache()
    from apt_daq.run import Session

    session = Session.from_yaml(RUNS / spec.run_file, dict(spec.overrides), out=out,
                                overwrite=True)
    res = session.run()
    if session.signal is not None:  # the run ended on SIGTERM, SIGINT...: so does the caller,
        signal.raise_signal(session.signal)  # through the handler the run gave back
    info = {"digest": digest, "run_file": spec.run_file,
            "overrides": [list(o) for o in spec.overrides], "state": res.state.name.lower(),
            "reason": res.reason, "ions": int(res.ions)}
    Path(out).with_suffix(".json").write_text(json.dumps(info, default=str))
    if spec.outcome_only:
        Path(out).unlink(missing_ok=True)
    return info


def pmap(func: Callable[[Any], Any], items: list[Any], workers: int) -> list[Any]:
    """``[func(i) for i in items]`` on ``workers`` processes (spawned: numba-safe); in order."""
    if workers <= 1 or len(items) <= 1:
        return [func(i) for i in items]
    # an executor, not a Pool: a worker that dies raises BrokenProcessPool instead of being
    # respawned forever (e.g. a __main__ without the ``if __name__ == "__main__"`` guard)
    ex = ProcessPoolExecutor(min(workers, len(items)), mp_context=get_context("spawn"))
    try:
        return list(ex.map(func, items))
    except BaseException:  # a signal (Terminated, KeyboardInterrupt) or a failed item: no
        _stop_workers(ex)  # worker goes on with its run, and no queued item starts
        raise
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


#: how long a worker has to end its run (HV and laser off, its file closed) after SIGTERM
WORKER_GRACE_S = 20.0


def _stop_workers(ex: ProcessPoolExecutor) -> None:
    """Cancel what has not started, SIGTERM the workers (each run aborts at its next block
    and closes its file), and SIGKILL any that outlive :data:`WORKER_GRACE_S`."""
    import multiprocessing
    import time

    ex.shutdown(wait=False, cancel_futures=True)
    workers = multiprocessing.active_children()  # this process's only children: the pool's
    for p in workers:
        p.terminate()
    end = time.monotonic() + WORKER_GRACE_S
    for p in workers:
        p.join(max(0.0, end - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(5.0)


def simulate(ctx: Context, specs: Iterable[RunSpec]) -> dict[str, RunOutcome]:
    """Run (or reuse) every spec; returns outcomes by key. With ``ctx.null`` nothing is
    simulated: every run completes (the null model has no fracture) with its set ion count."""
    specs = list(specs)
    if ctx.null:
        from apt_daq.reproduce.null import null_outcome

        outs = {}
        for s in specs:
            outs[s.key] = null_outcome(s, ctx.runs_dir / f"{s.key}.null")
            ctx.null_specs[str(outs[s.key].path)] = s
        return outs
    todo, done, digests = [], {}, {}
    for s in specs:
        path = ctx.runs_dir / f"{s.key}.h5"
        side = path.with_suffix(".json")
        digests[s.key] = s.digest()
        if side.exists() and (path.exists() or s.outcome_only):
            info = json.loads(side.read_text())
            if info.get("digest") == digests[s.key] and info.get("state") in ("done", "failed"):
                done[s.key] = info
                continue
        todo.append(s)
    if todo:
        ctx.log(f"simulating {len(todo)} run(s): {', '.join(s.key for s in todo)}")
        jobs = [(s, str(ctx.runs_dir / f"{s.key}.h5"), digests[s.key]) for s in todo]
        for s, info in zip(todo, pmap(_simulate, jobs, ctx.workers), strict=True):
            done[s.key] = info
    return {s.key: RunOutcome(s.key, ctx.runs_dir / f"{s.key}.h5", done[s.key]["state"],
                              done[s.key]["reason"], int(done[s.key]["ions"])) for s in specs}


# ------------------------------------------------------------------------------ analysis
def _analyze(args: tuple[str, str | None, float | None, bool, bool]):
    path, roi, laser_pj, background, settled = args
    default_numba_cache()
    from apt_daq.analysis.report import analyze, laser_pj_select, settled_select

    sel = laser_pj_select(laser_pj) if laser_pj is not None else None
    if settled:  # without the ramp-up (of the run's first step)
        st = settled_select(path)
        sel = st if sel is None else (lambda h, a=sel, b=st: a(h) & b(h))
    return analyze(path, roi=roi, select=sel, subtract_background=background)


def specimen_seed(ctx: Context, k: int) -> int:
    """The run seed of the k-th specimen (k = 0, 1, ...) tried at seed offset ctx.seed: seed + 1
    first, then 1000 (seed + 1) + k, so that the specimens tried on different seed offsets are
    different specimens (with seed + 1 + k, offsets 1-7 all landed on one long-lived uncoated
    specimen and reported the same uncoated Fig. 4 dataset)."""
    return ctx.seed + 1 if k == 0 else 1000 * (ctx.seed + 1) + k


def first_specimen(ctx: Context, spec_for: Callable[[int], RunSpec],
                   usable: Callable[[RunOutcome], bool], tries: int
                   ) -> tuple[RunOutcome, list[RunOutcome]]:
    """Specimens of seeds :func:`specimen_seed` (k = 0, 1, ...) run in turn until one is
    ``usable`` (most uncoated specimens break early): that one, or the one with the most ions;
    and all tried."""
    found, tried = usable_specimens(ctx, spec_for, usable, 1, tries)
    return found[0], tried


def usable_specimens(ctx: Context, spec_for: Callable[[int], RunSpec],
                     usable: Callable[[RunOutcome], bool], want: int, tries: int
                     ) -> tuple[list[RunOutcome], list[RunOutcome]]:
    """As :func:`first_specimen`, until ``want`` are usable (at most ``tries`` a specimen
    wanted): the usable ones in order (never empty: else the one with the most ions), and all
    tried."""
    tried: list[RunOutcome] = []
    found: list[RunOutcome] = []
    for k in range(tries * want):
        spec = spec_for(specimen_seed(ctx, k))
        tried.append(simulate(ctx, [spec])[spec.key])
        if usable(tried[-1]):
            found.append(tried[-1])
            if len(found) == want:
                break
    return found or [max(tried, key=lambda o: o.ions)], tried


def analyze_many(ctx: Context, jobs: list[tuple]) -> list:
    """:func:`apt_daq.analysis.report.analyze` of (run path, roi or None, laser_pj or None[,
    subtract_background[, settled]]) jobs, in the pool. ``laser_pj`` picks one step of a
    schedule; ``subtract_background`` removes the flat local background under each range from
    the composition (needed where a species is absent and only background lands in its
    ranges); ``settled`` leaves out the ramp-up before the detection rate reached half its
    target (:func:`~apt_daq.analysis.report.settled_select`)."""
    args = [(str(j[0]), j[1], j[2], bool(j[3]) if len(j) > 3 else False,
             bool(j[4]) if len(j) > 4 else False) for j in jobs]
    if ctx.null:
        from apt_daq.reproduce.null import analyze_null

        return [analyze_null(ctx.null_specs[a[0]], *a[1:]) for a in args]
    return pmap(_analyze, args, ctx.workers)


def has_step(ctx: Context, path: Path, laser_pj: float) -> bool:
    """Whether the run at ``path`` acquired ions at ``laser_pj`` (a schedule step it reached)."""
    if ctx.null:
        from apt_daq.reproduce.null import null_steps

        return laser_pj in null_steps(ctx.null_specs[str(path)])
    from apt_daq.io.store import RunReader

    with RunReader(path) as r:
        log = r.read("log")
    return bool(np.any((np.abs(log["laser_pj"] - laser_pj) < 0.01) & (log["ions"] > 0)
                       & (log["rate"] > 0)))


# ------------------------------------------------------------------------------ statistics
def spearman(x: Iterable[float], y: Iterable[float]) -> float:
    """Spearman rank correlation (ties get average ranks); nan below 3 points or if either
    side is constant."""
    xa, ya = np.asarray(list(x), float), np.asarray(list(y), float)
    if len(xa) < 3 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return float("nan")
    # a rank correlation is a ratio of small integers: round off the float noise, so that one
    # adjacent swap of four points is 0.8, not 0.7999999999999999
    return round(float(np.corrcoef(_ranks(xa), _ranks(ya))[0, 1]), 12)


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, tied values sharing their mean rank."""
    r = np.empty(len(a))
    r[np.argsort(a, kind="stable")] = np.arange(len(a))
    _, inv = np.unique(a, return_inverse=True)
    return (np.bincount(inv, r) / np.bincount(inv))[inv]


def ratio(summary: dict, key: str) -> float:
    return float(summary["ratios"].get(key, math.nan))


def ratio_err(summary: dict, key: str) -> float:
    return float(summary["ratio_errors"].get(key, math.nan))


def atom_fraction_in(res, elements: list[str], of: list[str]) -> float:
    """sum(elements) / sum(of) in atoms from a RunAnalysis's composition."""
    atoms = res.composition.atoms
    den = sum(atoms.get(e, 0.0) for e in of)
    return sum(atoms.get(e, 0.0) for e in elements) / den if den > 0 else math.nan

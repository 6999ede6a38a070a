"""Reproduction of the seed paper (Singh et al. 2023) in simulation.

One module per figure (``fig1`` ... ``fig7``, ``figS1``), each with
``reproduce(ctx: Context) -> (rows: list[Row], pngs: list[Path])``: it simulates the runs it
needs (cached in ``ctx.out / "runs"``), analyses them with :func:`apt_daq.analysis.report.analyze`
(the same pipeline a user runs), writes a PNG in the paper's layout and returns the table rows
(quantity, paper value, simulated value, tolerance, pass, provenance). ``paper.py`` holds the
paper's numbers with their sources.

Every figure is then reproduced a second time on the physics-free null model
(:mod:`apt_daq.reproduce.null`, in ``ctx.out / "null"``): the same code and criteria on a
stream without atom-probe physics; ``Row.null_model`` says whether it passes each row too.

>>> from apt_daq.reproduce import Context, reproduce
>>> rows, pngs = reproduce(["4"], Context(Path("out"), ions=50_000))
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from apt_daq.reproduce.common import Context
from apt_daq.reproduce.table import Row, markdown

FIGURES = ("1", "2", "3", "4", "5", "6", "7", "S1")


def reproduce(figures: list[str], ctx: Context) -> tuple[list[Row], list[Path]]:
    """Reproduce ``figures`` (names from :data:`FIGURES`); writes ``table.md`` and
    ``table.json`` in ``ctx.out`` and returns (rows, PNG paths)."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    pngs: list[Path] = []
    for f in figures:
        if f not in FIGURES:
            raise ValueError(f"unknown figure {f!r}; expected one of {', '.join(FIGURES)}")
        mod = importlib.import_module(f"apt_daq.reproduce.fig{f}")
        ctx.log(f"figure {f} ...")
        r, p = mod.reproduce(ctx)
        if ctx.null_model and not ctx.null:
            ctx.log(f"figure {f}: null model ...")
            null_rows(r, mod.reproduce(null_context(ctx))[0])
        rows += r
        pngs += p
    (ctx.out / "table.md").write_text(markdown(rows) + "\n")
    (ctx.out / "table.json").write_text(json.dumps([r.as_dict() for r in rows], indent=1))
    return rows, pngs


def null_context(ctx: Context) -> Context:
    """The context of the null-model pass: ``ctx.out / "null"``, in-process."""
    return Context(ctx.out / "null", ions=ctx.ions, seed=ctx.seed, workers=1, log=ctx.log,
                   null=True, null_model=False, profile_ions=ctx.profile_ions)


def null_rows(rows: list[Row], null: list[Row]) -> None:
    """Set ``null_model`` (and ``null_simulated``) of ``rows`` from the null model's rows of the
    same figure (the same code: the same rows in the same order)."""
    if [r.figure for r in rows] != [r.figure for r in null]:
        raise RuntimeError("the null model's rows do not match the simulation's: "
                           f"{[r.quantity for r in rows]} vs {[r.quantity for r in null]}")
    for r, n in zip(rows, null, strict=True):
        r.null_model = n.passed
        r.null_simulated = n.simulated


__all__ = ["FIGURES", "Context", "Row", "null_context", "null_rows", "reproduce"]

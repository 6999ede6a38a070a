"""Reproduction of the seed paper (Singh et al. 2023) in simulation.

One module per figure (``fig1`` ... ``fig7``, ``figS1``), each with
``reproduce(ctx: Context) -> (rows: list[Row], pngs: list[Path])``: it simulates the runs it
needs (cached in ``ctx.out / "runs"``), analyses them with :func:`apt_daq.analysis.report.analyze`
(the same pipeline a user runs), writes a PNG in the paper's layout and returns the table rows
(quantity, paper value, simulated value, tolerance, pass). ``paper.py`` holds the paper's
numbers with their sources.

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
        rows += r
        pngs += p
    (ctx.out / "table.md").write_text(markdown(rows) + "\n")
    (ctx.out / "table.json").write_text(json.dumps([r.as_dict() for r in rows], indent=1))
    return rows, pngs


__all__ = ["FIGURES", "Context", "Row", "reproduce"]

"""The side-by-side table: quantity, paper value, simulated value, tolerance, pass/fail."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Row:
    """One compared quantity. ``paper`` is the paper's value or statement, ``simulated`` the
    measured one (through the pipeline), ``tolerance`` the acceptance rule in words."""

    figure: str
    quantity: str
    paper: str
    simulated: str
    tolerance: str
    passed: bool
    source: str = ""
    value: float | None = None  # the simulated number, for JSON consumers

    def __post_init__(self) -> None:
        self.passed = bool(self.passed)  # numpy bools are not JSON
        if self.value is not None:
            self.value = float(self.value)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["value"] is not None and not math.isfinite(d["value"]):
            d["value"] = None
        return d


def fmt(v: float, digits: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def fmt_pm(v: float, e: float, digits: int = 3) -> str:
    if e is None or not math.isfinite(e):
        return fmt(v, digits)
    return f"{fmt(v, digits)} +- {fmt(e, 2)}"


def markdown(rows: list[Row]) -> str:
    """A Markdown table of the rows."""
    out = ["| fig | quantity | paper | simulated | tolerance | pass |",
           "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cells = [r.figure, r.quantity, r.paper, r.simulated, r.tolerance,
                 "yes" if r.passed else "**NO**"]
        out.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(out)


def text(rows: list[Row]) -> str:
    """A plain fixed-width table for the terminal."""
    head = ("fig", "quantity", "paper", "simulated", "tolerance", "pass")
    data = [(r.figure, r.quantity, r.paper, r.simulated, r.tolerance,
             "PASS" if r.passed else "FAIL") for r in rows]
    w = [min(48, max(len(str(x[i])) for x in [head, *data])) for i in range(6)]
    lines = ["  ".join(str(c)[: w[i]].ljust(w[i]) for i, c in enumerate(head))]
    for d in data:
        lines.append("  ".join(str(c)[: w[i]].ljust(w[i]) for i, c in enumerate(d)))
    return "\n".join(lines)

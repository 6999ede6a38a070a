"""The side-by-side table: quantity, paper value, simulated value, tolerance, pass/fail, the
row's provenance and whether a physics-free null model passes it too.

Provenance (``Row.provenance``, a label and what it rests on), derived by
:mod:`apt_daq.reproduce.provenance` from its declared parameter -> calibrated-on mapping:

- ``by construction``: the simulated value follows from the configuration alone (a shell that
  is configured is found at the rim; a grain configured without Ni shows no Ni peak);
- ``calibrated``: a parameter the row depends on was fitted to this row or to data of one of
  its conditions (material, laser energy); the row shows the calibration holds, not that the
  physics predicts it;
- ``predicted``: none of them was.

``Row.null_model``: True/False when the same criterion was evaluated on the physics-free
stream of :mod:`apt_daq.reproduce.null` (None: not evaluated).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

PROVENANCE = ("by construction", "calibrated", "predicted")


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
    provenance: str = ""  # "by construction", "calibrated: ..." or "predicted: ..."
    null_model: bool | None = None  # does the physics-free null model pass it too?
    null_simulated: str = ""  # ... and what it gives

    def __post_init__(self) -> None:
        self.passed = bool(self.passed)  # numpy bools are not JSON
        if self.provenance and self.label not in PROVENANCE:
            raise ValueError(f"provenance {self.provenance!r}: expected one of {PROVENANCE}")
        if self.value is not None:
            self.value = float(self.value)

    @property
    def label(self) -> str:
        """The provenance label without its note: 'by construction', 'calibrated', ..."""
        return self.provenance.split(":", 1)[0].strip()

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


def _null(r: Row) -> str:
    return "-" if r.null_model is None else ("passes" if r.null_model else "fails")


def markdown(rows: list[Row]) -> str:
    """A Markdown table of the rows, and a summary line by provenance and null model."""
    out = ["| fig | quantity | paper | simulated | tolerance | pass | provenance | null model |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cells = [r.figure, r.quantity, r.paper, r.simulated, r.tolerance,
                 "yes" if r.passed else "**NO**", r.provenance or "-",
                 _null(r) + (f" ({r.null_simulated})" if r.null_simulated else "")]
        out.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(out) + "\n\n" + summary(rows)


def summary(rows: list[Row]) -> str:
    """'N/M rows pass; by provenance ...; the null model passes K': one paragraph."""
    n_pass = sum(r.passed for r in rows)
    parts = []
    for lab in PROVENANCE:
        sel = [r for r in rows if r.label == lab]
        if sel:
            parts.append(f"{lab} {sum(r.passed for r in sel)}/{len(sel)}")
    out = f"{n_pass}/{len(rows)} rows pass ({', '.join(parts) or 'no provenance'})."
    evaluated = [r for r in rows if r.null_model is not None]
    if evaluated:
        k = sum(bool(r.null_model) for r in evaluated)
        out += (f" The physics-free null model passes {k}/{len(evaluated)}: "
                + ", ".join(f"{lab} {sum(bool(r.null_model) for r in evaluated if r.label == lab)}"
                            for lab in PROVENANCE) + ".")
    return out


def text(rows: list[Row]) -> str:
    """A plain fixed-width table for the terminal."""
    head = ("fig", "quantity", "paper", "simulated", "tolerance", "pass", "provenance", "null")
    data = [(r.figure, r.quantity, r.paper, r.simulated, r.tolerance,
             "PASS" if r.passed else "FAIL", r.label or "-", _null(r)) for r in rows]
    w = [min(48, max(len(str(x[i])) for x in [head, *data])) for i in range(len(head))]
    lines = ["  ".join(str(c)[: w[i]].ljust(w[i]) for i, c in enumerate(head))]
    for d in data:
        lines.append("  ".join(str(c)[: w[i]].ljust(w[i]) for i, c in enumerate(d)))
    return "\n".join(lines) + "\n" + summary(rows)

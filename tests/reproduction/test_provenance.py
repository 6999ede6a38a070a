"""The provenance column is derived from apt_daq/reproduce/provenance.py's declared parameter ->
calibrated-on mapping (fast: no simulation).

A row may be labelled ``predicted`` only if no parameter its compared quantity depends on was
fitted to that row or to data of one of the row's conditions (material and laser energy); the
figures take their labels from the mapping only, never from a literal string.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import apt_daq.reproduce as rp
from apt_daq.reproduce import provenance as pv
from apt_daq.reproduce.paper import V
from apt_daq.reproduce.table import Row

ROOT = Path(__file__).resolve().parents[2]
FIGURE_FILES = sorted(Path(rp.__file__).parent.glob("fig*.py"))


def _provenance_args() -> dict[str, list[ast.expr]]:
    """File name -> the ``provenance=`` keyword values of every call in it."""
    out: dict[str, list[ast.expr]] = {}
    for f in FIGURE_FILES:
        calls = [n for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.Call)]
        out[f.name] = [k.value for c in calls for k in c.keywords if k.arg == "provenance"]
    return out


def test_no_predicted_row_uses_a_parameter_calibrated_on_it() -> None:
    # checked from the declarations directly, not through label()
    for row, deps in pv.ROWS.items():
        if pv.label(row) != "predicted":
            continue
        for name in deps.params:
            p = pv.PARAMETERS[name]
            assert row not in p.fitted_to, (row, name)
            assert not set(p.on) & set(deps.on), (row, name, set(p.on) & set(deps.on))


def test_rule_on_a_toy_mapping(monkeypatch) -> None:
    params = {"a": pv.Param("1", "x: y", ("r1",), ("m@5",)),
              "b": pv.Param("2", "x: y", ("r9",), ("m@10",))}
    rows = {"r1": pv.RowDeps(("m@20",), ("a",)),  # fitted to it
            "r2": pv.RowDeps(("m@5", "m@20"), ("a",)),  # fitted on one of its conditions
            "r3": pv.RowDeps(("m@20",), ("a", "b")),  # depends only on others' data
            "r4": pv.RowDeps(("m@20",), construction="configured")}
    monkeypatch.setattr(pv, "PARAMETERS", params)
    monkeypatch.setattr(pv, "ROWS", rows)
    assert [pv.label(r) for r in rows] == ["calibrated", "calibrated", "predicted",
                                           "by construction"]
    assert pv.provenance("r3").startswith("predicted: depends on a, b")
    assert pv.blocking("r2") == [("a", "fitted on m 5 pJ")]


def test_labels_are_valid_and_every_dependency_declared() -> None:
    for row, deps in pv.ROWS.items():
        Row("x", "q", "p", "s", "t", True, provenance=pv.provenance(row))  # a valid label
        assert bool(deps.construction) != bool(deps.params), row
        assert deps.on and all("@" in c for c in deps.on), row
        for name in deps.params:
            assert name in pv.PARAMETERS, (row, name)
    for name, p in pv.PARAMETERS.items():
        assert p.on and p.fitted_to, name
        for r in p.fitted_to:
            assert r in pv.ROWS, (name, r)


def test_parameters_point_at_where_they_are_set() -> None:
    for name, p in pv.PARAMETERS.items():
        path, key = p.where.split(": ")
        assert (ROOT / path).exists(), (name, path)
        assert key in (ROOT / path).read_text(), (name, p.where)


def test_figures_take_labels_from_the_mapping_only() -> None:
    used = []
    for fname, values in _provenance_args().items():
        for v in values:
            # provenance=provenance("fig1.li_5pj") or provenance(key) (a loop over ids)
            assert isinstance(v, ast.Call) and getattr(v.func, "id", "") == "provenance", (
                fname, ast.unparse(v))
            if isinstance(v.args[0], ast.Constant):
                used.append(v.args[0].value)
    # the one call with a variable (Fig. 4's Li+ mu loop) takes the paper keys
    used += ["fig4.mu_li_uncoated", "fig4.mu_li_coated"]
    assert sorted(used) == sorted(pv.ROWS), set(used) ^ set(pv.ROWS)


@pytest.mark.parametrize("row", sorted(pv.ROWS))
def test_row_ids_are_paper_keys_or_documented(row) -> None:
    # a row id is the paper value it compares against, or a named one of several
    prefix = row.split(".")[0]
    assert row in V or any(k.startswith(prefix + ".") for k in V), row


def test_counts() -> None:
    # the table's 24 rows; with today's calibration none is predicted (docs/reproduction.md)
    c = pv.counts()
    assert sum(c.values()) == 24
    assert c == {"by construction": 2, "calibrated": 22, "predicted": 0}

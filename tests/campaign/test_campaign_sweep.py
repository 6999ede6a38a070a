"""Sweep model, point expansion, validation, result rows, resume rules, table and plot: all
without a cluster (the points run in this process)."""

from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from campaign_points import fake_report, store_point
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_daq.campaign import (
    RangeAxis,
    build_tasks,
    execute_point,
    expected_ratios,
    flatten_report,
    fn_name,
    load_sweep,
    read_table,
    recorded_row,
    write_table,
)
from apt_daq.campaign_plots import calibration_figure, element_ratio, molecular_ratio
from apt_daq.config import ConfigError, SpecimenConfig, load_yaml_model

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
BASE = CONFIGS / "runs" / "nmc811-cr-5pj.yaml"


def sweep_file(tmp_path: Path, body: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(f"name: t\nbase: {CONFIGS / 'runs' / 'nmc811-cr-5pj.yaml'}\n{body}")
    return p


# ------------------------------------------------------------------------------ axes
def test_range_axis_inclusive_and_tidy():
    assert RangeAxis(start=5, stop=50, step=5).values() == [5, 10, 15, 20, 25, 30, 35, 40,
                                                             45, 50]
    assert RangeAxis(start=0.1, stop=0.3, step=0.1).values() == [0.1, 0.2, 0.3]
    assert RangeAxis(start=1, stop=2, num=3).values() == [1, 1.5, 2]
    assert RangeAxis(start=1, stop=1.9, step=0.5).values() == [1, 1.5]  # stop off the grid


@settings(max_examples=60, deadline=None)
@given(start=st.integers(-50, 50), n=st.integers(1, 40), step=st.sampled_from([0.1, 0.25, 1, 5]))
def test_range_axis_count_and_spacing(start: int, n: int, step: float):
    """n values on a grid whose last value is exactly stop: all n come out, evenly spaced."""
    stop = start + (n - 1) * step
    v = RangeAxis(start=start, stop=stop, step=step).values()
    assert len(v) == n
    assert v[0] == pytest.approx(start) and v[-1] == pytest.approx(stop)
    assert all(b - a == pytest.approx(step) for a, b in itertools.pairwise(v))


def test_product_and_zip(tmp_path: Path):
    s = load_sweep(sweep_file(tmp_path, "axes:\n  run.laser_pj: [5, 10]\n"
                                        "  run.seed: {start: 1, stop: 3, step: 1}\n"))
    pts = s.points()
    assert [p.params for p in pts[:4]] == [
        {"run.laser_pj": 5, "run.seed": 1}, {"run.laser_pj": 5, "run.seed": 2},
        {"run.laser_pj": 5, "run.seed": 3}, {"run.laser_pj": 10, "run.seed": 1}]
    assert len(pts) == 6
    assert len({p.key for p in pts}) == 6
    z = load_sweep(sweep_file(tmp_path, "mode: zip\naxes:\n  run.laser_pj: [5, 10, 20]\n"
                                        "  run.seed: {values: [7, 8, 9]}\n"))
    assert [p.params for p in z.points()] == [
        {"run.laser_pj": 5, "run.seed": 7}, {"run.laser_pj": 10, "run.seed": 8},
        {"run.laser_pj": 20, "run.seed": 9}]


def test_errors_name_file_line_and_field(tmp_path: Path):
    p = sweep_file(tmp_path, "mode: zip\naxes:\n  run.laser_pj: [5, 10]\n  run.seed: [1]\n")
    with pytest.raises(ConfigError, match=r"values where run\.laser_pj has 2: mode zip pairs"):
        load_sweep(p)
    p = sweep_file(tmp_path, "mode: spiral\n")
    with pytest.raises(ConfigError, match=r"s\.yaml:3 mode: must be one of"):
        load_sweep(p)
    p = sweep_file(tmp_path, "axes:\n  run.laser_pj: {start: 5, stop: 1, step: 1}\n")
    with pytest.raises(ConfigError, match=r"s\.yaml:4 axes.run.laser_pj"):
        load_sweep(p)
    p = tmp_path / "b.yaml"
    p.write_text("name: t\nbase: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"b\.yaml:2 base: run file not found"):
        load_sweep(p)


def test_every_point_validated_before_running(tmp_path: Path):
    """A value the run file cannot take is reported with the point that holds it."""
    s = load_sweep(sweep_file(tmp_path, "axes:\n  run.laser_pj: [5, -3]\n"))
    with pytest.raises(ConfigError) as e:
        build_tasks(s, tmp_path / "out")
    assert "point 1 {'run.laser_pj': -3}" in str(e.value)
    assert "run.laser_pj: must be > 0" in str(e.value)


def test_a_problem_every_point_shares_is_one_line(tmp_path: Path):
    """``set: {run.stop.instrument_time_s: abc}`` on a 10000-point product: 21 near-identical
    lines (one per point, each with the whole point), after validating points for ~1 s; now
    one line naming the first point and how many others share it, and a line saying where the
    check stopped (validating all 10000 points would take minutes)."""
    body = ("axes:\n  run.laser_pj: {start: 1, stop: 100, num: 100}\n"
            "  run.seed: {start: 0, stop: 99, num: 100}\n"
            "set:\n  run.stop.instrument_time_s: abc\n")
    s = load_sweep(sweep_file(tmp_path, body))
    with pytest.raises(ConfigError) as e:
        build_tasks(s, tmp_path / "out")
    lines = e.value.problems
    assert len(lines) == 2, lines
    assert "point 0 {'run.laser_pj': 1, 'run.seed': 0} (and 49 more points): " in lines[0]
    assert "instrument_time_s" in lines[0] and "'abc'" in lines[0]
    assert "checking stopped" in lines[1] and "of 10000" in lines[1]


def test_problems_at_some_points_are_named_once_each(tmp_path: Path):
    """Two different problems at different points: one line each, each naming its first point
    and how many share it; long parameters shortened."""
    far = "x" * 60
    body = ("axes:\n  run.laser_pj: [5, -3, 1000000]\n"
            f"  run.name: [{far}, a, b]\n")
    s = load_sweep(sweep_file(tmp_path, body))
    with pytest.raises(ConfigError) as e:
        build_tasks(s, tmp_path / "out")
    lines = e.value.problems
    assert len(lines) == 2, lines
    negative, high = lines
    assert "point 3 {'run.laser_pj': -3, 'run.name': 'xxx" in negative, negative
    assert "...: override run.laser_pj: must be > 0" not in negative  # shortened, then the text
    assert "(and 2 more points): override run.laser_pj: must be > 0" in negative, negative
    assert "(and 2 more points): override run.laser_pj: 1e+06 pJ is above" in high, high
    assert all(len(ln) < 400 for ln in lines), lines


def test_overrides_ions_and_specimen_paths(tmp_path: Path):
    """`ions` sets run.stop.ions; a specimen path (relative to the sweep) swaps the file."""
    body = (f"ions: 1234\naxes:\n  specimen: [{CONFIGS / 'specimens' / 'nmc811.yaml'}, "
            f"{CONFIGS / 'specimens' / 'nmc811-cr.yaml'}]\n")
    s = load_sweep(sweep_file(tmp_path, body))
    tasks = build_tasks(s, tmp_path / "out")
    assert [t.run_file.specimen.coating is None for t in tasks] == [True, False]
    assert all(t.run_file.run.stop.ions == 1234 for t in tasks)
    assert tasks[0].key.startswith("specimen=nmc811-")
    assert tasks[0].config_sha != tasks[1].config_sha
    # a relative path is taken from the sweep file's folder
    (tmp_path / "spec.yaml").write_text((CONFIGS / "specimens" / "nmc811.yaml").read_text()
                                        .replace("apex_radius_nm: 30.0", "apex_radius_nm: 45.0"))
    s = load_sweep(sweep_file(tmp_path, "set:\n  specimen: spec.yaml\n"))
    assert build_tasks(s, tmp_path / "o")[0].run_file.specimen.apex_radius_nm == 45.0
    # a broken specimen file is named with its own line
    (tmp_path / "bad.yaml").write_text("name: x\nmatrix: A\nphases: []\n")
    s = load_sweep(sweep_file(tmp_path, "set:\n  specimen: bad.yaml\n"))
    with pytest.raises(ConfigError, match=r"bad\.yaml:3 phases"):
        build_tasks(s, tmp_path / "o")


def test_shipped_campaigns_load():
    n = {}
    for f in sorted((CONFIGS / "campaigns").glob("*.yaml")):
        s = load_sweep(f)
        tasks = build_tasks(s, Path("/nonexistent/out"))
        n[f.stem] = len(tasks)
        assert len({t.key for t in tasks}) == len(tasks)
    assert n == {"fig5-coated-5-50pj": 10, "fig1-uncoated-5-20pj": 12, "fracture-seeds": 20}
    fig5 = build_tasks(load_sweep(CONFIGS / "campaigns" / "fig5-coated-5-50pj.yaml"),
                       Path("/x"))
    assert [t.run_file.run.laser_pj for t in fig5] == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert all(t.run_file.specimen.coating is not None for t in fig5)


# ------------------------------------------------------------------------------ rows
def test_flatten_report_columns():
    row = flatten_report(fake_report(10.0))
    assert row["comp.Li"] == 0.25 and row["comp.Li.err"] == 0.01
    assert row["ratio.O2+/O+"] == pytest.approx(1.0)
    assert row["count.O2+"] == 100
    assert row["ratio.O2+/O+.err"] == pytest.approx(0.1)
    assert row["mrp50"] == 810.0 and row["mrp50.NiO+"] == 810.0 and row["mrp10.Li+"] == 230.0
    assert row["fda_mu.Li+"] == 0.5
    assert flatten_report({"mrp": 512.0, "ratios": {"x": float("nan")}}) == {
        "mrp": 512.0, "ratio.x": None}


def test_execute_point_records_error_and_resume_rules(tmp_path: Path):
    s = load_sweep(sweep_file(tmp_path, "axes:\n  run.laser_pj: [5, 10]\n"))
    t0, t1 = build_tasks(s, tmp_path)
    fn = functools.partial(store_point, fail_index=1)
    fid = fn_name(fn)
    ok = execute_point(t0, fn, fid)
    bad = execute_point(t1, fn, fid)
    assert ok["state"] == "done" and ok["error"] is None and ok["ions"] == 1000
    assert bad["state"] == "error" and "injected failure at point 1" in bad["error"]
    assert "RuntimeError" in json.loads(t1.json_path.read_text())["traceback"]
    assert recorded_row(t0, fid)["key"] == t0.key      # finished: skipped on a re-run
    assert recorded_row(t1, fid) is None                # an error: runs again
    assert recorded_row(t0, fn_name(store_point)) is None   # another point function
    # a run file cut short (the kill came mid-run) makes the point run again
    t0.out_path.write_bytes(b"\x89HDF truncated")
    assert recorded_row(t0, fid) is None


def test_table_round_trip_types(tmp_path: Path):
    rows = [{"point": 1, "key": "b", "run.laser_pj": 10, "state": "done", "error": None,
             "ions": 5, "comp.Li": 0.2, "coated": True, "duration_s": 1.5},
            {"point": 0, "key": "a", "run.laser_pj": 5.5, "state": "error",
             "error": "RuntimeError: x", "coated": False, "duration_s": 0.1}]
    csv_path, pq_path = write_table(rows, tmp_path, ["run.laser_pj"])
    back = read_table(pq_path)
    assert [r["key"] for r in back] == ["a", "b"]          # point order
    assert back[0]["ions"] is None and back[1]["ions"] == 5
    assert back[0]["run.laser_pj"] == 5.5 and back[1]["comp.Li"] == 0.2
    schema = pq.read_schema(pq_path)
    assert str(schema.field("ions").type) == "int64"
    assert str(schema.field("run.laser_pj").type) == "double"
    assert str(schema.field("coated").type) == "bool"
    header = csv_path.read_text().splitlines()[0].split(",")
    assert header[:3] == ["point", "key", "run.laser_pj"]


# ------------------------------------------------------------------------------ plot
def test_expected_ratios_from_stoichiometry():
    spec = load_yaml_model(CONFIGS / "specimens" / "nmc811-cr.yaml", SpecimenConfig)
    e = expected_ratios(spec)
    assert e["Li/(Li+Ni+Co+Mn)"] == pytest.approx(0.5)
    assert e["Ni/(Ni+Co+Mn)"] == pytest.approx(0.8)
    assert e["O/(Li+O+Ni+Co+Mn)"] == pytest.approx(0.5)


def test_ratios_and_calibration_figure(tmp_path: Path):
    rows = []
    for i, pj in enumerate([5, 10, 20, 50]):
        r = {"point": i, "state": "done" if pj != 50 else "failed", "error": None,
             "laser_pj": pj, "specimen_name": "NMC811 + Cr coating",
             **flatten_report(fake_report(pj))}
        rows.append(r)
    rows.append({"point": 9, "state": "error", "error": "boom"})
    li, li_err = element_ratio(rows[0], "Li/(Li+Ni+Co+Mn)")
    assert li == pytest.approx(0.25 / 0.5)
    # first-order propagation: sqrt((1-r)^2 s_Li^2 + r^2 (s_Ni^2+s_Co^2+s_Mn^2)) / den
    want = ((0.5 * 0.01) ** 2 + 0.5**2 * (0.01**2 + 2 * 0.004**2)) ** 0.5 / 0.5
    assert li_err == pytest.approx(want)
    assert molecular_ratio(rows[1]) == pytest.approx(1.0)
    out = tmp_path / "cal.png"
    fig = calibration_figure(rows, {"Li/(Li+Ni+Co+Mn)": 0.5, "Ni/(Ni+Co+Mn)": 0.8,
                                    "O/(Li+O+Ni+Co+Mn)": 0.5}, out)
    assert out.stat().st_size > 10_000
    a, b = fig.axes[:2]
    dashed = [tuple(line.get_ydata()) for line in a.lines + b.lines
              if line.get_linestyle() == "--"]
    assert sorted(y[0] for y in dashed) == [0.5, 0.5, 0.8]
    # 4 usable rows (3 done + 1 fractured) on panel a, the error row left out
    offsets = sum(len(c.get_offsets()) for c in a.collections if hasattr(c, "get_offsets")
                  and c.get_offsets().ndim == 2 and c.get_offsets().shape[1] == 2
                  and type(c).__name__ == "PathCollection")
    assert offsets == 4


def _warns(task):
    import warnings

    warnings.warn("poorly conditioned fit", RuntimeWarning, stacklevel=1)
    return {"state": "done"}


def test_point_warnings_go_into_the_row_not_the_terminal(tmp_path: Path, recwarn):
    s = load_sweep(sweep_file(tmp_path, "axes:\n  run.seed: [1]\n"))
    (t,) = build_tasks(s, tmp_path)
    row = execute_point(t, _warns, fn_name(_warns))
    assert row["warnings"] == ["RuntimeWarning: poorly conditioned fit"]
    assert len(recwarn) == 0
    assert "warnings" not in read_table(write_table([row], tmp_path, ["run.seed"])[1])[0]


def test_progress_running_count_tolerates_late_start_events():
    """A point's start event may arrive after its result: it must not count as running."""
    from apt_daq.campaign import _Progress

    bar = _Progress("x", total=3, skipped=0, enabled=False)
    bar.event((0.0, {"event": "start", "index": 0}))
    bar.done(1, error=True)
    bar.event((0.0, {"event": "start", "index": 1}))
    assert bar.running == {0} and bar.errors == 1
    bar.done(0, error=False)
    assert bar.running == set()


def test_point_functions_keep_the_names_recorded_rows_carry():
    """A result row records its point function by name and is reused only when the name
    matches: the campaign's own point functions are named as ``apt_daq.campaign`` exports them
    (as before it became a package), so a re-run skips the points already recorded."""
    import functools

    from apt_daq.campaign import simulate_and_analyze, synthetic_point

    assert fn_name(simulate_and_analyze) == "apt_daq.campaign.simulate_and_analyze"
    assert (fn_name(functools.partial(synthetic_point, work=10))
            == "apt_daq.campaign.synthetic_point(work=10)")
    assert fn_name(flatten_report) == "apt_daq.campaign.points.flatten_report"


def test_equal_values_written_differently_are_one_point(tmp_path: Path):
    """``[5, 5.0]`` made two points (two hashes) with the same run, and ``5.0`` did not find
    the point ``5`` wrote, so a campaign re-simulated everything (an outside audit, Dec 6).
    The reference: the run files the two spellings configure are the same."""
    from apt_daq.campaign.sweep import build_tasks, load_sweep

    def sweep(values: str) -> Path:
        p = tmp_path / f"s{len(list(tmp_path.glob('s*.yaml')))}.yaml"
        p.write_text(f"name: s\nbase: {BASE}\naxes:\n  run.laser_pj: {values}\n")
        return p

    ints = build_tasks(load_sweep(sweep("[5, 10, 20]")), tmp_path / "o")
    floats = build_tasks(load_sweep(sweep("[5.0, 10.0, 20.0]")), tmp_path / "o")
    for a, b in zip(ints, floats, strict=True):
        assert a.run_file.model_dump(exclude={"run": {"name"}}) == b.run_file.model_dump(
            exclude={"run": {"name"}})  # the same run ...
        assert a.key == b.key and a.out_path == b.out_path  # ... is the same point
    with pytest.raises(ConfigError, match="points 0 and 1 are the same"):
        load_sweep(sweep("[5, 5.0]")).points()
    # a value that differs stays its own point
    assert len({t.key for t in build_tasks(load_sweep(sweep("[5, 5.5]")), tmp_path / "o")}) == 2


@pytest.mark.parametrize("axes, line, says", [
    ("mode: product\naxes:\n  run.seed: [1]\n  run.laser_pj: []\n", 6,
     "axes.run.laser_pj: no values"),
    ("mode: zip\naxes:\n  run.seed: [1, 2]\n  run.laser_pj: [5, 10, 20]\n", 6,
     "axes.run.laser_pj: 3 values where run.seed has 2"),
])
def test_an_axis_problem_names_the_axis_line(tmp_path: Path, axes: str, line: int, says: str):
    """An empty axis, or zip axes of unequal length, were blamed on line 1 '(top level)' with
    the whole sweep echoed ("got {'name': ... (139 characters)")."""
    from apt_daq.campaign.sweep import load_sweep

    p = tmp_path / "bad.yaml"
    p.write_text(f"name: s\nbase: {BASE}\n{axes}")
    with pytest.raises(ConfigError) as e:
        load_sweep(p)
    assert [f"{p}:{line} {says}" in m for m in e.value.problems] == [True], e.value.problems
    assert "got {" not in str(e.value)


def test_mrp_columns_say_which_peak_and_warn_when_it_changes():
    """An uncoated sweep's mrp50 was O2+'s at 5 pJ and Li+'s at 10 and 20 pJ: picking the best
    mrp50 compared unlike peaks (an outside audit). The row names the peak, and the campaign
    says when the points' peaks differ, naming a column all of them have."""
    from apt_daq.campaign.points import flatten_report
    from apt_daq.campaign.table import mixed_mrp_peaks

    def row(point: int, peaks: list[tuple[str, float]]) -> dict:
        r = flatten_report({"mrp": [{"peak": p, "mrp50": m, "mrp10": m / 3} for p, m in peaks]})
        return {"point": point, **r}

    same = [row(0, [("O2+", 971.0), ("Li+", 900.0)]), row(1, [("O2+", 650.0), ("Li+", 318.0)])]
    assert [r["mrp_peak"] for r in same] == ["O2+", "O2+"] and mixed_mrp_peaks(same) is None
    mixed = [row(0, [("O2+", 971.0), ("Li+", 900.0)]), row(1, [("Li+", 318.0), ("O2+", 650.0)]),
             row(2, [("Li+", 177.0), ("O2+", 362.0)])]
    said = mixed_mrp_peaks(mixed)
    assert said is not None
    assert "O2+ at point 0; Li+ at points 1, 2" in said and "mrp50.O2+" in said


def test_a_point_that_is_one_burst_is_flagged(tmp_path: Path):
    """An uncoated 20 pJ point asked for 30 000 ions ended `done` with 67 748, all from one
    readout block at 2.16 ions a pulse, and nothing in its row said so (an outside audit).
    A small point whose few blocks are held at the target is no burst (the first version of
    this flag named the 45 and 50 pJ points of a 5000-ion campaign: one block, at target).
    The reference: a /log written here, block by block, with known counts and rates."""
    import numpy as np

    from apt_daq.analysis.report import burst_share
    from apt_daq.campaign.table import burst_warning
    from apt_daq.config import load_run
    from apt_daq.io.store import RunWriter
    from apt_daq.io.store.layout import LOG_DTYPE

    rf = load_run(CONFIGS / "runs" / "nmc811-bare-5pj.yaml")
    target = rf.run.target_detection_rate
    runs = {"steady": ([5000] * 10, [target] * 10),
            "one held block": ([5200], [1.02 * target]),
            "burst": ([300, 500, 66_948], [0.2 * target, 0.9 * target, 430 * target])}
    shares = {}
    for name, (blocks, rates) in runs.items():
        log = np.zeros(len(blocks), LOG_DTYPE)
        log["ions"] = np.cumsum(blocks)
        log["rate"] = rates
        log["pulses"] = np.arange(1, len(blocks) + 1) * 1_000_000
        path = tmp_path / f"{len(shares)}.h5"
        with RunWriter(path, {"config": rf.model_dump(mode="json")}) as w:
            w.log(log)
            w.finish("done")
        shares[name] = burst_share(path)
    assert shares["steady"] == 0.0 and shares["one held block"] == 0.0
    assert shares["burst"] == pytest.approx(66_948 / 67_748)
    rows = [{"point": i, "burst_share": v} for i, v in enumerate(shares.values())]
    said = burst_warning(rows)
    assert said is not None and "1 of 3 points" in said and "points 2)" in said
    assert burst_warning(rows[:2]) is None

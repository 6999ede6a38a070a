"""Found by a new user's audit of ``analyze`` from the outside (Dec 2026), judged from what the
CLI prints: an ROI that holds no ion says so on stderr (it passed silently with empty
tables); water is H2O+ and H3O+, as atom probe users write it, not OH2+ and OH3+; a table
with nothing to show says n/a and why (MRP of a 3000-ion run was an empty table); ranges that
hold mostly background are flagged with their share of net ions; ``--step`` out of range or on
a run without steps is one error line naming the valid steps (``--step 1`` of a one-step run
read as "no step at 1 pJ"; an imported run said it "cannot tell its schedule steps apart"); ``import --help`` is readable at 80 columns (its --fields example
was wrapped mid-token, "vdc:k" / "V", and its --format choices ran to 108 columns)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_cli_outside_in import one_error_line
from test_cli_polish import RUN, SCHEDULE, cli


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """3000 simulated ions: most of them ramp-up background."""
    from apt_daq.run import Session

    out = tmp_path_factory.mktemp("run") / "small.h5"
    Session.from_yaml(RUN, {"run.stop.ions": 3000}, out=out, handle_signals=False).run()
    return out


@pytest.fixture(scope="module")
def apav_si() -> Path:
    """apav's real LEAP Si data (Si.pos, Si.epos, Si.RRNG)."""
    apav = pytest.importorskip("apav")
    return Path(apav.__file__).parent / "tests"


@pytest.fixture(scope="module")
def si_run(apav_si, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("si") / "si.h5"
    proc = cli("import", str(apav_si / "Si.pos"), "-o", str(out), "--ranges",
               str(apav_si / "Si.RRNG"))
    assert proc.returncode == 0, proc.stderr
    return out


def warnings(proc, needle: str) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return [s for s in proc.stderr.splitlines() if s.startswith("warning:") and needle in s]


@pytest.mark.parametrize(("roi", "named"), [
    ("cylinder:0.001", "cylinder 0.001 nm diameter along z"),
    ("cylinder:10,500,0", "cylinder 10 nm diameter along z through (500, 0) nm"),
    ("box:5,5,5,0,0,900", "box 5 x 5 x 5 nm at (0, 0, 900) nm")])
def test_an_roi_that_holds_no_ion_is_one_warning(small_run, roi, named):
    proc = cli("analyze", str(small_run), "--no-store", "--roi", roi)
    lines = warnings(proc, "holds 0 ions")
    assert len(lines) == 1, proc.stderr
    assert named in lines[0] and "n/a" in lines[0] and "the ions lie at x " in lines[0], lines[0]
    js = cli("analyze", str(small_run), "--no-store", "--roi", roi, "--json")
    assert len(warnings(js, "holds 0 ions")) == 1, js.stderr
    s = json.loads(js.stdout)
    assert s["ions"] == 0 and all(v["fraction"] is None for v in s["composition"].values())


def test_an_roi_that_holds_ions_is_not_flagged(small_run):
    assert warnings(cli("analyze", str(small_run), "--no-store", "--roi", "cylinder:25"),
                    "ROI") == []


def test_water_is_named_h2o_by_range_and_analyze(apav_si, si_run, tmp_path):
    """`apt-daq range` on apav's Si.epos named its 18 Da peak OH2+; its RRNG read back by
    analyze, and a range file written in the old order (O:1 H:2), must say H2O+ (and H3O+,
    but OH+ stays OH+)."""
    rrng = tmp_path / "si.rrng"
    proc = cli("range", str(apav_si / "Si.epos"), "--json", "-o", str(rrng))
    assert proc.returncode == 0, proc.stderr
    names = {r["ion"] for r in json.loads(proc.stdout)["ranges"]}
    assert "H2O+" in names and not {"OH2+", "OH3+"} & names, names
    old = tmp_path / "old.rrng"
    old.write_text("[Ions]\nNumber=2\nIon1=O\nIon2=H\n[Ranges]\nNumber=3\n"
                   "Range1=16.95 17.10 Vol:0.01 O:1 H:1 Color:FF0000\n"
                   "Range2=17.95 18.15 Vol:0.01 O:1 H:2 Color:00FF00\n"
                   "Range3=18.95 19.10 Vol:0.01 O:1 H:3 Color:0000FF\n")
    for ranges in (rrng, old):
        js = cli("analyze", str(si_run), "--ranges", str(ranges), "--roi", "none", "--json",
                 "--no-store")
        assert js.returncode == 0, js.stderr
        counts = json.loads(js.stdout)["ion_counts"]
        assert "H2O+" in counts and not any(k.startswith(("OH2", "OH3")) for k in counts)
    assert {"OH+", "H2O+", "H3O+"} <= set(counts), counts


def empty_tables(text: str) -> list[str]:
    """Titles of the tables printed with a header and no row."""
    lines = text.splitlines()
    return [lines[i - 3] for i, s in enumerate(lines) if s.startswith("└")
            and lines[i - 1].startswith("┡")]


@pytest.mark.parametrize("roi", ["none", "cylinder:8", "cylinder:0.001"])
def test_no_empty_table_and_every_na_says_why(small_run, roi):
    proc = cli("analyze", str(small_run), "--no-store", "--roi", roi)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert empty_tables(out) == [], out
    # 3000 ions, most of them background: no peak has the ions a width needs
    assert re.search(r"^mass resolving power: n/a \(.*(200 ions|no ranged ion)", out, re.M), out
    if roi == "cylinder:0.001":
        for title in ("composition", "ion counts", "ratios", "frequency distribution"):
            assert re.search(rf"^{title}.*: n/a \(no ranged ion in the ROI cylinder 0.001", out,
                             re.M), out
    if re.search(r"│ +\S+ +│ +\d+ +│ +n/a", out):  # an FDA row without chi2
        assert "chi2, mu n/a: too few blocks" in out, out
    if re.search(r"│ \S+/\S+ +│ +n/a", out):  # a ratio row without a value
        assert "n/a: a species it needs has no ranged ion" in out, out
    assert "ranged as true species n/a (" in out or "ranged as true species 0." in out, out


def test_mostly_background_ranges_are_one_warning_stating_the_share(small_run, si_run):
    """The 3000-ion run is ramp-up: its ranges hold mostly background, and analyze said
    nothing. The warning's share is that of the per-peak table (net / counts); apav's Si run
    (99 % net) is not flagged."""
    proc = cli("analyze", str(small_run), "--no-store", "--roi", "none", "--json")
    lines = warnings(proc, "background-subtracted counts are")
    assert len(lines) == 1, proc.stderr
    peaks = json.loads(proc.stdout)["peaks"]
    share = 100 * sum(r["net"] for r in peaks) / sum(r["counts"] for r in peaks)
    assert share < 50 and f"are {share:.0f} % of the" in lines[0], (share, lines[0])
    assert "(under 50 %)" in lines[0] and "--background" in lines[0], lines[0]
    text = cli("analyze", str(small_run), "--no-store", "--background")
    assert len(warnings(text, "background-subtracted counts are")) == 1, text.stderr
    assert warnings(cli("analyze", str(si_run), "--no-store"), "background") == []


@pytest.fixture(scope="module")
def cut_schedule(tmp_path_factory) -> Path:
    """A 5-10-15-20 pJ schedule stopped at 3000 ions: only step 0 ran."""
    out = tmp_path_factory.mktemp("sched") / "cut.h5"
    proc = cli("run", str(SCHEDULE), "--ions", "3000", "-o", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize(("step", "says"), [
    ("1", "no step 1"), ("-1", "no step -1 (steps count from 0)"), ("7pJ", "no step at 7 pJ"),
    ("abc", "not a step index or a laser energy")])
def test_a_step_out_of_range_names_the_valid_steps(small_run, step, says):
    line = one_error_line(cli("analyze", str(small_run), "--no-store", f"--step={step}"),
                          f"--step {step}: ", says)
    assert line.endswith("valid steps: 0 (5 pJ)"), line


@pytest.mark.parametrize("step", ["1", "20pJ"])
def test_a_step_that_never_ran_names_the_steps_that_did(cut_schedule, step):
    line = one_error_line(cli("analyze", str(cut_schedule), "--no-store", "--step", step),
                          "never ran", "valid steps: 0 (5 pJ)")
    assert line.endswith("valid steps: 0 (5 pJ)"), line


def test_a_run_without_steps_says_so(si_run):
    one_error_line(cli("analyze", str(si_run), "--no-store", "--step", "0"),
                   "--step 0: ", "has no schedule steps", "without --step")


@pytest.mark.parametrize("columns", [None, "80"])
def test_import_help_fits_80_columns_with_whole_examples(columns):
    proc = cli("import", "--help", env={"COLUMNS": columns} if columns else None)
    assert proc.returncode == 0, proc.stderr
    long = [s for s in proc.stdout.splitlines() if len(s) > 80]
    assert long == [], long
    lines = proc.stdout.splitlines()
    example = "--fields tof=T:s,v_dc=VDC:kV,v_pulse=VP:kV,det_x=X:cm,det_y=Y:cm,pulse=PN"
    assert any(s.strip() == example for s in lines), proc.stdout
    assert any(s.strip().startswith("apt-daq import Si.epos -o") for s in lines), proc.stdout
    from apt_daq.commands.import_ import FORMATS

    assert all(f in proc.stdout for f in FORMATS), proc.stdout

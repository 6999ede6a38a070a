"""`apt-daq config check` is a preflight: everything that would fail or be dangerous at run
time is found before HV, each finding at file:line; `apt-daq run` refuses the same file with
the same lines before anything is switched on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from apt_daq.config import ConfigError, load_run, preflight
from apt_daq.config_check import check_file

ROOT = Path(__file__).resolve().parents[2]
CFG = ROOT / "configs"

BASE = """\
instrument: @CFG@/instruments/leap5000xs.yaml
specimen: @CFG@/specimens/nmc811-cr.yaml
drivers:
  hv: {backend: sim, limit_v: 12000}
run:
  name: t
  laser_pj: 5.0
  pulse_rate_hz: 100000
  target_detection_rate: 0.005
  start_voltage_v: 2000
  stop:
    ions: 1000
  seed: 3
analysis:
  ranges: @CFG@/ranges/nmc811.rrng
  roi: cylinder:25
"""


def write(tmp_path: Path, *edits: tuple[str, str], text: str = BASE) -> Path:
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    p = tmp_path / "run.yaml"
    p.write_text(text.replace("@CFG@", str(CFG)))
    return p


def line_of(p: Path, needle: str) -> int:
    return next(i for i, s in enumerate(p.read_text().splitlines(), 1) if needle in s)


def problems(p: Path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        preflight(p)
    return e.value.problems


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run([sys.executable, "-m", "apt_daq.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)


def test_the_base_file_passes(tmp_path: Path) -> None:
    rf, warnings = preflight(write(tmp_path))
    assert rf.run.laser_pj == 5.0 and warnings == []


@pytest.mark.parametrize("path", sorted((CFG / "runs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_run_files_pass_without_warnings(path: Path) -> None:
    assert preflight(path)[1] == []


# ------------------------------------------------------------------ against the instruments
def test_laser_energy_above_the_drivers_maximum(tmp_path: Path) -> None:
    p = write(tmp_path, ("laser_pj: 5.0", "laser_pj: 5000"))
    assert problems(p) == [
        f"{p}:{line_of(p, 'laser_pj')} run.laser_pj: 5000 pJ is above "
        "drivers.laser.max_energy_pj 100 (the laser driver refuses it)"]


def test_a_schedule_step_above_the_drivers_maximum_names_its_line(tmp_path: Path) -> None:
    p = write(tmp_path, ("  laser_pj: 5.0\n", "  schedule:\n    - {laser_pj: 5, ions: 500}\n"
                         "    - {laser_pj: 500, ions: 500}\n"))
    assert problems(p) == [
        f"{p}:{line_of(p, 'laser_pj: 500,')} run.schedule.1.laser_pj: 500 pJ is above "
        "drivers.laser.max_energy_pj 100 (the laser driver refuses it)"]


def test_pulse_rate_above_the_instruments(tmp_path: Path) -> None:
    p = write(tmp_path, ("pulse_rate_hz: 100000", "pulse_rate_hz: 1000000"))
    assert problems(p) == [
        f"{p}:{line_of(p, 'pulse_rate_hz')} run.pulse_rate_hz: 1e+06 Hz is above "
        "instrument.max_pulse_rate_hz 500000 (LEAP 5000 XS)"]


def test_limit_below_the_start_voltage_names_the_limit(tmp_path: Path) -> None:
    p = write(tmp_path, ("limit_v: 12000", "limit_v: 1500"))
    assert problems(p) == [
        f"{p}:{line_of(p, 'limit_v')} drivers.hv.limit_v: drivers.hv.limit_v 1500 V is below "
        "run.start_voltage_v 2000 V (the ramp to the start voltage is refused)"]


def test_start_voltage_above_the_default_limit_names_the_start(tmp_path: Path) -> None:
    p = write(tmp_path, ("  hv: {backend: sim, limit_v: 12000}\n", "  hv: {backend: sim}\n"),
              ("start_voltage_v: 2000", "start_voltage_v: 13000"))
    (got,) = problems(p)
    assert got.startswith(f"{p}:{line_of(p, 'start_voltage_v')} run.start_voltage_v: "
                          "drivers.hv.limit_v 12000 V is below run.start_voltage_v 13000 V")


def test_a_stop_voltage_at_or_below_the_start(tmp_path: Path) -> None:
    p = write(tmp_path, ("    ions: 1000\n", "    ions: 1000\n    max_voltage_v: 1500\n"))
    assert problems(p) == [
        f"{p}:{line_of(p, 'max_voltage_v')} run.stop.max_voltage_v: 1500 V is not above "
        "run.start_voltage_v 2000 V: the run would stop at its first block"]


# ------------------------------------------------------------------ files, ROI, rate
def test_a_missing_range_file(tmp_path: Path) -> None:
    p = write(tmp_path, ("ranges/nmc811.rrng", "ranges/nmc812.rrng"))
    assert problems(p) == [f"{p}:{line_of(p, 'ranges:')} analysis.ranges: range file not "
                           f"found: {CFG / 'ranges/nmc812.rrng'}"]


def test_a_relative_range_file_resolves_from_the_run_file(tmp_path: Path) -> None:
    (tmp_path / "r.rrng").write_text((CFG / "ranges/nmc811.rrng").read_text())
    p = write(tmp_path, ("@CFG@/ranges/nmc811.rrng", "r.rrng"))
    assert preflight(p)[1] == []
    (tmp_path / "r.rrng").unlink()
    assert "range file not found" in problems(p)[0]
    (tmp_path / "r.rrng").mkdir()  # a directory where the file should be: said so
    assert problems(p) == [f"{p}:{line_of(p, 'ranges:')} analysis.ranges: "
                           f"{tmp_path / 'r.rrng'}: is a directory, not a range file"]


def test_an_included_file_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "specimens").mkdir()
    p = write(tmp_path, ("specimen: @CFG@/specimens/nmc811-cr.yaml", "specimen: specimens"))
    (got,) = problems(p)
    assert got == (f"{p}:{line_of(p, 'specimen:')} specimen: is a directory, not a file: "
                   f"{tmp_path / 'specimens'}")


def test_roi_syntax_is_checked_before_the_acquisition(tmp_path: Path) -> None:
    p = write(tmp_path, ("roi: cylinder:25", "roi: cylinder:25nm"))
    (got,) = problems(p)
    assert got.startswith(f"{p}:{line_of(p, 'roi:')} analysis.roi: ROI 'cylinder:25nm': ")
    assert "cylinder:DIAMETER_NM" in got or "numbers expected" in got, got


@pytest.mark.parametrize("rate, pct", [(0.5, "50 %"), (0.06, "6 %"), (1.5, "150 %")])
def test_a_rate_target_in_percent(tmp_path: Path, rate: float, pct: str) -> None:
    p = write(tmp_path, ("target_detection_rate: 0.005", f"target_detection_rate: {rate}"))
    (got,) = problems(p)
    assert got.startswith(f"{p}:{line_of(p, 'target_detection')} run.target_detection_rate: "
                          f"{rate:g} ions per pulse means {pct} of pulses detect an ion: "
                          "percent?"), got


def test_every_finding_at_once(tmp_path: Path) -> None:
    p = write(tmp_path, ("specimens/nmc811-cr.yaml", "specimens/nope.yaml"),
              ("ranges/nmc811.rrng", "ranges/nope.rrng"), ("cylinder:25", "cylinder:25nm"),
              ("target_detection_rate: 0.005", "target_detection_rate: 0.5"),
              ("laser_pj: 5.0", "laser_pj: 5000"))
    got = problems(p)
    assert [g.split(" ", 2)[:2] for g in got] == [
        [f"{p}:{line_of(p, 'specimen:')}", "specimen:"],
        [f"{p}:{line_of(p, 'ranges:')}", "analysis.ranges:"],
        [f"{p}:{line_of(p, 'roi:')}", "analysis.roi:"],
        [f"{p}:{line_of(p, 'target_detection')}", "run.target_detection_rate:"],
        [f"{p}:{line_of(p, 'laser_pj')}", "run.laser_pj:"]], got


def test_an_error_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    inst = (CFG / "instruments/leap5000xs.yaml").read_text().replace(
        "max_pulse_rate_hz: 500000", "max_pulse_rate_hz: 50000")
    (tmp_path / "inst.yaml").write_text(inst)
    p = write(tmp_path, ("@CFG@/instruments/leap5000xs.yaml", "inst.yaml"))
    assert problems(p) == [f"{p}:{line_of(p, 'pulse_rate_hz')} run.pulse_rate_hz: 100000 Hz "
                           "is above instrument.max_pulse_rate_hz 50000 (LEAP 5000 XS)"]


# ------------------------------------------------------------------ the kind of file
@pytest.mark.parametrize("path, kind", [
    (CFG / "instruments/leap5000xs.yaml", "an instrument file"),
    (CFG / "specimens/nmc811.yaml", "a specimen file"),
    (CFG / "campaigns/fig5-coated-5-50pj.yaml", "a campaign (sweep) file")])
def test_a_file_of_another_kind_given_to_run_is_named(tmp_path: Path, path: Path,
                                                      kind: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_run(path)
    (got,) = e.value.problems
    assert got.startswith(f"{path}:1: this is {kind}, not a run file"), got
    proc = cli("run", str(path), "-o", str(tmp_path / "r.h5"), "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"error: {got}"], proc.stderr
    assert check_file(path)[0] in ("instrument", "specimen", "campaign")
    ok = cli("config", "check", str(path))
    assert ok.returncode == 0 and ok.stdout.strip() == f"{path}: ok ({kind})", ok


# ------------------------------------------------------------------ the commands
def test_config_check_and_run_refuse_with_the_same_lines(tmp_path: Path) -> None:
    p = write(tmp_path, ("laser_pj: 5.0", "laser_pj: 5000"), ("cylinder:25", "cylinder:25nm"))
    want = [f"error: {x}" for x in problems(p)]
    check = cli("config", "check", str(p))
    assert check.returncode == 2 and check.stderr.splitlines() == want, check.stderr
    out = tmp_path / "r.h5"
    run = cli("run", str(p), "-o", str(out), "--quiet")
    assert run.returncode == 2 and run.stderr.splitlines() == want, run.stderr
    assert not out.exists()  # refused before the file (and the HV)


def test_config_check_warns_when_the_stop_count_cuts_the_schedule(tmp_path: Path) -> None:
    p = write(tmp_path, ("  laser_pj: 5.0\n", "  schedule:\n    - {laser_pj: 5, ions: 500}\n"
                         "    - {laser_pj: 10, ions: 500, label: hot}\n"
                         "    - {laser_pj: 15, ions: 500}\n"))
    proc = cli("config", "check", str(p))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"warning: {p}:{line_of(p, 'ions: 1000')} run.stop.ions: 1000 ends the run in step 1 "
        "(hot, after 500 of its 500 ions): step 2 (15 pJ) will not run"]
    assert proc.stdout.strip() == f"{p}: ok (a run file, 1 warning)"


def test_supply_limit_above_the_instruments_ceiling_is_an_error(tmp_path: Path) -> None:
    # it was a warning until Dec 2026; `run` then failed at connect: the supply refuses
    # 'SOUR:VOLT:LIM 20000' (-222), so the run cannot start (a new user's audit)
    p = write(tmp_path, ("limit_v: 12000", "limit_v: 20000"))
    with pytest.raises(ConfigError) as e:
        preflight(p)
    assert e.value.problems == [
        f"{p}:{line_of(p, 'limit_v')} drivers.hv.limit_v: 20000 V is above "
        "instrument.max_voltage_v 15000 V (the supply's own ceiling): the supply refuses this "
        "limit when the driver connects, so the run cannot start"]
    proc = cli("run", str(p), "--ions", "100", "-o", str(tmp_path / "x.h5"))
    assert proc.returncode == 2, proc.stderr  # run refuses it the same way, before connecting
    assert proc.stderr.splitlines() == [f"error: {e.value.problems[0]}"], proc.stderr
    assert not (tmp_path / "x.h5").exists()


def test_a_start_voltage_above_the_instruments_ceiling_is_an_error(tmp_path: Path) -> None:
    p = write(tmp_path, ("limit_v: 12000", "limit_v: 20000"),
              ("start_voltage_v: 2000", "start_voltage_v: 16000"))
    with pytest.raises(ConfigError) as e:
        preflight(p)
    assert any(f"{p}:{line_of(p, 'start_voltage_v')} run.start_voltage_v: 16000 V is above "
               "instrument.max_voltage_v 15000 V" in x for x in e.value.problems), e.value.problems


def test_an_unknown_backend_is_found_before_the_run(tmp_path: Path) -> None:
    p = write(tmp_path, ("hv: {backend: sim", "hv: {backend: simm"))
    proc = cli("config", "check", str(p))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: {p}:{line_of(p, 'simm')} drivers.hv.backend: unknown backend 'simm'; built "
        "in: scpi, serial, sim; plug-ins (apt_daq.drivers): none"], proc.stderr


def test_an_override_is_named_by_what_set_it(tmp_path: Path) -> None:
    p = write(tmp_path)
    with pytest.raises(ConfigError) as e:
        preflight(p, {"run.laser_pj": 5000}, {"run.laser_pj": "--energy"})
    assert e.value.problems == ["--energy run.laser_pj: 5000 pJ is above "
                                "drivers.laser.max_energy_pj 100 (the laser driver refuses it)"]


@pytest.mark.parametrize("name, says", [("pyvisa-sim/hv.yaml", "a pyvisa-sim device file"),
                                        ("ranges/nmc811.rrng", "a range file")])
def test_config_check_names_a_file_that_is_no_config(name, says) -> None:
    proc = cli("config", "check", str(CFG / name))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and f"this is {says}, not an apt-daq config" in lines[0], lines


# ------------------------------------------------------------------ duplicate keys
def test_a_duplicate_key_is_an_error_not_the_last_silently(tmp_path: Path) -> None:
    # PyYAML keeps the last of two equal keys: 'seed: 3' then 'seed: 4' ran seed 4 unnoticed
    p = write(tmp_path, ("  seed: 3\n", "  seed: 3\n  seed: 4\n"))
    want = (f"{p}:{line_of(p, 'seed: 4')} run.seed: duplicate key 'seed' (first at line "
            f"{line_of(p, 'seed: 3')}; YAML would silently keep the last)")
    assert problems(p) == [want]
    check = cli("config", "check", str(p))
    assert check.returncode == 2 and check.stderr.splitlines() == [f"error: {want}"], check
    run = cli("run", str(p), "-o", str(tmp_path / "r.h5"), "--quiet")
    assert run.returncode == 2 and run.stderr.splitlines() == [f"error: {want}"], run.stderr
    assert not (tmp_path / "r.h5").exists()


def test_a_duplicate_key_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    text = (CFG / "instruments/leap5000xs.yaml").read_text()
    (tmp_path / "inst.yaml").write_text(text + "flight_path_mm: 382\n")
    p = write(tmp_path, ("@CFG@/instruments/leap5000xs.yaml", "inst.yaml"))
    (got,) = problems(p)
    assert got.startswith(f"{tmp_path / 'inst.yaml'}:{len(text.splitlines()) + 1} "
                          "flight_path_mm: duplicate key 'flight_path_mm' (first at line "), got


def test_a_key_overriding_a_merged_one_is_no_duplicate(tmp_path: Path) -> None:
    p = write(tmp_path, ("  seed: 3\n", "  <<: {seed: 1, name: m}\n  seed: 3\n"))
    rf, warnings = preflight(p)
    assert (rf.run.seed, rf.run.name, warnings) == (3, "t", [])


# ------------------------------------------------------------------ FDA ions
@pytest.mark.parametrize("ions, at, why", [
    ("[Xx+]", 0, "unknown element 'Xx' (ions are named e.g. Li+, Ni2+, O2+, (NiO)2+)"),
    ("[Li+, Ni]", 1, "must end with '+' (e.g. 'Ni2+', 'O2+', '(O2)2+')")])
def test_fda_ions_are_ion_names_at_load_time(tmp_path: Path, ions: str, at: int,
                                            why: str) -> None:
    # 'Xx+' passed config check and the run; analyze failed on it after the acquisition
    p = write(tmp_path, ("  roi: cylinder:25\n", f"  roi: cylinder:25\n  fda_ions: {ions}\n"))
    bad = ions.strip("[]").split(", ")[at]
    assert problems(p) == [f"{p}:{line_of(p, 'fda_ions')} analysis.fda_ions.{at}: not an ion "
                           f"name: {why}, got {bad!r}"]


def test_fda_ions_of_every_kind_pass(tmp_path: Path) -> None:
    p = write(tmp_path, ("  roi: cylinder:25\n",
                         "  roi: cylinder:25\n  fda_ions: [Li+, O2+, Ni2+, (NiO)2+, H2O+]\n"))
    assert preflight(p)[0].analysis.fda_ions == ["Li+", "O2+", "Ni2+", "(NiO)2+", "H2O+"]


def test_fda_ions_are_named_as_the_range_tables_name_them(tmp_path: Path) -> None:
    """``Ni++`` reads as Ni2+ and was kept as written, so it found no range of a table (whose
    ions are named by the formula: Ni2+) and its FDA was silently missing."""
    from apt_daq.rangetable import RangeTable

    p = write(tmp_path, ("  roi: cylinder:25\n",
                         "  roi: cylinder:25\n  fda_ions: [Ni++, Li+]\n"))
    fda = preflight(p)[0].analysis.fda_ions
    table = RangeTable.from_list([("Ni2+", 28.9, 29.1), ("Li+", 6.9, 7.1)])
    assert fda == ["Ni2+", "Li+"] and set(fda) <= set(table.names)


# ------------------------------------------------------------------ likely unit slips
SLIPS = [
    ("laser_pj: 5.0", "laser_pj: 0.005", "run.laser_pj: 0.005 pJ is below 0.1 pJ: a LEAP UV "
     "laser's useful range is ~1-200 pJ; was nJ meant (0.005 nJ = 5 pJ)?"),
    ("pulse_rate_hz: 100000", "pulse_rate_hz: 100", "run.pulse_rate_hz: 100 Hz is below 1000 "
     "Hz: a LEAP pulses at ~10-500 kHz; was kHz meant (100 kHz = 100000 Hz)?"),
    ("start_voltage_v: 2000", "start_voltage_v: 2", "run.start_voltage_v: 2 V is below 100 V: "
     "a LEAP run starts at ~1-5 kV; was kV meant (2 kV = 2000 V)?")]


@pytest.mark.parametrize("old, new, says", SLIPS, ids=[s[0].split(":")[0] for s in SLIPS])
def test_a_likely_unit_slip_is_a_warning(tmp_path: Path, old: str, new: str, says: str) -> None:
    # 'laser_pj: 0.005' (nJ meant) ran on detector background alone with no word of it
    p = write(tmp_path, (old, new))
    assert preflight(p)[1] == [f"{p}:{line_of(p, new)} {says}"]


def test_a_schedule_step_in_nj_is_a_warning(tmp_path: Path) -> None:
    p = write(tmp_path, ("  laser_pj: 5.0\n", "  schedule:\n    - {laser_pj: 5, ions: 500}\n"
                         "    - {laser_pj: 0.02, ions: 500}\n"))
    assert preflight(p)[1] == [
        f"{p}:{line_of(p, '0.02')} run.schedule.1.laser_pj: 0.02 pJ is below 0.1 pJ: a LEAP UV "
        "laser's useful range is ~1-200 pJ; was nJ meant (0.02 nJ = 20 pJ)?"]


def test_values_at_the_thresholds_and_a_ramp_from_zero_are_not_warned(tmp_path: Path) -> None:
    p = write(tmp_path, ("laser_pj: 5.0", "laser_pj: 0.1"),
              ("pulse_rate_hz: 100000", "pulse_rate_hz: 1000"),
              ("start_voltage_v: 2000", "start_voltage_v: 0"))
    assert preflight(p)[1] == []
    p = write(tmp_path, ("start_voltage_v: 2000", "start_voltage_v: 100"))
    assert preflight(p)[1] == []


def test_config_check_and_run_print_the_unit_slip_before_anything(tmp_path: Path) -> None:
    p = write(tmp_path, ("laser_pj: 5.0", "laser_pj: 0.005"))
    (want,) = [f"warning: {w}" for w in preflight(p)[1]]
    check = cli("config", "check", str(p))
    assert check.returncode == 0 and check.stderr.splitlines() == [want], check.stderr
    assert check.stdout.strip() == f"{p}: ok (a run file, 1 warning)"
    out = tmp_path / "r.h5"
    out.write_bytes(b"")  # run warns, then refuses the existing output before the hardware
    run = cli("run", str(p), "-o", str(out), "--quiet")
    assert run.returncode == 2 and run.stderr.splitlines()[0] == want, run.stderr

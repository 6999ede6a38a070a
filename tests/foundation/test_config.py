"""Config loading: every shipped config validates; bad input names file, line, field."""

import subprocess
import sys
from pathlib import Path

import pytest

from apt_daq.config import ConfigError, RunFile, load_run

ROOT = Path(__file__).resolve().parents[2]
RUNS = sorted((ROOT / "configs" / "runs").glob("*.yaml"))


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.name)
def test_shipped_run_files_validate(path):
    rf = load_run(path)
    assert isinstance(rf, RunFile)
    assert rf.run.pulse_rate_hz > 0


def _write(tmp_path, text):
    p = tmp_path / "run.yaml"
    p.write_text(text.replace("@CFG@", str(ROOT / "configs")))
    return p


BASE = """\
instrument: @CFG@/instruments/leap5000xs.yaml
specimen: @CFG@/specimens/nmc811-cr.yaml
run:
  name: t
  laser_pj: 5.0
  seed: 3
"""


def test_negative_laser_energy_names_line_and_field(tmp_path):
    p = _write(tmp_path, BASE.replace("laser_pj: 5.0", "laser_pj: -5"))
    with pytest.raises(ConfigError) as e:
        load_run(p)
    assert str(e.value) == f"{p}:5 run.laser_pj: must be > 0.0, got -5"


def test_misspelt_key_names_line(tmp_path):
    p = _write(tmp_path, BASE.replace("  seed: 3", "  sed: 3"))
    with pytest.raises(ConfigError) as e:
        load_run(p)
    assert f"{p}:6 run.sed: unknown key" in str(e.value)


def test_error_in_included_file_names_that_file(tmp_path):
    spec = (ROOT / "configs/specimens/nmc811.yaml").read_text().replace(
        "apex_radius_nm: 30.0", "apex_radius_nm: -1")
    (tmp_path / "spec.yaml").write_text(spec)
    p = _write(tmp_path, BASE.replace("@CFG@/specimens/nmc811-cr.yaml", "spec.yaml"))
    with pytest.raises(ConfigError) as e:
        load_run(p)
    line = next(i for i, s in enumerate(spec.splitlines(), 1) if "apex_radius_nm" in s)
    assert f"{tmp_path / 'spec.yaml'}:{line} specimen.apex_radius_nm: must be > 0" in str(e.value)


def test_laser_and_schedule_are_exclusive(tmp_path):
    p = _write(tmp_path, BASE + "  schedule: [{laser_pj: 5, ions: 10}]\n")
    with pytest.raises(ConfigError, match="exactly one of laser_pj or schedule"):
        load_run(p)


def test_overrides_apply(configs):
    rf = load_run(configs / "runs/nmc811-cr-5pj.yaml", {"run.seed": 9, "run.stop.ions": 123})
    assert (rf.run.seed, rf.run.stop.ions) == (9, 123)


def test_cli_config_check_exits_2_without_traceback(tmp_path):
    p = _write(tmp_path, BASE.replace("laser_pj: 5.0", "laser_pj: -5"))
    proc = subprocess.run([sys.executable, "-m", "apt_daq.cli", "config", "check", str(p)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "run.laser_pj: must be > 0.0, got -5" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_schema_is_json():
    import json

    proc = subprocess.run([sys.executable, "-m", "apt_daq.cli", "config", "schema"],
                          capture_output=True, text=True, check=True)
    schema = json.loads(proc.stdout)
    assert "run" in schema["properties"]


def test_config_reference_is_up_to_date():
    from apt_daq.config import markdown_reference

    assert (ROOT / "docs/config.md").read_text().strip() == markdown_reference().strip(), (
        "docs/config.md is stale: python -m apt_daq.config > docs/config.md")

"""Start-up: the CLI builds its parser without importing what the commands run with.

No timing here (the machine is shared and noisy): each test runs a fresh interpreter and looks
at ``sys.modules`` afterwards. How fast it starts is ``apt-daq bench --only startup``'s figure,
beside a bare ``python -c "import numpy, h5py"`` timed in the same run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

#: what no command needs just to parse its arguments: big libraries and apt-daq's own layers
HEAVY = ("scipy", "dask", "distributed", "matplotlib", "numba", "bokeh", "pandas", "pyarrow",
         "pydantic", "yaml", "rich", "asyncio", "apt_daq.config", "apt_daq.run",
         "apt_daq.drivers", "apt_daq.sim", "apt_daq.web", "apt_daq.pipeline",
         "apt_daq.analysis", "apt_daq.io.store", "apt_daq.io.epos")
#: what ``info`` and ``config check`` do not need either (they do read HDF5 or YAML)
NOT_FOR_SHORT_COMMANDS = ("scipy", "dask", "distributed", "matplotlib", "numba", "bokeh",
                          "pandas", "pyarrow", "asyncio", "apt_daq.run", "apt_daq.sim",
                          "apt_daq.web", "apt_daq.pipeline", "apt_daq.analysis")

PROBE = """
import contextlib, io, json, sys
from apt_daq.cli import build_parser, main
args = json.loads(sys.argv[1])
out = io.StringIO()
with contextlib.redirect_stdout(out):
    if args is None:
        build_parser()
        code = 0
    else:
        try:
            code = main(args)
        except SystemExit as e:  # --help
            code = e.code
print(json.dumps({"code": code, "modules": sorted(sys.modules), "out": out.getvalue()}))
"""


def _loaded(args: list[str] | None, watch: tuple[str, ...]) -> tuple[dict, list[str]]:
    p = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    mods = set(res["modules"])
    return res, sorted(w for w in watch if w in mods)


def test_build_parser_imports_nothing_heavy():
    _, heavy = _loaded(None, (*HEAVY, "numpy", "h5py"))
    assert heavy == [], f"build_parser() imported {heavy}: import them where the command runs"


def test_help_imports_nothing_heavy():
    res, heavy = _loaded(["--help"], (*HEAVY, "numpy", "h5py"))
    assert res["code"] == 0 and "info" in res["out"] and "config" in res["out"]
    assert heavy == [], f"apt-daq --help imported {heavy}"


def test_each_command_help_imports_nothing_heavy():
    for cmd in ("run", "info", "analyze", "export", "import", "bench", "config", "view",
                "campaign", "range", "calibrate", "warmup"):
        res, heavy = _loaded([cmd, "--help"], HEAVY)
        assert res["code"] == 0, cmd
        assert heavy == [], f"apt-daq {cmd} --help imported {heavy}"


def test_info_loads_no_analysis_stack(tmp_path: Path):
    from apt_daq.hits import HIT_DTYPE
    from apt_daq.io.store import RunWriter

    run = tmp_path / "small.h5"
    with RunWriter(run, {"simulated": True}) as w:
        w.append(hits=np.zeros(100, HIT_DTYPE))
        w.finish("done")
    res, heavy = _loaded(["info", str(run), "--json"],
                         (*NOT_FOR_SHORT_COMMANDS, "pydantic", "yaml", "apt_daq.config"))
    assert res["code"] == 0 and json.loads(res["out"])["counts"]["hits"] == 100
    # the config models load only when a run's config is read (RunReader.run_file)
    assert heavy == [], f"apt-daq info imported {heavy}"


def test_config_check_loads_no_analysis_stack():
    res, heavy = _loaded(["config", "check", "nmc811-cr-5pj"], NOT_FOR_SHORT_COMMANDS)
    assert res["code"] == 0 and ": ok (" in res["out"]
    assert heavy == [], f"apt-daq config check imported {heavy}"


def test_view_default_port_is_the_servers():
    from apt_daq.commands import view
    from apt_daq.web.server import DEFAULT_PORT

    assert view.DEFAULT_PORT == DEFAULT_PORT

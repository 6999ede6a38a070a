"""``apt-daq plot`` never writes a figure it cannot draw, and says which and why.

apav's real LEAP Si run imported from its POS file (x, y, z, m/n: no detector coordinates, no
pulses or multiplicities). Before: ``plot`` wrote hitmap.png as a uniform zero image (colour
bar -0.1..0.1) with exit 0 and no word, and ``--only multihit`` exited 0 with an empty folder,
where ``--only fda`` said ``error: no FDA: ...`` and exited 2. Now: drawing all, such a
figure is not written and a warning line names it and why; asked for by ``--only``, it is an
error line and exit 2, as ``--only fda``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def si_pos(tmp_path_factory) -> Path:
    apav = pytest.importorskip("apav")
    pos = Path(apav.__file__).parent / "tests" / "Si.pos"
    if not pos.exists():
        pytest.skip("apav's Si test data not installed")
    out = tmp_path_factory.mktemp("si_pos") / "si_pos.h5"
    p = _cli("import", str(pos), "--ranges", str(pos.with_name("Si.RRNG")), "-o", str(out))
    assert p.returncode == 0, p.stderr
    return out


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apt_daq.cli", *args], capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_plot_all_leaves_out_what_it_cannot_draw_and_says_why(si_pos, tmp_path):
    out = tmp_path / "pp3"
    p = _cli("plot", str(si_pos), "-o", str(out))
    assert p.returncode == 0, p.stderr
    written = sorted(f.name for f in out.iterdir())
    assert "spectrum.png" in written and "slices.png" in written
    assert "hitmap.png" not in written and "multihit.png" not in written
    err = " ".join(p.stderr.split())
    assert "warning:" in err
    assert "no hitmap figure: the imported POS file has no detector coordinates" in err
    assert "no multihit figure: the imported POS file records neither pulse numbers" in err
    # what it printed is what it wrote
    assert sorted(Path(line).name for line in p.stdout.split()) == written


@pytest.mark.parametrize("name, why", [
    ("multihit", "records neither pulse numbers nor multiplicities"),
    ("hitmap", "has no detector coordinates"),
])  # fmt: skip
def test_only_a_figure_it_cannot_draw_is_an_error(si_pos, tmp_path, name, why):
    out = tmp_path / "pp"
    p = _cli("plot", str(si_pos), "-o", str(out), "--only", name, "--format", "svg")
    assert p.returncode == 2, (p.stdout, p.stderr)
    err = " ".join(p.stderr.split())
    assert f"error: no {name}: " in err and why in err, err
    assert "Traceback" not in p.stderr
    assert not out.exists() or not any(out.iterdir())

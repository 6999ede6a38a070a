"""``apt-daq analyze`` streams: its peak memory does not grow with the run (issue 22).

Two synthetic runs (the stream bench's builder: NMC811-like ions over the whole detector, the
voltage ramping, no calibration stored, so analyze runs every pass: the fit of the
corrections, the calibrated spectrum, the ranged and reconstructed stream), of N = 2 M and
4N = 8 M ions, each analysed by ``apt-daq analyze --json --no-store`` in a fresh process that
reports its own peak RSS (VmHWM). N is the fit's sample size (2 M) and four stream chunks, so
both runs fill every fixed-size buffer; what remains is what grows with the ions.

Tolerance: 3 bytes per added ion (18 MB over the 6 M more ions of the larger run; measured:
+3 MB on 352 MB). Anything that keeps a per-ion array or views of the chunks fails it: before
this test, the slices' strided views kept every chunk's /derived rows (18 B an ion), the
fit's sample kept each chunk's uncorrected m/n (8 B an ion past 2 M ions), and FDA and MRP
kept the ROI's range indices and the peak windows' masses (~10 B an ion with the final
concatenations): +158 MB here. A lone int16 per ion (2 B) would slip under it; that is the
resolution a 30 s test buys (a larger run would not).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

N = 2_000_000
BYTES_PER_ADDED_ION = 3.0

_CHILD = """
import contextlib, io, json, sys
from apt_daq.bench.stream import peak_rss_mb
from apt_daq.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = main(["analyze", sys.argv[1], "--json", "--no-store"])
summary = json.loads(out.getvalue())
print(json.dumps({"rc": rc, "ions": summary["ions_total"], "rss_mb": peak_rss_mb(),
                  "fda": summary["fda"], "mrp": len(summary["mrp"])}))
"""


def _analyze_rss(path: Path) -> dict:
    res = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_analyze_peak_memory_does_not_grow_with_the_run(tmp_path: Path) -> None:
    from apt_daq.bench.stream import build_run

    small, large = tmp_path / "n.h5", tmp_path / "4n.h5"
    build_run(small, N, calibrated=False)
    build_run(large, 4 * N, calibrated=False)
    a, b = _analyze_rss(small), _analyze_rss(large)
    assert (a["ions"], b["ions"]) == (N, 4 * N)
    # every pass ran: FDA and MRP are among what the last pass gives
    assert a["fda"] and b["fda"] and a["mrp"] and b["mrp"]
    grown_mb = b["rss_mb"] - a["rss_mb"]
    allowed_mb = BYTES_PER_ADDED_ION * 3 * N / 2**20
    assert grown_mb < allowed_mb, (
        f"peak RSS {a['rss_mb']:.0f} MB at {N} ions, {b['rss_mb']:.0f} MB at {4 * N}: "
        f"+{grown_mb:.0f} MB, more than {allowed_mb:.0f} MB ({BYTES_PER_ADDED_ION} B per "
        "added ion): something keeps per-ion data")

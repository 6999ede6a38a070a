"""The live web view, driven as an operator would: a real ``apt-daq run --serve`` process and a
real headless Chromium (Debian's chromium + chromium-driver, through selenium).

The page's ion counter moves; its Pause button pauses the run (the page says paused, the
counter stands still); Resume resumes it (the file's /meta transitions: paused, acquiring);
Abort (clicked twice: the first click arms it) ends the run with /meta state ``aborted`` and a last
/log row with HV output and laser emission off. A view attached to the file being written
follows it. Loopback needs no token; any other address refuses a request without it.

``APT_DAQ_LIVE_SCREENSHOT=docs/live-view.png`` also saves the page there (the docs' picture).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from apt_daq.errors import UserError
from apt_daq.io.store import RunReader

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "configs" / "runs" / "nmc811-cr-5pj.yaml"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

# the text of every element matching a CSS selector, looking inside Bokeh's shadow roots
DEEP = """
function deep(root, sel, out) {
  root.querySelectorAll(sel).forEach(e => out.push(e));
  root.querySelectorAll('*').forEach(e => { if (e.shadowRoot) deep(e.shadowRoot, sel, out); });
  return out;
}
"""
TEXTS = DEEP + "return deep(document, arguments[0], []).map(e => e.textContent);"
BUTTON = DEEP + """
const hosts = deep(document, arguments[0], []);
if (!hosts.length) return null;
const h = hosts[0];
return (h.shadowRoot && h.shadowRoot.querySelector('button')) || h.querySelector('button');
"""


# ------------------------------------------------------------------------------ no browser
def test_address_parsing_and_loopback_rule():
    from apt_daq.web import is_loopback, parse_address

    assert parse_address("8080") == parse_address("127.0.0.1:8080")
    a = parse_address("0.0.0.0:0")
    assert (a.host, a.port, a.loopback) == ("0.0.0.0", 0, False)
    assert parse_address("[::1]:5006").loopback
    assert parse_address("localhost:5006").loopback
    assert is_loopback("127.3.2.1") and not is_loopback("192.168.1.20")
    for bad in ("x", "host:port", "70000", "h:-1"):
        with pytest.raises(UserError, match="PORT"):
            parse_address(bad)


def test_snapshot_bins_every_hit_once_and_thins_traces():
    from apt_daq.web.snapshot import BIN_DA, TRACE_ROWS, LiveSnapshot

    snap = LiveSnapshot(title="t", detector_radius_mm=40.0)
    rng = np.random.default_rng(1)
    mass = rng.uniform(1, 99, 5000)
    x, y = rng.uniform(-39, 39, (2, 5000))
    snap.add_hits(mass, x, y)
    snap.add_hits(np.array([7.0 + BIN_DA / 2]), np.array([0.1]), np.array([0.1]))
    _, spectrum, hitmap = snap.histograms()
    assert spectrum.sum() == hitmap.sum() == 5001
    assert spectrum[int(7.0 / BIN_DA)] >= 1
    for i in range(TRACE_ROWS + 10):
        snap.add_trace(time_s=i, v_dc=1.0, v_setpoint=1.0, rate=0.005, laser_pj=5.0)
    gen, total, rows, replace = snap.traces(-1, 0)
    assert replace and len(rows["time_s"]) <= TRACE_ROWS
    assert rows["time_s"][0] == 0 and np.all(np.diff(rows["time_s"]) > 0)
    snap.add_trace(time_s=1e6)
    snap.add_trace(time_s=1e6 + 1)
    _, total2, new, replace2 = snap.traces(gen, total)
    assert not replace2 and len(new["time_s"]) == total2 - total == 1  # stride 2 after thinning


def _get(url: str, cookie: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Set-Cookie") or ""
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_token_rule():
    """Loopback: served to anyone on the machine. Any other address: refused (403) without the
    token; the token as a query parameter or the cookie it sets lets the page in."""
    pytest.importorskip("bokeh")
    from bokeh.models import Div

    from apt_daq.web import LiveServer, parse_address

    def make(doc):
        doc.add_root(Div(text="hello"))

    local = LiveServer(make, parse_address("127.0.0.1:0")).start()
    try:
        assert local.token is None and _get(f"http://127.0.0.1:{local.port}/")[0] == 200
    finally:
        local.close(linger_s=0)
    wide = LiveServer(make, parse_address("0.0.0.0:0")).start()
    try:
        assert wide.token and f"?token={wide.token}" in wide.url
        base = f"http://127.0.0.1:{wide.port}/"  # reached by loopback, served on all addresses
        assert _get(base)[0] == 403
        assert _get(base + "?token=wrong")[0] == 403
        assert _get(base, cookie="apt_daq_token=wrong")[0] == 403
        status, set_cookie = _get(base + f"?token={wide.token}")
        assert status == 200 and f"apt_daq_token={wide.token}" in set_cookie
        assert _get(base, cookie=f"apt_daq_token={wide.token}")[0] == 200
    finally:
        wide.close(linger_s=0)


def test_buttons_only_when_served_by_the_run_and_abort_needs_a_second_click():
    pytest.importorskip("bokeh")
    from bokeh.document import Document
    from bokeh.models import Button

    from apt_daq.web.document import Controls, build
    from apt_daq.web.snapshot import LiveSnapshot

    def doc_of(controls):
        doc = Document()
        build(doc, LiveSnapshot(title="t", detector_radius_mm=40.0), controls)
        return doc

    assert not list(doc_of(None).select({"type": Button}))  # a file's view is read-only
    calls: list[str] = []
    doc = doc_of(Controls(lambda: calls.append("pause"), lambda: calls.append("resume"),
                          lambda: calls.append("abort")))
    buttons = {b.css_classes[0]: b for b in doc.select({"type": Button})}
    assert set(buttons) == {"apt-pause", "apt-resume", "apt-abort"}

    def click(name):
        from bokeh.events import ButtonClick

        buttons[name]._trigger_event(ButtonClick(buttons[name]))

    click("apt-pause")
    click("apt-abort")
    assert calls == ["pause"]  # the first Abort click only arms it
    click("apt-abort")
    assert calls == ["pause", "abort"]


# ------------------------------------------------------------------------------ the browser
def _browser(tmp: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1500,1450",
                 f"--user-data-dir={tmp}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _wait(what: str, cond, timeout_s: float, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended while waiting for {what}: "
                                 f"{proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _text(driver, selector: str) -> str:
    texts = driver.execute_script(TEXTS, selector)
    return texts[0].strip() if texts else ""


def _ions(driver) -> int:
    t = _text(driver, ".apt-ions").replace(",", "")
    return int(t) if t.isdigit() else -1


def _click(driver, selector: str) -> None:
    button = driver.execute_script(BUTTON, selector)
    assert button is not None, f"no {selector} button on the page"
    button.click()


def _transitions(out: Path) -> list[str]:
    try:
        with RunReader(out) as r:
            return [t[1] for t in r.meta.get("transitions") or []]
    except Exception:  # mid-write: try again
        return []


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="needs Debian's chromium and chromium-driver (apt-get install -y "
                    "chromium chromium-driver; .ci/run installs them)")
def test_browser_counters_pause_resume_abort(tmp_path):
    pytest.importorskip("bokeh")
    pytest.importorskip("selenium")
    from apt_daq.web.sources import FileFollower

    out = tmp_path / "live.h5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "apt_daq.cli", "run", str(RUN), "-o", str(out), "--ions",
         "100000000", "--quiet", "--serve", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    driver = None
    try:
        url = _wait("the URL on stdout", lambda: next(
            (m.group(0) for b in list(lines)
             if (m := re.search(r"http://127\.0\.0\.1:\d+/\S*", b.decode()))), None), 60, proc)
        driver = _browser(Path(tempfile.mkdtemp(dir=tmp_path, prefix="chromium-")))
        driver.get(url)
        # the counters move (a cold numba cache compiles the kernels first)
        first = _wait("a first ion count", lambda: max(_ions(driver), 0), 120, proc)
        second = _wait("the ion count to move", lambda: (n := _ions(driver)) > first and n,
                       20, proc)
        assert second > first > 0
        assert _text(driver, ".apt-state-text") == "acquiring"
        # a view of the file being written follows it
        follower = FileFollower(out)
        follower.poll_once()
        seen = follower.snap.status_copy()
        assert seen.ions > 0 and seen.state == "acquiring", (seen, follower.error)

        _click(driver, ".apt-pause")
        _wait("the page to say paused", lambda: _text(driver, ".apt-state-text") == "paused",
              20, proc)
        held = _ions(driver)
        time.sleep(1.5)  # three refreshes: a paused run takes no ions
        assert _ions(driver) == held

        _click(driver, ".apt-resume")
        _wait("the page to say acquiring", lambda: _text(driver, ".apt-state-text")
              == "acquiring", 20, proc)
        _wait("the count to move after resume", lambda: _ions(driver) > held, 20, proc)
        if os.environ.get("APT_DAQ_LIVE_SCREENSHOT"):
            time.sleep(1.5)  # a fresh spectrum and hit map
            driver.save_screenshot(os.environ["APT_DAQ_LIVE_SCREENSHOT"])
        # the file's transitions: paused, then acquiring again (the store flushes /meta with
        # the next block's /log row, so a reader of the file sees the pause once it resumed)
        _wait("/meta transitions to say paused", lambda: "paused" in _transitions(out), 10)
        states = _transitions(out)
        assert "acquiring" in states[states.index("paused"):]

        _click(driver, ".apt-abort")  # arms
        time.sleep(0.7)
        assert proc.poll() is None, "one click on Abort must not abort"
        _click(driver, ".apt-abort")  # confirms
        proc.wait(timeout=30)
        # the page keeps the run's last state, the end the file records (docs/live.md: the
        # view serves until the run has ended and its last state is shown)
        with RunReader(out) as r:
            ions = r.count("hits")
        assert _text(driver, ".apt-state-text") == "aborted"
        assert _ions(driver) == ions
    finally:
        if driver is not None:
            driver.quit()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, proc.stderr.read().decode()[-2000:]  # ended, not done
    with RunReader(out) as r:
        assert str(r.meta["state"]).startswith("aborted"), r.meta["state"]
        assert "abort requested" in r.meta["end_reason"]
        states = [t[1] for t in r.meta["transitions"]]
        assert states.index("paused") < states.index("aborted")
        last = r.log[-1]
        assert last["hv_on"] == 0 and last["laser_on"] == 0

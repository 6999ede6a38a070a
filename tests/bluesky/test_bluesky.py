"""The bluesky face: ophyd-async devices over the drivers, and apt-daq's run engine as a bluesky
plan whose documents validate against event-model's schemas, with pause/resume/abort and
suspenders through the RunEngine mapped onto the engine's safe paths."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import h5py
import numpy as np
import pytest

bluesky = pytest.importorskip(
    "bluesky", reason="the bluesky extra is not installed (pip install 'apt-daq[bluesky]')")
pytest.importorskip("ophyd_async", reason="the bluesky extra is not installed (ophyd-async)")
event_model = pytest.importorskip("event_model", reason="the bluesky extra is not installed")

import bluesky.plan_stubs as bps  # noqa: E402
from bluesky import RunEngine  # noqa: E402
from bluesky.suspenders import SuspendBoolLow  # noqa: E402
from bluesky.utils import FailedStatus, RunEngineInterrupted  # noqa: E402
from ophyd_async.plan_stubs import ensure_connected  # noqa: E402

from apt_daq.bluesky import HITS_MIMETYPE, WatchSignal, acquire, open_devices  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "configs" / "runs" / "nmc811-cr-5pj.yaml"
IONS = 30_000


@pytest.fixture
def RE():
    re = RunEngine({}, call_returns_result=True)
    yield re
    if re.state != "idle":
        re.halt()


class Docs:
    """Every document, validated against event-model's JSON schema as it arrives."""

    def __init__(self) -> None:
        self.docs: list[tuple[str, dict]] = []
        self.on_event = None

    def __call__(self, name: str, doc: dict) -> None:
        event_model.schema_validators[event_model.DocumentNames(name)].validate(doc)
        self.docs.append((name, doc))
        if name == "event" and self.on_event is not None:
            self.on_event(doc)

    def of(self, name: str) -> list[dict]:
        return [d for n, d in self.docs if n == name]

    def events(self, stream: str = "primary") -> list[dict]:
        uid = next(d["uid"] for d in self.of("descriptor") if d["name"] == stream)
        return [d for d in self.of("event") if d["descriptor"] == uid]


def _meta(f: h5py.File, key: str):
    v = f["meta"].attrs[key]
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _check_run(docs: Docs, path: Path) -> dict:
    """What every run's documents must say about its file; returns the file's facts."""
    with h5py.File(path, "r") as f:
        log, n_hits = f["log"][:], f["hits"].shape[0]
        facts = {"log": log, "hits": n_hits, "state": _meta(f, "state"),
                 "transitions": [tuple(x.decode() if isinstance(x, bytes) else x for x in t)
                                 for t in _meta(f, "transitions")]}
    names = [n for n, _ in docs.docs]
    assert names[0] == "start" and names[-1] == "stop" and names.count("start") == 1
    events = docs.events("primary")
    # one event per readout block: the /log rows but the start row and the end row
    assert len(events) == len(log) - 2
    assert [e["seq_num"] for e in events] == list(range(1, len(events) + 1))
    blocks = log[1:-1]
    got = {k: np.array([e["data"][k] for e in events]) for k in events[0]["data"]}
    np.testing.assert_allclose(got["v_measured"], blocks["v_dc"], rtol=1e-6)
    np.testing.assert_allclose(got["v_setpoint"], blocks["v_setpoint"], rtol=1e-6)
    np.testing.assert_allclose(got["rate"], blocks["rate"], rtol=1e-5)
    np.testing.assert_allclose(got["laser_pj"], blocks["laser_pj"], rtol=1e-6)
    assert (got["ions"] == blocks["ions"]).all() and (got["pulses"] == blocks["pulses"]).all()
    # every block kept: the file's hits are the sum of the events' ion increments
    assert int(got["block_ions"].sum()) == n_hits == int(blocks["ions"][-1])
    assert int(got["block_pulses"].sum()) == int(blocks["pulses"][-1])
    # the run file as a stream resource: /hits, HDF5, every row announced once, in order
    (sres,) = docs.of("stream_resource")
    assert sres["mimetype"] == HITS_MIMETYPE == "application/x-hdf5"
    assert sres["uri"] == path.resolve().as_uri()
    assert sres["parameters"]["dataset"] == "/hits" and sres["data_key"] == "hits"
    hits_desc = next(d for d in docs.of("descriptor") if d["name"] == "hits")
    assert hits_desc["data_keys"]["hits"]["external"] == "STREAM:"
    assert np.dtype([tuple(f) for f in hits_desc["data_keys"]["hits"]["dtype_numpy"]]) == (
        h5py.File(path, "r")["hits"].dtype)
    datums = docs.of("stream_datum")
    assert all(d["stream_resource"] == sres["uid"] and d["descriptor"] == hits_desc["uid"]
               for d in datums)
    starts = [d["indices"]["start"] for d in datums]
    stops = [d["indices"]["stop"] for d in datums]
    assert starts[0] == 0 and starts[1:] == stops[:-1] and stops[-1] == n_hits
    assert [d["seq_nums"]["start"] - 1 for d in datums] == starts
    stop = docs.of("stop")[0]
    assert stop["num_events"] == {"primary": len(events), "hits": n_hits}
    return facts


def test_plan_documents_validate_and_map_the_run_file(RE, tmp_path: Path) -> None:
    docs = Docs()
    out = tmp_path / "bs.h5"
    result = RE(acquire(RUN, out, run__stop__ions=IONS, md={"operator": "test"}), docs)
    assert result.exit_status == "success"
    facts = _check_run(docs, out)
    start = docs.of("start")[0]
    assert start["run_name"] == "nmc811-cr-5pj" and start["specimen"] == "NMC811 + Cr coating"
    assert start["laser_pj"] == 5.0 and start["target_detection_rate"] == 0.005
    assert start["seed"] == 1 and start["stop_ions"] == IONS and start["operator"] == "test"
    assert start["run_file"] == str(out.resolve()) and start["simulated"] is True
    stop = docs.of("stop")[0]
    assert stop["exit_status"] == "success" and stop["reason"].startswith("ion count")
    assert facts["state"] == "done" and facts["hits"] >= IONS
    assert len(docs.events()) > 10  # several blocks: the mapping is exercised
    # the run ended safely: a last /log row with HV and laser off
    assert facts["log"]["hv_on"][-1] == 0 and facts["log"]["laser_on"][-1] == 0


def test_pause_resume_through_the_run_engine_keeps_every_block(RE, tmp_path: Path) -> None:
    docs = Docs()
    out = tmp_path / "pause.h5"
    asked = threading.Event()

    def pause_at_5(ev: dict) -> None:
        if ev["seq_num"] == 5 and not asked.is_set():
            asked.set()  # request_pause must come from another thread than the RE's loop
            threading.Thread(target=RE.request_pause).start()

    docs.on_event = pause_at_5
    with pytest.raises(RunEngineInterrupted):
        RE(acquire(RUN, out, run__stop__ions=IONS), docs)
    assert RE.state == "paused"
    n_paused = len(docs.events())
    time.sleep(0.5)  # paused: the engine holds (laser off) and makes no blocks
    assert len(docs.events()) == n_paused
    result = RE.resume()
    assert result.exit_status == "success"
    facts = _check_run(docs, out)
    states = [t[1] for t in facts["transitions"]]
    i = states.index("paused")
    assert facts["transitions"][i][2] == "pause requested"
    assert states[i + 1] == "acquiring" and "resumed" in facts["transitions"][i + 1][2]
    assert facts["state"] == "done" and facts["hits"] >= IONS


@pytest.mark.parametrize("while_", ["paused", "running"])
def test_abort_through_the_run_engine_ends_safe(RE, tmp_path: Path, while_: str) -> None:
    docs = Docs()
    out = tmp_path / "abort.h5"
    asked = threading.Event()

    def interrupt_at_3(ev: dict) -> None:
        if ev["seq_num"] == 3 and not asked.is_set():
            asked.set()  # from another thread than the RE's loop
            ask = RE.request_pause if while_ == "paused" else lambda: RE.abort("enough")
            threading.Thread(target=ask).start()

    docs.on_event = interrupt_at_3
    with pytest.raises(RunEngineInterrupted):
        RE(acquire(RUN, out, run__stop__ions=IONS), docs)
    if while_ == "paused":
        assert RE.state == "paused"
        RE.abort("enough")
    assert RE.state == "idle"
    stop = docs.of("stop")[0]
    assert stop["exit_status"] == "abort" and "abort" in stop["reason"]
    facts = _check_run(docs, out)
    assert facts["state"] == "aborted" and facts["hits"] < IONS
    assert facts["log"]["hv_on"][-1] == 0 and facts["log"]["laser_on"][-1] == 0


def test_a_bluesky_suspender_pauses_the_engine(RE, tmp_path: Path) -> None:
    docs = Docs()
    out = tmp_path / "suspend.h5"
    vacuum_ok = WatchSignal("vacuum_ok", True)
    RE.install_suspender(SuspendBoolLow(vacuum_ok, sleep=0))

    def bad_vacuum_at_4(ev: dict) -> None:
        if ev["seq_num"] == 4:
            threading.Thread(target=vacuum_ok.put, args=(False,)).start()
            threading.Timer(0.5, vacuum_ok.put, args=(True,)).start()

    docs.on_event = bad_vacuum_at_4
    result = RE(acquire(RUN, out, run__stop__ions=IONS), docs)
    assert result.exit_status == "success"
    facts = _check_run(docs, out)
    states = [t[1] for t in facts["transitions"]]
    assert "paused" in states
    assert states[states.index("paused") + 1] == "acquiring"


def test_devices_set_through_the_drivers_safety_rules(RE) -> None:
    with open_devices(RUN) as devs:
        RE(ensure_connected(*devs))
        hv = devs.hv.driver
        sent: list[float] = []
        send = hv._send_setpoint
        hv._send_setpoint = lambda v: (sent.append(v), send(v))[1]
        RE(bps.mv(devs.hv.output, True))
        RE(bps.mv(devs.hv.setpoint, 3000.0))  # a ramp, never a jump
        assert sent[-1] == 3000.0 and len(sent) > 10
        assert max(abs(b - a) for a, b in pairwise([0.0, *sent])) <= hv.max_step_v
        RE(bps.mv(devs.hv, 3500.0))  # the device itself is Movable: the same ramp
        assert sent[-1] == 3500.0
        assert max(abs(b - a) for a, b in pairwise(sent)) <= hv.max_step_v
        with pytest.raises(FailedStatus, match="above limit_v"):
            RE(bps.mv(devs.hv.setpoint, hv.limit_v + 1))
        with pytest.raises(FailedStatus, match="max_energy_pj"):
            RE(bps.mv(devs.laser.energy, devs.laser.driver.max_energy_pj + 1))
        RE(bps.mv(devs.laser.energy, 5.0, devs.laser.emission, True))
        seen = Docs()
        from bluesky.plans import count

        RE(count([devs.hv, devs.laser, devs.detector]), seen)
        data = seen.of("event")[0]["data"]
        assert data["hv-setpoint"] == 3500.0 and 3000.0 < data["hv-voltage"] <= 3500.0
        assert data["hv-output"] is True and data["laser-energy"] == 5.0
        assert data["laser-emission"] is True and data["detector-hits"] == 0
        desc = seen.of("descriptor")[0]
        assert desc["data_keys"]["hv-voltage"]["units"] == "V"
        assert desc["data_keys"]["laser-energy"]["units"] == "pJ"
    assert Counter(n for n, _ in seen.docs) == {"start": 1, "descriptor": 1, "event": 1,
                                                "stop": 1}


def test_an_engine_failure_is_a_failed_stop_and_raises(RE, tmp_path: Path) -> None:
    from apt_daq.config import ConfigError
    from apt_daq.errors import DataFileError

    with pytest.raises(ConfigError):  # a bad config is refused before the RunEngine starts
        acquire(RUN, tmp_path / "bad.h5", overrides={"run.laser_pj": -5})
    out = tmp_path / "taken.h5"
    out.write_bytes(b"")
    docs = Docs()
    with pytest.raises(DataFileError, match="exists"):  # the engine refuses to overwrite
        RE(acquire(RUN, out, run__stop__ions=IONS), docs)
    stop = docs.of("stop")[0]
    assert stop["exit_status"] == "fail" and "DataFileError" in stop["reason"]
    assert docs.of("event") == [] and docs.of("stream_resource") == []

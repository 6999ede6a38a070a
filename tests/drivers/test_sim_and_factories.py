"""sim backends (real VirtualLeap for HV/laser, a fake leap for the DLD), the factories
(pydantic, dict, YAML, plug-ins) and open_instruments' safe exit."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from apt_daq.drivers.base import DriverError, SafetyError
from apt_daq.drivers.config import HvConfig
from apt_daq.drivers.sim_backends import SimDld
from apt_daq.sim.devices import HvSupplyModel, LaserModel

from apt_daq import drivers
from apt_daq.config import ConfigError, load_run
from apt_daq.hits import RAW_DTYPE, TRUTH_DTYPE

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "configs" / "runs" / "nmc811-bare-5pj.yaml"


class FakeLeap:
    """Just enough of VirtualLeap for the DLD: each advance gives two pulses' worth of hits,
    one of them a double hit, with truth aligned and one lost ion; with ``max_records`` it
    fires only 300 pulses (a buffer full early) and records the calls it got."""

    def __init__(self):
        self.hv, self.laser = HvSupplyModel(), LaserModel()
        self.now_s, self.pulses, self.fractured = 0.0, 0, False
        self.ion_table = [("Ni+", 58.0, 1), ("O2+", 32.0, 1)]
        self.calls: list[tuple[int, int | None]] = []

    def idle(self, dt_s):
        self.now_s += dt_s
        self.hv.advance(dt_s)

    def advance(self, n, max_records=None):
        self.calls.append((n, max_records))
        if max_records is not None and max_records < 3 * n // 100:
            n = 300
        raw = np.zeros(3, RAW_DTYPE)
        raw["pulse"] = [self.pulses + 1, self.pulses + 1, self.pulses + 5]
        truth = np.zeros(3, TRUTH_DTYPE)
        truth["pulse"] = raw["pulse"]
        truth["species"] = [0, 1, 0]
        lost = np.zeros(1, TRUTH_DTYPE)
        first, self.pulses = self.pulses, self.pulses + n
        self.now_s += n / 1e5
        return SimpleNamespace(raw=raw, truth=truth, lost=lost, pulses=n, first_pulse=first,
                               duration_s=n / 1e5)


def test_sim_dld_chunks_truth_and_counters():
    leap = FakeLeap()
    dld = SimDld(leap, chunk_pulses=1000)
    dld.connect()
    with pytest.raises(DriverError, match="not started"):
        dld.read_chunk(1.0)
    dld.start()
    for _ in range(2):
        raw = dld.read_chunk(1.0)
        truth, lost = dld.read_truth()
        assert raw.dtype == RAW_DTYPE and len(truth) == len(raw) == 3
        assert np.array_equal(truth["pulse"], raw["pulse"]) and len(lost) == 1
    assert leap.calls == [(1000, 65536)] * 2  # one block per chunk, the buffer size passed on
    assert dld.counters == {"pulses": 2000, "hits": 6, "multi_hits": 2, "dropped": 0}
    assert dld.ion_table[1][0] == "O2+"
    dld.stop()


def test_sim_dld_counts_the_pulses_the_leap_fired():
    # a burst fills a 7-record buffer: the leap fires only 300 of the 1000 pulses
    dld = SimDld(FakeLeap(), chunk_pulses=1000, max_chunk_records=7)
    dld.connect()
    dld.start()
    raw = dld.read_chunk(1.0)
    assert len(raw) == 3 and dld.counters["pulses"] == 300


def test_sim_dld_arm_fires_the_next_chunk_in_the_background():
    leap = FakeLeap()
    dld = SimDld(leap, chunk_pulses=1000)
    dld.connect()
    dld.arm()  # not started: nothing to fire
    assert leap.calls == []
    dld.start()
    dld.arm()
    dld.arm()  # idempotent: one chunk in flight
    raw = dld.read_chunk(1.0)
    assert len(raw) == 3 and leap.calls == [(1000, 65536)]
    dld.arm()
    dld.close()  # waits for the chunk in flight, then drops it
    assert len(leap.calls) == 2 and not dld.running


def test_sim_hv_on_virtual_leap_idles_instead_of_sleeping():
    rf = load_run(RUN)
    with drivers.open_instruments(rf) as ins:
        leap = ins.virtual
        assert leap is not None and ins.hv.leap is leap and ins.laser.leap is leap
        assert ins.dld.chunk_pulses == rf.run.chunk_pulses
        ins.hv.output(True)
        ins.hv.ramp_to(2000)
        # 2000 V at 200 V/s: 10 s of instrument time passed, in steps of ramp_step_s
        assert leap.now_s == pytest.approx(10.0)
        leap.idle(1.0)
        assert ins.hv.voltage() == pytest.approx(2000.0)
        ins.laser.set_energy(5.0)
        ins.laser.emission(True)
        assert leap.laser.emission_on
        with pytest.raises(SafetyError):
            ins.hv.set_voltage(2500)  # 500 V in no time
    assert not leap.hv.output_on and not leap.laser.emission_on
    assert not ins.hv.connected


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_open_instruments_exit_by_exception_ends_off(exc):
    rf = load_run(RUN)
    with pytest.raises(exc), drivers.open_instruments(rf) as ins:
        ins.hv.output(True)
        ins.hv.ramp_to(1000)
        ins.laser.emission(True)
        ins.dld.start()
        raise exc()
    leap = ins.virtual
    assert not leap.hv.output_on and leap.hv.setpoint_v == 0.0
    assert not leap.laser.emission_on and not ins.dld.running
    kinds = [what for _, what, _ in leap.hv.received]
    assert kinds[-2:] == ["output", "setpoint_v"]


def test_trip_blocks_laser_emission_in_sim():
    rf = load_run(RUN)
    with drivers.open_instruments(rf) as ins:
        ins.hv.output(True)
        ins.virtual.hv.trip()  # what the simulator does on fracture
        assert ins.hv.tripped()
        with pytest.raises(SafetyError, match="reports a trip"):
            ins.laser.emission(True)
        ins.hv.clear_trip()
        ins.laser.emission(True)


def test_standalone_sim_hv_uses_a_device_bench():
    with drivers.open_hv({"backend": "sim", "limit_v": 3000, "ramp_v_per_s": 1000}) as hv:
        hv.output(True)
        hv.ramp_to(3000)
        assert hv.leap.now_s == pytest.approx(3.0)
        with pytest.raises(SafetyError, match="above limit_v 3000"):
            hv.ramp_to(3001)


def test_sim_dld_alone_needs_a_leap():
    with pytest.raises(DriverError, match="open_instruments"):
        drivers.open_dld({"backend": "sim"})


def test_config_inputs_pydantic_dict_yaml(tmp_path):
    model = HvConfig(limit_v=4000)
    assert drivers.load_config(model, "hv") is model
    assert drivers.load_config({"hv": {"limit_v": 4000}}, "hv").limit_v == 4000
    assert drivers.load_config(load_run(RUN), "hv").limit_v == 12000
    assert drivers.load_config(RUN, "hv").ramp_v_per_s == 200
    bad = tmp_path / "d.yaml"
    bad.write_text("laser: {backend: sim}\nhv:\n  backend: sim\n  limit_v: -5\n")
    with pytest.raises(ConfigError) as e:
        drivers.load_config(bad, "hv")
    assert f"{bad}:4 hv.limit_v: must be > 0.0, got -5" in str(e.value)


def test_unknown_backend_and_plugin_entry_point(monkeypatch):
    with pytest.raises(ConfigError, match="unknown backend 'mybox'; built in: scpi, serial, sim"):
        drivers.open_hv({"backend": "mybox"})

    made = {}

    def factory(cfg, **kw):
        made["cfg"] = cfg
        return drivers.open_hv({"backend": "sim", "limit_v": cfg.options["limit"]})

    ep = SimpleNamespace(name="hv.mybox", load=lambda: factory)
    monkeypatch.setattr(drivers, "entry_points", lambda group: [ep])
    hv = drivers.open_hv({"backend": "mybox", "options": {"limit": 1234}})
    assert hv.connected and hv.limit_v == 1234 and made["cfg"].backend == "mybox"


def test_a_command_sent_while_a_chunk_fires_waits_for_it():
    """SimDld.arm fires the next chunk holding the virtual instrument's lock: an HV setpoint
    sent meanwhile reaches the instrument after the chunk, so the chunk is the one the settings
    at arm() give, exactly as if the command had come after read_chunk."""
    cfg = load_run(ROOT / "configs/runs/nmc811-cr-5pj.yaml", {"run.chunk_pulses": 2_000_000})

    def run(armed: bool) -> tuple[bytes, bytes]:
        with drivers.open_instruments(cfg) as ins:
            ins.hv.output(True)
            ins.hv.ramp_to(3150.0)
            ins.laser.set_energy(5.0)
            ins.laser.emission(True)
            ins.dld.start()
            ins.dld.read_chunk(1.0)
            if armed:
                ins.dld.arm()
                ins.hv.set_voltage(3170.0)  # waits for the chunk in flight
                first = ins.dld.read_chunk(1.0)
            else:
                first = ins.dld.read_chunk(1.0)
                ins.hv.set_voltage(3170.0)
            second = ins.dld.read_chunk(1.0)
            assert len(first) > 1000 and np.all(first["v_dc"] <= 3150.0 + 1e-3)
            assert second["v_dc"].max() > 3150.0 + 1.0  # the new setpoint took effect
            return first.tobytes(), second.tobytes()

    assert run(armed=True) == run(armed=False)

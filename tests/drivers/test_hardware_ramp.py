"""``hardware_ramp: true``: the driver also sets the supply's own slew rate to
``ramp_v_per_s``, so even a single setpoint step reaches the specimen as a ramp. Judged from
the device model behind a real socket: the slew it received, and its output voltage, sampled
in instrument time while it follows a ramp."""

from __future__ import annotations

import itertools

import pytest
from apt_daq.drivers.base import FakeClock
from apt_daq.drivers.hv import ScpiHv, SerialHv
from apt_daq.drivers.scpi import make_transport
from apt_daq.drivers.serial_line import SerialTransport
from apt_daq.sim.devices import HvSupplyModel
from apt_daq.sim.scpi_server import serve_hv
from apt_daq.sim.serial_server import serve_hv_tcp

from apt_daq import drivers

RAMP_V_PER_S = 400.0


def output_trace(model: HvSupplyModel, hv, target_v: float) -> list[float]:
    """Ramp to ``target_v`` while the model's output follows in 0.05 s instrument steps."""
    clock = hv.clock
    sleep = clock.sleep

    def advancing_sleep(dt_s: float) -> None:  # the instrument's time moves with the driver's
        n = max(1, round(dt_s / 0.05))
        for _ in range(n):
            model.advance(dt_s / n)
            trace.append(model.output_v)
        sleep(dt_s)

    trace: list[float] = [model.output_v]
    clock.sleep = advancing_sleep
    hv.output(True)
    hv.ramp_to(target_v)
    advancing_sleep(2 * target_v / RAMP_V_PER_S)
    return trace


@pytest.mark.parametrize("kind", ["scpi", "serial"])
def test_supply_slews_at_the_ramp_rate(kind: str) -> None:
    model = HvSupplyModel()  # hardware slew 1000 V/s unless told otherwise
    clock = FakeClock()
    if kind == "scpi":
        server, _ = serve_hv(model, clock=clock.monotonic)
        hv = ScpiHv(make_transport(server.resource, 2.0, "socket"), server.resource,
                    limit_v=6000, ramp_v_per_s=RAMP_V_PER_S, ramp_step_s=1.0,
                    hardware_ramp=True, clock=clock)
    else:
        server, _ = serve_hv_tcp(model, clock=clock.monotonic)
        hv = SerialHv(SerialTransport(server.url, timeout_s=2.0), server.url, limit_v=6000,
                      ramp_v_per_s=RAMP_V_PER_S, ramp_step_s=1.0, hardware_ramp=True,
                      clock=clock)
    try:
        hv.connect()
        assert ("slew_v_per_s", RAMP_V_PER_S) in [(w, v) for _, w, v in model.received]
        trace = output_trace(model, hv, 2000.0)
        hv.safe_off()
    finally:
        hv.close()
        server.stop()
    rates = [(b - a) / 0.05 for a, b in itertools.pairwise(trace)]
    assert max(rates) <= RAMP_V_PER_S * (1 + 1e-9)
    assert max(trace) == pytest.approx(2000.0)


def test_without_hardware_ramp_the_slew_is_left_alone() -> None:
    model = HvSupplyModel()
    server, _ = serve_hv(model)
    try:
        with ScpiHv(make_transport(server.resource, 2.0, "socket"), server.resource,
                    limit_v=6000, ramp_v_per_s=RAMP_V_PER_S, clock=FakeClock()) as hv:
            hv.connect()
        assert model.slew_v_per_s == 1000.0
        assert all(w != "slew_v_per_s" for _, w, _ in model.received)
    finally:
        server.stop()


def test_sim_backend_sets_the_slew_too() -> None:
    with drivers.open_hv({"backend": "sim", "limit_v": 6000, "ramp_v_per_s": 300,
                          "hardware_ramp": True}) as hv:
        assert hv.model.slew_v_per_s == 300.0


def test_a_slew_the_supply_cannot_do_fails_the_connect() -> None:
    model = HvSupplyModel()
    server, _ = serve_hv(model)
    hv = ScpiHv(make_transport(server.resource, 2.0, "socket"), server.resource,
                limit_v=6000, ramp_v_per_s=20000, hardware_ramp=True, clock=FakeClock())
    try:
        with pytest.raises(drivers.InstrumentError, match="SOUR:VOLT:SLEW 20000"):
            hv.connect()
    finally:
        server.stop()

"""The SCPI command table (apt_daq/wire/scpi_commands.py) is the one place the command set is
written: the drivers send its texts, the emulator's server parses with its patterns, and the
pyvisa-sim instruments and docs/protocols.md must agree with it. (tests/drivers/fake_hv.py is
written from the manual, independently of the table, on purpose: the protocol tests check the
drivers against it.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from apt_daq.drivers.hv import SCPI_HV
from apt_daq.drivers.laser import SCPI_LASER
from apt_daq.sim.devices import HvSupplyModel, LaserModel
from apt_daq.sim.scpi_server import HvScpiInterface, LaserScpiInterface
from hypothesis import given
from hypothesis import strategies as st

from apt_daq.wire.scpi_commands import (
    HV,
    LASER,
    NUMBER_RE,
    ScpiCommand,
    commands,
    fmt_number,
    parse_error,
)

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"hv": HV, "laser": LASER}


def _long_form(cmd: ScpiCommand) -> str:
    """The long form, every optional node spelled out, lower case: what a server must also
    accept (``SOURce:VOLTage`` -> ``source:voltage``)."""
    body = cmd.syntax.rstrip("?").replace("[", "").replace("]", "")
    nodes = [n.split("|")[-1] for n in body.split(":")]
    return ":".join(nodes).lower() + ("?" if cmd.is_query else "")


def _yaml_queries(path: Path) -> set[str]:
    """Every ``q`` a pyvisa-sim device answers (dialogues, property getters and setters, the
    error queue), setters with their ``{}``."""
    spec = yaml.safe_load(path.read_text())
    out: set[str] = set()
    for dev in spec["devices"].values():
        out |= {d["q"] for d in dev.get("dialogues", [])}
        out |= {e["q"] for e in dev.get("error", {}).get("error_queue", [])}
        for prop in dev.get("properties", {}).values():
            out |= {prop["getter"]["q"], prop["setter"]["q"]}
    return out


@pytest.mark.parametrize("name", ["hv", "laser"])
def test_the_pyvisa_sim_instrument_has_exactly_the_table(name):
    texts = {c.text for c in commands(TABLES[name]).values()}
    in_yaml = _yaml_queries(ROOT / "configs" / "pyvisa-sim" / f"{name}.yaml")
    assert texts - in_yaml == set(), f"{name}.yaml lacks {sorted(texts - in_yaml)}"
    assert in_yaml - texts == set(), f"{name}.yaml has commands the table lacks"


def test_the_drivers_send_the_table():
    hv = {getattr(SCPI_HV, f) for f in SCPI_HV.__dataclass_fields__} - {None}
    laser = {getattr(SCPI_LASER, f) for f in SCPI_LASER.__dataclass_fields__}
    table = {c.text for t in TABLES.values() for c in commands(t).values()}
    table |= {c.format(on) for t in TABLES.values() for c in commands(t).values()
              if c.arg == "bool" for on in (True, False)}
    assert hv <= table and laser <= table
    assert SCPI_HV.output_on == "OUTP ON" and SCPI_HV.set_voltage == "SOUR:VOLT {}"


@pytest.mark.parametrize("name", ["hv", "laser"])
def test_the_server_takes_every_command_in_short_and_long_form(name):
    model = HvSupplyModel() if name == "hv" else LaserModel()
    iface = HvScpiInterface(model) if name == "hv" else LaserScpiInterface(model)
    for cmd in commands(TABLES[name]).values():
        if cmd.syntax == "*RST":
            continue
        arg = {"number": " 1", "bool": " OFF", None: ""}[cmd.arg]
        for line in (cmd.header + arg, _long_form(cmd) + arg):
            reply = iface.handle(line)
            assert (reply is not None) == cmd.is_query, line
            if reply is not None and cmd.reply_format != "text":
                cmd.parse(reply)  # the driver reads what the server answers
            if cmd.syntax.startswith("SYSTem:ERRor"):
                continue
            code, msg = parse_error(iface.handle("SYST:ERR?"))
            assert code == 0, (line, msg)


def test_an_unknown_node_and_a_stray_argument_are_errors():
    iface = HvScpiInterface(HvSupplyModel())
    assert iface.handle("SOUR:VOLTS?") is None and iface.handle("MEAS:VOLT? 5") is None
    codes = [parse_error(iface.handle("SYST:ERR?"))[0] for _ in range(3)]
    assert codes == [-113, -108, 0]


@given(st.floats(min_value=-1e7, max_value=1e7, allow_nan=False))
def test_a_number_as_sent_is_a_number_as_parsed(x):
    text = fmt_number(x)
    assert re.fullmatch(NUMBER_RE, text), text
    assert float(text) == pytest.approx(round(x, 3), abs=5e-4)


def test_the_protocol_docs_list_every_command():
    doc = (ROOT / "docs" / "protocols.md").read_text()
    for name, table in TABLES.items():
        for cmd in commands(table).values():
            shown = cmd.header + (" <" if cmd.arg == "number" else " ON" if cmd.arg else "")
            assert f"`{shown}" in doc, f"docs/protocols.md: no row for {shown!r} ({name})"


def test_the_line_interface_answers_every_line_command():
    """The HV line protocol's table (apt_daq/wire/hv_line.py): the serial driver sends only
    its texts, and the emulator's line interface answers each one (OK for a setting, a value
    for a query), never ERR."""
    from apt_daq.drivers.hv import LINE_HV
    from apt_daq.sim.serial_server import HvLineInterface

    from apt_daq.wire.hv_line import line_commands

    table = line_commands()
    texts = {c.text for c in table.values()} | {table["set_output"].text.format(v)
                                                for v in (0, 1)}
    sent = {getattr(LINE_HV, f) for f in LINE_HV.__dataclass_fields__} - {None}
    assert sent <= texts, sorted(sent - texts)
    iface = HvLineInterface(HvSupplyModel())
    for name, cmd in table.items():
        line = cmd.text.format(1) if cmd.takes_number else cmd.text
        reply = iface.handle(line)
        assert reply is not None and not reply.startswith("ERR"), (line, reply)
        assert (reply == "OK") == (not cmd.head.endswith("?")), (name, reply)
    assert iface.handle("O 2").startswith("ERR 2 ")

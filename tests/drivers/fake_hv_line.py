"""A misbehaving HV supply that speaks the terse serial line protocol, on a loopback socket that
pyserial opens as ``socket://127.0.0.1:PORT`` (the URL a serial-over-LAN adapter has).

Written for the tests from the line-protocol table of docs/protocols.md, not from the emulator
or the driver's command table: CR LF lines both ways, one reply line per command (``OK`` for
a setting, the value for a query, ``ERR <code> <message>`` for a refused command)::

    ID?  V <volts>  V?  L <volts>  L?  O 1|0  O?  M?  I?  T?  C  R  S <V/s>  S?  E?  W <s>  W?

It misbehaves as :class:`fake_hv.FakeHv` does (the same modes: silent, late, garbage, ``nan``
read-backs, lying that the output is off, dropping the link on output off, and the
``EXTRA_MODES``: lying about the setpoint, wild measured values); only the words differ.
"""

from __future__ import annotations

import math

from fake_hv import FakeHv


class FakeLineHv(FakeHv):
    EOL = "\r\n"

    @property
    def resource(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    @staticmethod
    def classify(line: str) -> tuple[str, float] | None:
        parts = line.upper().split()
        if len(parts) != 2:
            return None
        if parts[0] == "O" and parts[1] in ("1", "0"):
            return ("on", 0.0) if parts[1] == "1" else ("off", 0.0)
        if parts[0] == "V":
            return ("set", float(parts[1]))
        return None

    def _handle(self, line: str) -> str:
        u = line.upper()
        parts = u.split()
        nan = self.bad and self.mode == "nan"
        lie = self.bad and self.mode == "lies_setpoint"
        wild = self.bad and self.mode == "wild_meas"
        queries = {
            "ID?": lambda: "FAKE,HV-LINE-TEST,1,0.1",
            "V?": lambda: (f"{self.lie_setpoint:.3f}" if lie else "nan" if nan
                           else f"{self.setpoint_v:.3f}"),
            "M?": lambda: (self.meas_reply if wild else "nan" if nan
                           else f"{self.setpoint_v if self.on else 0.0:.3f}"),
            "L?": lambda: f"{self.limit_v:.3f}",
            "O?": lambda: "0" if self.bad and self.mode == "lies_off" else str(int(self.on)),
            "I?": lambda: self.meas_reply if wild else "1.000000e-09",
            "T?": lambda: "0",
            "S?": lambda: "400.000",
            "W?": lambda: "0.000",
            "E?": lambda: "0 No error",
        }
        if u in queries:
            return queries[u]()
        if u in ("C",):
            return "OK"
        if u == "R":
            self.on, self.setpoint_v = False, 0.0
            return "OK"
        if len(parts) == 2 and parts[0] == "O":
            if parts[1] not in ("1", "0"):
                return "ERR 2 bad argument"
            self.on = parts[1] == "1"
            return "OK"
        if len(parts) == 2 and parts[0] in ("V", "L", "S", "W"):
            try:
                v = float(parts[1])
            except ValueError:
                return "ERR 2 bad argument"
            if not math.isfinite(v) or v < 0:
                return "ERR 3 out of range"
            if parts[0] == "L":
                self.limit_v = v
            elif parts[0] == "V":
                if v > self.limit_v:
                    return "ERR 3 out of range"
                self.setpoint_v = v
            return "OK"
        return "ERR 1 unknown command"

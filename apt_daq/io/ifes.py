"""Every format ifes-apt-tc-data-modeling reads, through that library (NOMAD/FAIRmat's readers).

Ion and hit data (``apt-daq import FILE --format F``), each quantity converted from the pint
unit the library attaches to apt-daq's unit (ns, V, mm, nm, Da):

========== ===================== ===========================================================
format     file                  what the library gives
========== ===================== ===========================================================
ato        ``.ato`` (v3, v5)     Rouen/GPM: positions, m/n
csv        ``.csv``              POS-like columns x, y, z, m/n (no header semantics)
raw        ``.raw``              Stuttgart APyT raw hits: V_dc, V_pulse, detector x/y, TOF,
                                 pulse number (a reflectron voltage, not used)
pyccapt    ``.h5``               FAU pyccapt calibration: positions, m/n, V_dc, pulse (V),
                                 TOF, detector x/y
cameca     ``.hdf5``             AP Suite HDF5 export: positions, m/n
ifes-pos   ``.pos``              the library's POS reader (ours is the default for pos)
ifes-epos  ``.epos``             the library's EPOS reader (its V_dc, V_pulse: see below)
ifes-apt   ``.apt``              the library's APT reader: positions, m/n and, when the file
                                 has them, tof, Voltage, Pulse Voltage, XDet_mm/YDet_mm,
                                 Multiplicity, pulse/pulseDelta (its ``get_named_quantity``)
========== ===================== ===========================================================

Voltages as our readers take them (``--voltage-unit``): "V"/"kV" is the unit of the file's
numbers; "auto" takes a unit the file states (pyccapt's, APyT raw's V), else decides it from
the data as our readers do (:func:`.epos.detect_voltage_scale`): ifes 0.5 calls an EPOS's kV
(a LEAP file's volts came out 1000x too high) and an APT's V whatever its sections say.

``present`` (the run's /meta imported "fields") lists only what the file holds: ``pulse`` when
it has pulse numbers (EPOS psl not all 0, APT pulse/pulseDelta, APyT pulse numbers),
``multiplicity`` when it has multiplicities (EPOS ipp, APT Multiplicity). Without pulse numbers
the run gets one pulse per multi-hit event, or per ion without multiplicities either
(``pulses``, as our own readers do). An APT's other sections are listed in ``skipped``
(``Detector Coordinates`` too: ifes 0.5 reads its second column with a 3-column stride).

Range files (``--ranges FILE``; ``.rrng`` and ``.rng`` are read by our own reader):
``.env`` (GPM ENV), ``.fig.txt`` (Erlangen toolbox), ``.analysis`` (IVAS/Imago),
``.analysisset`` (AP Suite), pyccapt ranging ``.h5``, AP Suite ``.hdf5``: read by
:mod:`apt_daq.io.ifes_ranges`.

The library reads whole columns into memory (its readers are not chunked): an ifes import
holds the file's quantities once, then streams them into the store in chunks. The library is
a dev extra: imported lazily, and its absence is one line (exit 2).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apt_daq.errors import DataFileError, UserError
from apt_daq.io._common import (
    DEFAULT_CHUNK,
    empty_ions,
    fill_multiplicity,
    group_starts,
    pulses_from,
    require_input,
)

log = logging.getLogger("apt_daq.io")
PACKAGE = "ifes_apt_tc_data_modeling"


@dataclass(frozen=True)
class _Reader:
    module: str
    cls: str
    suffixes: tuple[str, ...]
    getters: tuple[tuple[str, str], ...]  # (quantity, method or "get_named_quantity:SECTION")
    what: str
    assumed_voltage_unit: str = ""  # the library's guess for files without one ("": theirs)


ION_FORMATS: dict[str, _Reader] = {
    "ato": _Reader("ato.ato_reader", "ReadAtoFileFormat", (".ato",),
                   (("positions", "get_reconstructed_positions"),
                    ("mass", "get_mass_to_charge_state_ratio")), "Rouen/GPM ATO (v3, v5)"),
    "csv": _Reader("csv.csv_reader", "ReadCsvFileFormat", (".csv",),
                   (("positions", "get_reconstructed_positions"),
                    ("mass", "get_mass_to_charge_state_ratio")), "POS-like CSV (x, y, z, m/n)"),
    "raw": _Reader("stuttgart.raw_reader", "ReadStuttgartApytRawFileFormat", (".raw",),
                   (("v_dc", "get_base_voltage"), ("v_pulse", "get_pulse_voltage"),
                    ("v_reflectron", "get_reflectron_voltage"),
                    ("det", "get_raw_detector_position"), ("tof", "get_raw_time_of_flight"),
                    ("pulse", "get_pulse_number_evaporation_event")),
                   "Stuttgart APyT raw hits"),
    "pyccapt": _Reader("pyccapt.pyccapt_reader", "ReadPyccaptCalibrationFileFormat",
                       (".h5", ".hdf5"),
                       (("positions", "get_reconstructed_positions"),
                        ("mass", "get_mass_to_charge_state_ratio"),
                        ("v_dc", "get_standing_voltage"), ("v_pulse", "get_pulse_voltage"),
                        ("tof", "get_raw_time_of_flight"), ("det", "get_detector_hit_positions")),
                       "FAU pyccapt calibration HDF5"),
    "cameca": _Reader("cameca.cameca_reader", "ReadCamecaHfiveFileFormat", (".hdf5",),
                      (("positions", "get_reconstructed_positions"),
                       ("mass", "get_mass_to_charge_state_ratio")), "AP Suite HDF5 export"),
    "ifes-pos": _Reader("pos.pos_reader", "ReadPosFileFormat", (".pos",),
                        (("positions", "get_reconstructed_positions"),
                         ("mass", "get_mass_to_charge_state_ratio")), "POS (ifes reader)"),
    "ifes-epos": _Reader("epos.epos_reader", "ReadEposFileFormat", (".epos",),
                         (("positions", "get_reconstructed_positions"),
                          ("mass", "get_mass_to_charge_state_ratio"),
                          ("tof", "get_raw_time_of_flight"), ("v_dc", "get_standing_voltage"),
                          ("v_pulse", "get_pulse_voltage"), ("det", "get_hit_positions"),
                          ("psl", "get_number_of_pulses"), ("ipp", "get_ions_per_pulse")),
                         "EPOS (ifes reader)", assumed_voltage_unit="kV"),
    "ifes-apt": _Reader("apt.apt6_reader", "ReadAptFileFormat", (".apt",),
                        (("positions", "get_reconstructed_positions"),
                         ("mass", "get_mass_to_charge_state_ratio"),
                         ("tof", "get_named_quantity:tof"),
                         ("v_dc", "get_named_quantity:Voltage"),
                         ("v_pulse", "get_named_quantity:Pulse Voltage"),
                         ("det_x", "get_named_quantity:XDet_mm"),
                         ("det_y", "get_named_quantity:YDet_mm"),
                         ("apt_mult", "get_named_quantity:Multiplicity"),
                         ("apt_pulse", "get_named_quantity:pulse"),
                         ("apt_delta", "get_named_quantity:pulseDelta")), "APT (ifes reader)",
                        assumed_voltage_unit="V"),
}
#: the APT sections ifes-apt imports (the rest of the file's sections are ``skipped``)
_APT_READ = {"Position", "Mass", "tof", "Voltage", "Pulse Voltage", "XDet_mm", "YDet_mm",
             "Multiplicity", "pulse", "pulseDelta"}
_PULSE_DELTA_MAX = 32767  # APT pulseDelta (int16) saturates here

_UNIT = {"positions": "nm", "mass": "Da", "tof": "ns", "v_dc": "V", "v_pulse": "V",
         "v_reflectron": "V", "det": "mm", "det_x": "mm", "det_y": "mm"}
_VOLTAGES = ("v_dc", "v_pulse")  # read as the file's numbers, scaled to V by IfesFile


class _Capture(logging.Handler):
    """The library's warnings while it reads (it reports problems there, not by raising)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _import(module: str):
    """``ifes_apt_tc_data_modeling.<module>``, imported lazily: one line if it is missing."""
    root = logging.getLogger()
    guard = None
    if not root.handlers:  # the library calls logging.basicConfig(filename=...) at import
        guard = logging.NullHandler()
        root.addHandler(guard)
    # pint, imported by the library, warns of its own unit redefinition on every import
    logging.getLogger("pint.util").setLevel(logging.ERROR)
    try:
        return importlib.import_module(f"{PACKAGE}.{module}")
    except ImportError as e:
        raise UserError(f"this format is read with ifes-apt-tc-data-modeling, which is not "
                        f"installed ({e}); pip install 'apt-daq[dev]' or "
                        "pip install ifes-apt-tc-data-modeling") from None
    finally:
        if guard is not None:
            root.removeHandler(guard)


@contextlib.contextmanager
def _captured() -> Iterator[_Capture]:
    try:
        from ifes_apt_tc_data_modeling.utils.custom_logging import logger as lib
    except ImportError:
        lib = logging.getLogger("ifes-apt-tc-data-modeling")
    h = _Capture()
    lib.addHandler(h)
    try:
        yield h
    finally:
        lib.removeHandler(h)


def _reason(cap: _Capture) -> str:
    return f": {cap.messages[-1]}" if cap.messages else ""


def format_for(path: Path) -> str | None:
    """The ifes ion format of a file by its extension (None: not one of them)."""
    suffix = path.suffix.lower()
    for fmt in ("ato", "raw", "csv"):
        if suffix in ION_FORMATS[fmt].suffixes:
            return fmt
    return None


def _refuse_empty(path: Path, fmt: str) -> None:
    """One line for a file with no ion records, before the library fails on it in its own
    words (a header-only CSV: "'NoneType' object cannot be interpreted as an integer")."""
    from apt_daq.io.table import no_rows

    if path.stat().st_size == 0:
        raise DataFileError(f"{path}: holds no ions (the file is empty)")
    why = no_rows(path) if fmt == "csv" else None  # the library's CSV: a header line, then rows
    if why:
        raise DataFileError(f"{path}: holds no ions ({why})")


def _magnitude(q, unit: str, path: Path, what: str) -> np.ndarray:
    try:
        if unit and getattr(q, "dimensionless", False):  # a unitless APT section: as is
            return np.asarray(q.magnitude)
        if unit:
            return np.asarray(q.to(unit).magnitude)
        return np.asarray(getattr(q, "magnitude", q))
    except Exception as e:  # pint's DimensionalityError and friends
        raise DataFileError(f"{path}: {what} comes with unit {getattr(q, 'units', '?')}, not "
                            f"convertible to {unit} ({e})") from None


def _file_numbers(q, spec: _Reader, path: Path, what: str) -> tuple[np.ndarray, float | None]:
    """(the file's numbers, their unit in V or None: not stated) of a library voltage; the
    numbers are the quantity in the unit the library assumed for the format, if any."""
    mag, units = np.asarray(getattr(q, "magnitude", q)), getattr(q, "units", None)
    try:
        if units is None or getattr(q, "dimensionless", False):
            return mag, None
        if spec.assumed_voltage_unit:  # undo the library's conversion (in float64)
            per = float(type(q)(1.0, spec.assumed_voltage_unit).to(units).magnitude)
            return (mag.astype(np.float64) / per).astype(mag.dtype), None
        return mag, float(type(q)(1.0, units).to("V").magnitude)
    except Exception as e:  # pint's DimensionalityError and friends
        raise DataFileError(f"{path}: {what} comes with unit {units}, not volts ({e})") from None


class IfesFile:
    """An ion/hit file read by ifes-apt-tc-data-modeling, as :data:`ION_DTYPE` chunks;
    ``voltage_unit``, ``voltage_scale`` and ``voltage_note`` as for our EPOS reader."""

    def __init__(self, path: str | Path, fmt: str, voltage_unit: str = "auto"):
        self.path = Path(path)
        if fmt not in ION_FORMATS:
            raise UserError(f"{path}: unknown ifes format {fmt!r} (one of "
                            f"{', '.join(ION_FORMATS)})")
        if voltage_unit not in ("auto", "V", "kV"):
            raise ValueError(f"voltage_unit must be 'auto', 'V' or 'kV', got {voltage_unit!r}")
        require_input(self.path)
        spec = ION_FORMATS[fmt]
        self.format = fmt
        if not str(self.path).lower().endswith(spec.suffixes):
            raise UserError(f"{self.path}: ifes-apt-tc-data-modeling reads {fmt} only from "
                            f"{' or '.join(spec.suffixes)} files (rename it)")
        _refuse_empty(self.path, fmt)
        mod = _import(spec.module)
        self.notes: list[str] = [f"read with ifes-apt-tc-data-modeling ({spec.what})"]
        self._unit_to_v: dict[str, float | None] = {}  # per voltage: the file's unit in V
        cols = self._columns(mod, spec)  # (voltages: the file's numbers)
        lengths = {len(v) for v in cols.values()}
        if len(lengths) != 1:
            raise DataFileError(f"{self.path}: the library's columns differ in length "
                                f"({sorted(lengths)})")
        self.n = lengths.pop()
        for q in ("tof", "v_dc", "det", "v_reflectron"):  # all-zero = not measured
            if q in cols and self.n and not np.any(cols[q]):
                del cols[q]
        if "v_reflectron" in cols:
            self.notes.append("the file holds a reflectron voltage: m/n from TOF assumes a "
                              "straight flight path (reflectron instruments are not modelled)")
            log.warning("%s: a reflectron instrument: m/n from TOF assumes a straight flight "
                        "path", self.path)
            del cols["v_reflectron"]
        self._cols = cols
        self._voltages(voltage_unit)
        present = []
        if "positions" in cols:
            present += ["x", "y", "z"]
        for q in ("mass", "tof", "v_dc", "v_pulse"):
            if q in cols:
                present.append(q)
        if "det" in cols:
            present += ["det_x", "det_y"]
        if "mass" not in cols and not {"tof", "v_dc"} <= set(cols):
            raise DataFileError(f"{self.path}: neither m/n nor TOF and V_dc in the file: "
                                "nothing to import")
        if "mass" not in cols:
            if "v_pulse" not in cols:
                self.notes.append("no pulse voltage: v_pulse = 0")
            if "det" not in cols:
                self.notes.append("no detector position: det_x = det_y = 0")
        pulse, first_only = self._file_pulses(), self._file_multiplicity()
        present += ["pulse"] * (pulse is not None) + ["multiplicity"] * (first_only is not None)
        self.present = tuple(present)
        self.pulses = pulses_from(present)
        self._pulse, self._mult = self._pulses(pulse, first_only)

    def __len__(self) -> int:
        return self.n

    def _columns(self, mod, spec: _Reader) -> dict[str, np.ndarray]:
        """The library's quantities in apt-daq's units (an APT's XDet_mm/YDet_mm as one
        ``det`` column); ``skipped``: an APT's sections not read."""
        with _captured() as cap:
            try:
                reader = getattr(mod, spec.cls)(str(self.path))
            except Exception as e:  # the library raises what its parsers raise
                raise DataFileError(f"{self.path}: ifes-apt-tc-data-modeling cannot read it as "
                                    f"{self.format} ({type(e).__name__}: {e})") from None
            if not getattr(reader, "supported", True):
                raise DataFileError(f"{self.path}: not a {spec.what} file that "
                                    f"ifes-apt-tc-data-modeling supports{_reason(cap)}")
            cols: dict[str, np.ndarray] = {}
            sections = getattr(reader, "available_sections", None)
            for q, getter in spec.getters:
                method, _, section = getter.partition(":")
                if section and sections is not None and section not in sections:
                    continue  # not in the file (asking would only log a warning)
                try:
                    val = getattr(reader, method)(*((section,) if section else ()))
                except Exception as e:
                    raise DataFileError(f"{self.path}: ifes-apt-tc-data-modeling failed on "
                                        f"{q} ({type(e).__name__}: {e})") from None
                if val is not None and q in _VOLTAGES:  # the file's numbers, and their unit
                    cols[q], self._unit_to_v[q] = _file_numbers(val, spec, self.path, q)
                elif val is not None:
                    cols[q] = _magnitude(val, _UNIT.get(q, ""), self.path, q)
        self.skipped = ([] if sections is None or self.format != "ifes-apt" else
                        [k for k in sections if k not in _APT_READ])
        self.created_filetime: int | None = None
        if self.format == "ifes-apt":  # the APT header's ftCreationTime (None when 0)
            with contextlib.suppress(AttributeError, KeyError, IndexError, TypeError,
                                     ValueError):
                ft = int(np.asarray(reader.header_section["ftCreationTime"]).ravel()[0])
                self.created_filetime = ft or None
        if ("det_x" in cols) != ("det_y" in cols):
            self.notes.append("only one of XDet_mm/YDet_mm: no detector position")
        if "det_x" in cols and "det_y" in cols:
            cols["det"] = np.stack([cols["det_x"], cols["det_y"]], axis=1)
        cols.pop("det_x", None), cols.pop("det_y", None)
        if self.format == "ifes-apt" and "det" not in cols:
            self.notes.append("no XDet_mm/YDet_mm sections: no detector position"
                              + (" (Detector Coordinates not read: ifes 0.5 misreads its "
                                 "second column)" if "Detector Coordinates" in self.skipped
                                 else ""))
        if not cols:
            raise DataFileError(f"{self.path}: ifes-apt-tc-data-modeling found no data in it"
                                f"{_reason(cap)}")
        return cols

    def _voltages(self, voltage_unit: str) -> None:
        """voltage_scale, voltage_note; ``_vscale``: each voltage's file numbers to V."""
        from apt_daq.io.epos import detect_voltage_scale  # numba: only for an ion file
        c, unit = self._cols, self._unit_to_v
        self.voltage_scale, self.voltage_note = 1.0, "no voltage in the file"
        if voltage_unit != "auto":
            unit = dict.fromkeys(_VOLTAGES, 1000.0 if voltage_unit == "kV" else 1.0)
        given = unit.get("v_dc")
        if "v_dc" in c and given is not None:  # given, or the file's
            self.voltage_scale = given
            name = {1.0: "V", 1000.0: "kV"}.get(self.voltage_scale, f"{self.voltage_scale:g} V")
            self.voltage_note = f"{name} ({'given' if voltage_unit != 'auto' else 'the file says'})"
        elif "v_dc" in c:  # unit not known (EPOS; APT, ifes does not read it): from the data
            k = np.linspace(0, self.n - 1, min(self.n, 65536)).astype(np.int64)
            col = lambda q: c[q][k] if q in c else np.zeros(len(k))  # noqa: E731
            self.voltage_scale, self.voltage_note = detect_voltage_scale(
                col("mass"), col("tof"), col("v_dc"))
            if self.voltage_scale != 1.0:
                log.warning("%s: V_dc and V_pulse read as %s; converted to V", self.path,
                            self.voltage_note)
        self._vscale = {q: unit.get(q) or self.voltage_scale for q in _VOLTAGES}

    def _file_pulses(self) -> np.ndarray | None:
        """The file's own pulse numbers, or None when it has none (EPOS psl all 0 is none)."""
        c = self._cols
        # sums of deltas count from the acquisition's start; absolute numbers from anywhere
        self.pulse_deltas = ("psl" in c and bool(np.any(c["psl"]))) or "apt_delta" in c
        if "psl" in c and np.any(c["psl"]):  # EPOS: pulses since the last ion's pulse
            return np.cumsum(np.asarray(c["psl"], np.uint64), dtype=np.uint64)
        if "pulse" in c:  # APyT: pulse numbers
            return np.asarray(c["pulse"]).astype(np.uint64)
        fpulse = (np.rint(np.asarray(c["apt_pulse"], np.float64)) if "apt_pulse" in c
                  else None)
        if "apt_delta" in c:  # APT: exact while it does not saturate, else the float pulse
            d = np.asarray(c["apt_delta"]).astype(np.int64)
            bad = (d < 0) | (d >= _PULSE_DELTA_MAX)
            if fpulse is not None and bad.any():
                prev = np.concatenate([[0.0], fpulse[:-1]])
                d[bad] = (fpulse - prev)[bad].astype(np.int64)
            return np.cumsum(np.maximum(d, 0)).astype(np.uint64)
        if fpulse is not None:
            return np.maximum(fpulse, 0).astype(np.uint64)
        return None

    def _file_multiplicity(self) -> np.ndarray | None:
        """The file's multiplicities, first-of-pulse like EPOS ipp (None: it has none)."""
        c = self._cols
        for q in ("ipp", "apt_mult"):
            if q in c and np.any(c[q]):
                return np.maximum(np.asarray(c[q]).astype(np.int64), 0)
        return None

    def _pulses(self, pulse: np.ndarray | None,
                first_only: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Pulse numbers and multiplicities (on every ion) of the run: the file's, else one
        pulse per multi-hit event, else one per ion."""
        if pulse is None and first_only is not None:
            self.notes.append("no pulse numbers: one pulse per multi-hit event (the file's "
                              "multiplicities)")
            pulse = (np.cumsum(first_only > 0) - 1).clip(0).astype(np.uint64)
        elif pulse is None:
            self.notes.append("no pulse numbers nor multiplicities: each ion is its own pulse")
            pulse = np.arange(self.n, dtype=np.uint64)
        if first_only is not None:
            return pulse, fill_multiplicity(first_only)
        starts = np.flatnonzero(group_starts(pulse))
        sizes = np.diff(np.append(starts, self.n))
        return pulse, np.repeat(sizes, sizes).astype(np.uint32)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.n if stop is None else min(stop, self.n)
        c = self._cols
        out = empty_ions(stop - start)
        if "positions" in c:
            pos = c["positions"][start:stop]
            out["x"], out["y"], out["z"] = pos[:, 0], pos[:, 1], pos[:, 2]
        for q in ("mass", "tof", "v_dc", "v_pulse"):
            if q in c:
                out[q] = c[q][start:stop]
                if self._vscale.get(q, 1.0) != 1.0:
                    out[q] *= self._vscale[q]
        if "det" in c:
            det = c["det"][start:stop]
            out["det_x"], out["det_y"] = det[:, 0], det[:, 1]
        if "mass" not in c:
            if "v_pulse" not in c:
                out["v_pulse"] = 0.0
            if "det" not in c:
                out["det_x"] = out["det_y"] = 0.0
        out["pulse"] = self._pulse[start:stop]
        out["multiplicity"] = self._mult[start:stop]
        return out

    def iter(self, chunk: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
        for i in range(0, self.n, chunk):
            yield self.read(i, i + chunk)

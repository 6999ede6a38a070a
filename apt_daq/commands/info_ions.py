"""``apt-daq info FILE.epos``: what a POS, EPOS or APT file holds, read without importing it
(the ions, the fields the file has, the m/n, voltage and position ranges, the pulses and
the multi-hit share where the file records them)."""

from __future__ import annotations

import logging

import numpy as np

ION_FILE_SUFFIXES = (".pos", ".epos", ".apt")


def is_ion_file(path: str) -> bool:
    return path.lower().endswith(ION_FILE_SUFFIXES)


def _span(lo: float, hi: float, digits: int) -> list[float] | None:
    return None if not np.isfinite(lo) else [round(lo, digits), round(hi, digits)]


def summarize_ions(path: str) -> dict:
    """One pass over the file's chunks (bounded memory for any size)."""
    from apt_daq.commands.import_ import open_ion_file
    from apt_daq.commands.import_data import pulse_count
    from apt_daq.io._common import IonRecordCheck, require_input

    require_input(path)
    reader = open_ion_file(path)
    check = IonRecordCheck(path)  # what import and range refuse: not this format, or corrupt
    present = tuple(reader.present)
    floats = ("mass", "v_dc", "x", "y", "z")
    lo = dict.fromkeys(floats, np.inf)
    hi = dict.fromkeys(floats, -np.inf)
    n = multi = 0
    first_pulse = last_pulse = None
    for chunk in reader.iter():
        check.add(chunk, present)
        n += len(chunk)
        for f in floats:
            v = chunk[f][np.isfinite(chunk[f])]
            if len(v):
                lo[f], hi[f] = min(lo[f], float(v.min())), max(hi[f], float(v.max()))
        if "multiplicity" in present:
            multi += int(np.count_nonzero(chunk["multiplicity"] > 1))
        if "pulse" in present and len(chunk):
            if first_pulse is None:
                first_pulse = int(chunk["pulse"][0])
            last_pulse = int(chunk["pulse"][-1])
    if n == 0:
        logging.getLogger(__name__).warning("%s: holds no ions", path)
    else:
        check.check()
    return {
        "file": str(path),
        "format": path.rsplit(".", 1)[-1].lower(),
        "ions": n,
        "fields": list(present),
        "mass_da": _span(lo["mass"], hi["mass"], 3),
        "voltage_v": _span(lo["v_dc"], hi["v_dc"], 1) if "v_dc" in present else None,
        "x_nm": _span(lo["x"], hi["x"], 2),
        "y_nm": _span(lo["y"], hi["y"], 2),
        "z_nm": _span(lo["z"], hi["z"], 2),
        "pulses": pulse_count(reader, first_pulse, last_pulse),  # EPOS: the sum of psl
        "multi_hit_share": round(multi / n, 5) if "multiplicity" in present and n else None,
    }


def ion_lines(info: dict) -> list[str]:
    """The human-readable report of :func:`summarize_ions`."""

    def span(v, unit):
        return "-" if v is None else f"{v[0]:g} to {v[1]:g} {unit}"

    rows = [
        ("file", info["file"]),
        ("format", info["format"].upper() + " (ions as reconstructed; not a run file)"),
        ("ions", str(info["ions"])),
        ("fields", ", ".join(info["fields"])),
        ("m/n", span(info["mass_da"], "Da")),
        ("voltage", span(info["voltage_v"], "V")),
        ("x, y", f"{span(info['x_nm'], 'nm')}; {span(info['y_nm'], 'nm')}"),
        ("z", span(info["z_nm"], "nm")),
        ("pulses", "-" if info["pulses"] is None else str(info["pulses"])),
        ("multi-hit ions", "-" if info["multi_hit_share"] is None
         else f"{100 * info['multi_hit_share']:.2f} % (ions on pulses with more than one)"),
    ]
    width = max(len(k) for k, _ in rows) + 2
    return [f"{k + ':':<{width}}{val}" for k, val in rows]

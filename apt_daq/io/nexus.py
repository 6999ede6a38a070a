"""NeXus NXapm (HDF5) export of a run, checked against the NXapm application definition.

What goes where (``/entry1`` is an NXentry with ``definition = "NXapm"``)::

    start_time, end_time, operation_mode = "apt", experiment_description
    specimen/                 NXsample: is_simulation (from the run's meta), atom_types, alias,
                              initial_radius (nm), shank_angle (deg) when the config has them
    specimen_reference_frame/ NXcoordinate_system of the reconstruction (z toward the detector)
    detector_reference_frame/ NXcoordinate_system of the detector plane (hit positions)
    measurement/instrument/   NXapm_instrument: flight_path (mm), fabrication vendor/model,
                              reflectron/applied
    measurement/standing_voltage_time, detection_rate_time   NXdata from /log, when present
    atom_probe1/              NXroi_process, one per run:
      hit_finding/            hit_positions (n, 2) mm, hit_multiplicity, event totals
      voltage_and_bowl/       raw_tof (n) ns
      mass_to_charge_conversion/ mass_to_charge (n) Da
      reconstruction/         reconstructed_positions (n, 3) nm and a naive_discretization
                              (3-D histogram) NXdata
      ranging/                mass_to_charge_distribution/mass_spectrum NXdata (always) and,
                              with ranges, peak_identification/ionID (nuclide_hash, charge_state,
                              mass_to_charge_range, name) and iontypes (n) (0 = unranged)

An imported run (/meta "imported") gets only what its file, its data or the user gave:
``start_time`` is an APT's own creation time (ftCreationTime, kept at import), else the import
time (NXapm requires one; ``experiment_description`` says which), no ``end_time``; the
instrument's flight path, fabrication and reflectron only where known (/meta imported
"instrument_known": given with --flight-path-mm or --instrument, or implied by the file's TOF, V
and m/n), never apt-daq's nominal 100 mm or a guessed vendor; with none of them known the
optional ``measurement`` group is left out. A run apt-daq acquired or simulated has them all.

Per-ion arrays are written chunk by chunk (bounded memory), from the run's calibrated ion
stream (:class:`apt_daq.pipeline.ions.IonStream`: the masses and range indices the analysis
reports); the calibration it applied is recorded under ``voltage_and_bowl/config``.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from apt_daq.io._common import atomic_output

MASS_BIN_DA = 0.01
MASS_MAX_DA = 300.0
GRID = 32  # naive discretization: GRID^3 voxels over the reconstruction's bounding box
N_IVEC_MAX = 32


def _str(g: h5py.Group, name: str, value: str) -> h5py.Dataset:
    return g.create_dataset(name, data=value, dtype=h5py.string_dtype())


def _grp(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    g = parent.create_group(name)
    g.attrs["NX_class"] = nx_class
    return g


def _num(g: h5py.Group, name: str, value, units: str | None = None, **kw) -> h5py.Dataset:
    d = g.create_dataset(name, data=value, **kw)
    if units is not None:
        d.attrs["units"] = units
    return d


def _program(g: h5py.Group) -> None:
    from apt_daq import __version__

    p = _grp(g, "program1", "NXprogram")
    d = _str(p, "program", "apt-daq")
    d.attrs["version"] = __version__


def _iso(t: str | None) -> str | None:
    if not t:
        return None
    return t if ("+" in t[10:] or t.endswith("Z")) else t + "+00:00"


_SYMBOLS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As "
    "Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd "
    "Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am "
    "Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split()
ATOMIC_NUMBER = {el: z for z, el in enumerate(_SYMBOLS, 1)}


def nuclide_hash(composition: dict[str, int]) -> np.ndarray:
    """NXatom nuclide_hash of an ion: Z + 255*256 per atom (element, any isotope), sorted
    decreasing, zero-padded to 32."""
    z_of = ATOMIC_NUMBER
    hashes = sorted((z_of[el] + 255 * 256 for el, k in composition.items() for _ in range(k)),
                    reverse=True)
    out = np.zeros(N_IVEC_MAX, np.uint16)
    out[: len(hashes)] = hashes[:N_IVEC_MAX]
    return out


def write_nexus(reader, out: str | Path, stream=None) -> int:
    """Write the run behind ``reader`` (a RunReader) as NXapm to ``out`` (atomically), its ions
    from ``stream`` (default: the run's own ion stream, with its ranges)."""
    from apt_daq.pipeline.ions import open_stream

    if stream is None:
        stream = open_stream(reader)
    ranges = stream.ranges
    meta = reader.meta
    cfg = meta.get("config") or {}
    inst = meta.get("instrument") or (cfg.get("instrument") or {})
    simulated = meta.get("simulated")
    if simulated is None:
        simulated = reader.has("truth")
    with atomic_output(out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["NX_class"] = "NXroot"
        f.attrs["default"] = "entry1"
        e = _grp(f, "entry1", "NXentry")
        _entry_header(e, meta)
        _specimen(e, cfg.get("specimen") or {}, ranges, simulated)
        _reference_frames(e)
        _measurement(e, inst, simulated, reader.log, instrument_known(meta))
        ap = _grp(e, "atom_probe1", "NXroi_process")
        dsets = _ion_datasets(ap, stream, meta.get("counters") or {})
        spectrum, lo, hi = _write_ions(stream, dsets)
        _mass_spectrum(ap["ranging"], spectrum)
        _discretization(ap["reconstruction"], stream, lo, hi)
        if ranges is not None:
            _ion_types(ap["ranging/peak_identification"], ranges)
    return len(stream)


def instrument_known(meta: dict) -> set[str] | None:
    """The /meta instrument keys an imported run really knows (None: a run apt-daq acquired or
    simulated knows them all). Runs imported before "instrument_known" was recorded: the flight
    path when their summary says it was given or implied, everything with an --instrument."""
    imported = meta.get("imported")
    if not imported:
        return None
    if "instrument_known" in imported:
        return set(imported["instrument_known"])
    how = str(imported.get("flight_path", ""))
    if how.startswith("from "):
        return set((meta.get("instrument") or {}).keys())
    return {"flight_path_mm"} if how.startswith(("given", "implied")) else set()


def _entry_header(e: h5py.Group, meta: dict) -> None:
    _str(e, "definition", "NXapm")
    imported = meta.get("imported")
    created = _iso(imported.get("file_created")) if imported else None
    start = created or _iso(meta.get("started")) or "1970-01-01T00:00:00+00:00"
    _str(e, "start_time", start)
    ended = None if imported else _iso(meta.get("ended"))  # an import's end is not the run's
    if ended:
        _str(e, "end_time", ended)
    _str(e, "operation_mode", "apt")
    if imported:
        when = ("start_time is the file's creation time (APT ftCreationTime)" if created else
                "the file records no measurement time: start_time is the time of the import")
        desc = f"imported from {imported['file']} ({imported['format']}); {when}"
    else:
        desc = f"apt-daq run, state {meta.get('state')}"
    _str(e, "experiment_description", desc)


def _specimen(e: h5py.Group, spec: dict, ranges, simulated: bool) -> None:
    s = _grp(e, "specimen", "NXsample")
    s.create_dataset("is_simulation", data=bool(simulated))
    els = sorted(ranges.elements) if ranges is not None else sorted(
        {el for ph in spec.get("phases", []) for el in (ph.get("composition") or {})})
    _str(s, "atom_types", ", ".join(els))
    if spec.get("name"):
        _str(s, "alias", spec["name"])
    if spec.get("apex_radius_nm"):
        _num(s, "initial_radius", float(spec["apex_radius_nm"]), "nm")
    if spec.get("shank_half_angle_deg") is not None:
        _num(s, "shank_angle", float(spec["shank_half_angle_deg"]), "°")


def _reference_frames(e: h5py.Group) -> None:
    for name, origin, zdir, unit in (
        ("specimen_reference_frame", "initial apex of the specimen", "toward the detector",
         "nm"),
        ("detector_reference_frame", "centre of the detector", "toward the specimen", "mm"),
    ):
        c = _grp(e, name, "NXcoordinate_system")
        _str(c, "type", "cartesian")
        _str(c, "origin", origin)
        for ax, v in zip("xyz", np.eye(3), strict=True):
            _num(c, ax, v, unit)
        _str(c, "z_direction", zdir)


def _measurement(e: h5py.Group, inst: dict, simulated: bool, log: np.ndarray,
                 known: set[str] | None = None) -> None:
    """``measurement``: the instrument and the /log series. ``known`` (an imported run's
    :func:`instrument_known`) limits the instrument to what is known; nothing known and no log:
    no ``measurement`` (optional in NXapm; its ``instrument`` would be empty)."""
    def has(key: str) -> bool:
        return known is None or key in known

    if known is not None and not (known & {"flight_path_mm", "name", "reflectron"}) \
            and not len(log):
        return
    m = _grp(e, "measurement", "NXapm_measurement")
    ins = _grp(m, "instrument", "NXapm_instrument")
    if has("flight_path_mm") and inst.get("flight_path_mm"):
        _num(ins, "flight_path", float(inst["flight_path_mm"]), "mm")
    if has("name"):  # an instrument config describes a LEAP (InstrumentConfig)
        fab = _grp(ins, "fabrication", "NXfabrication")
        if simulated:
            _str(fab, "vendor", "apt-daq (simulation)")
            _str(fab, "model", f"virtual {inst.get('name', 'LEAP')}")
        else:
            _str(fab, "vendor", "CAMECA")
            _str(fab, "model", str(inst.get("name", "unknown")))
    if has("reflectron"):
        refl = _grp(ins, "reflectron", "NXcomponent")
        refl.create_dataset("applied", data=bool(inst.get("reflectron", False)))
    if len(log):
        for name, field, values, units in (
            ("standing_voltage_time", "standing_voltage", log["v_dc"], "V"),
            ("detection_rate_time", "detection_rate", log["rate"] * 100.0, "%"),
        ):
            d = _grp(m, name, "NXdata")
            d.attrs["signal"] = field
            d.attrs["axes"] = "elapsed_time"
            d.attrs["elapsed_time_indices"] = np.uint32(0)
            _str(d, "title", field.replace("_", " "))
            _num(d, "elapsed_time", log["time_s"].astype(np.float64), "s")
            _num(d, field, values.astype(np.float64), units)


def _ion_datasets(ap: h5py.Group, stream, counters: dict) -> dict[str, h5py.Dataset]:
    """The process groups of ``atom_probe1`` and their empty, growable per-ion datasets."""
    hf = _grp(ap, "hit_finding", "NXprocess")
    _program(hf)
    for key, nx in (("records", "total_event_record"), ("multi_hits", "total_event_multiple")):
        if key in counters:
            _num(hf, nx, np.uint64(counters[key]), "")
    kw = {"chunks": True} if len(stream) else {}
    out = {}
    out["hit_positions"] = _num(hf, "hit_positions", np.zeros((0, 2), np.float32), "mm",
                                maxshape=(None, 2), **kw)
    out["hit_positions"].attrs["depends_on"] = "/entry1/detector_reference_frame"
    out["hit_multiplicity"] = _num(hf, "hit_multiplicity", np.zeros(0, np.uint32), "",
                                   maxshape=(None,), **kw)
    vb = _grp(ap, "voltage_and_bowl", "NXprocess")
    _program(vb)
    cfg_grp = _grp(vb, "config", "NXparameters")
    _str(cfg_grp, "calibration", json.dumps(stream.calibration.as_dict()))
    out["raw_tof"] = _num(vb, "raw_tof", np.zeros(0, np.float32), "ns", maxshape=(None,), **kw)
    mc = _grp(ap, "mass_to_charge_conversion", "NXprocess")
    _program(mc)
    out["mass_to_charge"] = _num(mc, "mass_to_charge", np.zeros(0, np.float32), "Da",
                                 maxshape=(None,), **kw)
    rc = _grp(ap, "reconstruction", "NXapm_reconstruction")
    _program(rc)
    out["reconstructed_positions"] = _num(rc, "reconstructed_positions",
                                          np.zeros((0, 3), np.float32), "nm",
                                          maxshape=(None, 3), **kw)
    out["reconstructed_positions"].attrs["depends_on"] = "/entry1/specimen_reference_frame"
    rg = _grp(ap, "ranging", "NXapm_ranging")
    _program(rg)
    if stream.ranges is not None:
        pi = _grp(rg, "peak_identification", "NXprocess")
        _program(pi)
        out["iontypes"] = _num(pi, "iontypes", np.zeros(0, np.uint8), "", maxshape=(None,), **kw)
    return out


def _write_ions(stream, dsets: dict[str, h5py.Dataset]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Append every chunk of the stream to the per-ion datasets; return the mass histogram
    and the reconstruction's bounding box (lo, hi; inf/-inf when no ion has a position)."""
    from apt_daq.pipeline.ions import ion_records

    ranges = stream.ranges
    if ranges is not None:
        ion_of_range = ranges.ion_index().astype(np.int64) + 1  # 0 = unranged
    nb = int(MASS_MAX_DA / MASS_BIN_DA)
    spectrum = np.zeros(nb, np.int64)
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    i = 0
    for c in stream:
        ions = ion_records(c, stream.positions)
        k = len(ions)
        xyz = np.stack([ions["x"], ions["y"], ions["z"]], 1)
        for name, data in (("hit_positions", np.stack([ions["det_x"], ions["det_y"]], 1)),
                           ("hit_multiplicity", ions["multiplicity"]), ("raw_tof", ions["tof"]),
                           ("mass_to_charge", ions["mass"]), ("reconstructed_positions", xyz)):
            dsets[name].resize(i + k, axis=0)
            dsets[name][i : i + k] = data
        spectrum += np.bincount(
            np.clip((ions["mass"][np.isfinite(ions["mass"])] / MASS_BIN_DA).astype(np.int64),
                    0, nb - 1), minlength=nb)
        if np.isfinite(xyz).any():
            lo = np.fmin(lo, np.nanmin(xyz, 0))
            hi = np.fmax(hi, np.nanmax(xyz, 0))
        if ranges is not None:
            idx = c.ion.astype(np.int64)
            t = np.where(idx >= 0, ion_of_range[np.maximum(idx, 0)], 0)
            dsets["iontypes"].resize(i + k, axis=0)
            dsets["iontypes"][i : i + k] = t.astype(np.uint8)
        i += k
    return spectrum, lo, hi


def _mass_spectrum(rg: h5py.Group, spectrum: np.ndarray) -> None:
    nb = len(spectrum)
    md = _grp(rg, "mass_to_charge_distribution", "NXprocess")
    _program(md)
    _num(md, "min_mass_to_charge", 0.0, "Da")
    _num(md, "max_mass_to_charge", MASS_MAX_DA, "Da")
    _num(md, "n_mass_to_charge", np.uint32(nb), "")
    ms = _grp(md, "mass_spectrum", "NXdata")
    ms.attrs["signal"] = "intensity"
    ms.attrs["axes"] = "axis_mass_to_charge"
    ms.attrs["axis_mass_to_charge_indices"] = np.uint32(0)
    _str(ms, "title", "mass spectrum")
    d = _num(ms, "intensity", spectrum, "")
    d.attrs["long_name"] = "counts"
    d = _num(ms, "axis_mass_to_charge", (np.arange(nb) + 0.5) * MASS_BIN_DA, "Da")
    d.attrs["long_name"] = "mass-to-charge-state ratio (Da)"


def _discretization(rc: h5py.Group, stream, lo: np.ndarray, hi: np.ndarray) -> None:
    """A naive discretization of the reconstruction: GRID^3 voxels over its bounding box
    (a second pass over the stream, bounded memory)."""
    nd = _grp(rc, "naive_discretization", "NXprocess")
    _program(nd)
    grid = _grp(nd, "data", "NXdata")
    if not np.all(np.isfinite(lo)):
        lo, hi = np.zeros(3), np.ones(3)
    hi = np.where(hi > lo, hi, lo + 1.0)
    edges = [np.linspace(lo[a], hi[a], GRID + 1) for a in range(3)]
    counts = np.zeros((GRID, GRID, GRID), np.int64)  # z, y, x
    for ions in stream.ion_records():
        pts = np.stack([ions["z"], ions["y"], ions["x"]], 1)
        pts = pts[np.isfinite(pts).all(1)]
        h, _ = np.histogramdd(pts, bins=[edges[2], edges[1], edges[0]])
        counts += h.astype(np.int64)
    grid.attrs["signal"] = "intensity"
    grid.attrs["axes"] = ["axis_z", "axis_y", "axis_x"]
    for a, ax in enumerate(("axis_z", "axis_y", "axis_x")):
        grid.attrs[f"{ax}_indices"] = np.uint32(a)
    _str(grid, "title", "ions per voxel")
    _num(grid, "intensity", counts, "")
    for ax, e_ in (("axis_z", edges[2]), ("axis_y", edges[1]), ("axis_x", edges[0])):
        dd = _num(grid, ax, 0.5 * (e_[1:] + e_[:-1]), "nm")
        dd.attrs["long_name"] = f"{ax[-1]} (nm)"


def _ion_types(pi: h5py.Group, ranges) -> None:
    """``peak_identification/ionN``: the ranged ions, numbered as ``iontypes`` numbers them."""
    _num(pi, "number_of_ion_types", np.uint32(len(ranges.ions)), "")
    _num(pi, "maximum_number_of_atoms_per_molecular_ion",
         np.uint32(max(sum(c.values()) for c in ranges.composition)), "")
    for t, name in enumerate(ranges.ions, 1):
        g = _grp(pi, f"ion{t}", "NXatom")
        rows = ranges.ranges_of(name)
        comp = ranges.composition[rows[0]]
        _num(g, "nuclide_hash", nuclide_hash(comp), "")
        _num(g, "charge_state", np.int8(ranges.charge[rows[0]]), "")
        _num(g, "mass_to_charge_range",
             np.array([[ranges.lo_da[r], ranges.hi_da[r]] for r in rows], np.float32), "Da")
        _str(g, "name", name)

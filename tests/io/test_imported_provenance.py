"""What an export says about an imported run's instrument and time is what the source file
held, not apt-daq's nominal values or the time of the import (apav's real LEAP Si dataset).

Judged from outside: the APT header's ftCreationTime read here with struct (Windows FILETIME
at byte 524), the NeXus file with h5py, NXapm with pynxtools' validator.
"""

from __future__ import annotations

import logging
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h5py
import pytest

from apt_daq.commands.export import export_run
from apt_daq.commands.import_ import import_file
from apt_daq.io.store import RunReader

FT_OFFSET = 4 + 4 + 4 + 512  # cSignature, iHeaderSize, iHeaderVersion, wcFileName[256]


def header_filetime(path: Path) -> int:
    return struct.unpack_from("<Q", Path(path).read_bytes()[:540], FT_OFFSET)[0]


def filetime_utc(ft: int) -> datetime:
    return datetime(1601, 1, 1, tzinfo=UTC) + timedelta(microseconds=ft // 10)


def all_names(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visit(names.append)
    return names


def nxapm_problems(path: Path, caplog) -> list[str]:
    """pynxtools' NXapm validation warnings, less the NXdata-axis @units it cannot see
    (tests/io/test_cli.py::test_nexus_nxapm_validates says why)."""
    pytest.importorskip("pynxtools")
    from pynxtools.dataconverter.validation import validate_hdf_group_against

    caplog.clear()
    with caplog.at_level(logging.WARNING), h5py.File(path, "r") as f:
        validate_hdf_group_against("NXapm", f["entry1"], str(path), False)
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            and "is NOT valid" not in r.getMessage()
            and "@units hasn't been supplied" not in r.getMessage()
            and "Redefining" not in r.getMessage()]


@pytest.fixture(scope="module")
def si_apt_run(tmp_path_factory, apav_data: Path) -> Path:
    out = tmp_path_factory.mktemp("si_apt") / "si.h5"
    import_file(apav_data / "Si.apt", out)
    return out


def test_apt_creation_time_is_kept_and_exported(si_apt_run: Path, apav_data: Path,
                                                tmp_path: Path, caplog):
    """Was: start_time/end_time the import time, flight_path 100 mm, vendor CAMECA."""
    ft = header_filetime(apav_data / "Si.apt")
    created = filetime_utc(ft)
    assert created.strftime("%Y-%m-%d %H:%M:%S") == "2021-03-23 20:31:26"
    with RunReader(si_apt_run) as r:
        imp = r.meta["imported"]
    assert datetime.fromisoformat(imp["file_created"]) == created
    nxs = tmp_path / "si.nxs"
    export_run(si_apt_run, "nexus", nxs)
    with h5py.File(nxs, "r") as f:
        e = f["entry1"]
        assert datetime.fromisoformat(e["start_time"][()].decode()) == created
        assert "end_time" not in e  # the file does not say when the measurement ended
        assert b"creation time" in e["experiment_description"][()]
        names = all_names(f)
    # Si.apt holds no flight length, vendor or reflectron: none is written
    assert not [n for n in names if n.split("/")[-1] in ("flight_path", "fabrication",
                                                          "vendor", "reflectron")]
    assert nxapm_problems(nxs, caplog) == []


def test_apt_reexport_keeps_the_creation_time(si_apt_run: Path, apav_data: Path,
                                              tmp_path: Path):
    """Was: the re-exported APT's ftCreationTime was the export time."""
    out = tmp_path / "back.apt"
    export_run(si_apt_run, "apt", out)
    assert header_filetime(out) == header_filetime(apav_data / "Si.apt")


def test_ifes_apt_import_keeps_the_creation_time(apav_data: Path, tmp_path: Path):
    pytest.importorskip("ifes_apt_tc_data_modeling")
    out = tmp_path / "ifes.h5"
    import_file(apav_data / "Si.apt", out, fmt="ifes-apt")
    with RunReader(out) as r:
        imp = r.meta["imported"]
    assert imp["file_created_filetime"] == header_filetime(apav_data / "Si.apt")


def test_pos_import_invents_no_instrument(apav_data: Path, tmp_path: Path, caplog):
    """POS holds positions and m/n only: no flight length, vendor or time in the NeXus file
    but the import time NXapm requires, said to be that."""
    run = tmp_path / "pos.h5"
    import_file(apav_data / "Si.pos", run)
    nxs = tmp_path / "pos.nxs"
    export_run(run, "nexus", nxs)
    with h5py.File(nxs, "r") as f:
        e = f["entry1"]
        assert "start_time" in e and "end_time" not in e
        assert b"time of the import" in e["experiment_description"][()]
        assert "measurement" not in e
        assert not [n for n in all_names(f) if "flight_path" in n or "vendor" in n]
    assert nxapm_problems(nxs, caplog) == []


def test_given_flight_path_is_exported(apav_data: Path, tmp_path: Path):
    run = tmp_path / "pos.h5"
    import_file(apav_data / "Si.pos", run, flight_path_mm=110.0)
    nxs = tmp_path / "pos.nxs"
    export_run(run, "nexus", nxs)
    with h5py.File(nxs, "r") as f:
        ins = f["entry1/measurement/instrument"]
        assert ins["flight_path"][()] == 110.0 and ins["flight_path"].attrs["units"] == "mm"
        assert "fabrication" not in ins and "reflectron" not in ins


@pytest.mark.parametrize("simulated", [True, False])
def test_acquired_or_simulated_run_keeps_its_instrument_and_times(tmp_path: Path,
                                                                  simulated: bool):
    from synthetic_runs import make_run

    run = make_run(tmp_path / "r.h5", n=3000, simulated=simulated)
    nxs = tmp_path / "r.nxs"
    export_run(run, "nexus", nxs)
    with RunReader(run) as r:
        meta = r.meta
    with h5py.File(nxs, "r") as f:
        e = f["entry1"]
        ins = e["measurement/instrument"]
        assert ins["flight_path"][()] == meta["instrument"]["flight_path_mm"]
        vendor = ins["fabrication/vendor"][()].decode()
        assert vendor == ("apt-daq (simulation)" if simulated else "CAMECA")
        assert "applied" in ins["reflectron"]
        assert e["start_time"][()].decode().startswith(meta["started"][:19])
        assert e["end_time"][()].decode().startswith(meta["ended"][:19])

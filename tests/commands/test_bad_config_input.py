"""Bad config input, found by an outside audit (/tmp/fuzz/report.md, Dec 2026: F2, F4, F5,
F7-F11, F14-F17, F21, F22): each crashed with a traceback, ran on without bound, or passed
``config check`` and then failed in ``run``. Now each is refused by ``config check`` and by
``run`` (before anything is switched on) with one ``error:`` line naming the file, the line
and the key, exit 2, and no traceback.

The run files are the shipped ``nmc811-cr-5pj.yaml`` with one key changed (the audit's
``mk.py``), written with PyYAML to a temporary folder; the bad bytes are written here."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from apt_daq import cli
from apt_daq.cli import main

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "configs" / "runs" / "nmc811-cr-5pj.yaml"
CONFIGS = ROOT / "configs"


@pytest.fixture(autouse=True)
def wide_errors(monkeypatch):
    """The CLI's error console without line wrapping, so 'one line' can be checked."""
    monkeypatch.setattr(cli, "err_console", Console(stderr=True, width=100_000), raising=False)


def run_tree() -> dict[str, Any]:
    """The shipped run file as data, its include paths made absolute."""
    d = yaml.safe_load(RUN.read_text())
    for key in ("instrument", "specimen"):
        d[key] = str((RUN.parent / d[key]).resolve())
    d["analysis"]["ranges"] = str((RUN.parent / d["analysis"]["ranges"]).resolve())
    return d


def run_file(tmp_path: Path, changes: dict[str, Any] | None = None, name: str = "r.yaml",
             drop: tuple[str, ...] = ()) -> Path:
    """The shipped run file with dotted keys set (``{"run.seed": 3}``) or dropped."""
    d = run_tree()
    for dotted, value in (changes or {}).items():
        *parents, last = dotted.split(".")
        node = d
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
    for dotted in drop:
        *parents, last = dotted.split(".")
        node = d
        for k in parents:
            node = node[k]
        del node[last]
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d))
    return p


def errors(capsys, argv: list[str], code: int = 2) -> list[str]:
    """Run the CLI in-process: its exit code, and its ``error:`` lines (nothing else on
    stderr, no traceback)."""
    got = main(argv)
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out, out.err
    assert got == code, (got, out.err)
    lines = [ln for ln in out.err.splitlines() if ln.strip()]
    assert all(ln.startswith(("error: ", "warning: ")) for ln in lines), out.err
    return [ln for ln in lines if ln.startswith("error: ")]


def one_error(capsys, argv: list[str], *needles: str) -> str:
    found = errors(capsys, argv)
    assert len(found) == 1, found
    for n in needles:
        assert n in found[0], (n, found[0])
    assert len(found[0]) < 400, found[0]  # a bad value is not echoed whole
    return found[0]


def check_and_run(capsys, tmp_path: Path, cfg: Path, *needles: str, ions: bool = True,
                  named: bool = True) -> str:
    """``config check`` refuses ``cfg`` in one line (naming it, if ``named``), and ``run``
    (``--ions 200`` if ``ions``) refuses it with the same line before the acquisition (no run
    file written)."""
    needles = (str(cfg), *needles) if named else needles
    line = one_error(capsys, ["config", "check", str(cfg)], *needles)
    out = tmp_path / "out.h5"
    argv = ["run", str(cfg), "-o", str(out), "--quiet", *(["--ions", "200"] if ions else [])]
    assert one_error(capsys, argv, *needles) == line
    assert not out.exists()
    return line


# ------------------------------------------------------------------ F7, F8, F9, F21: the bytes
NOT_UTF8 = {
    "random": (bytes(range(0x80, 0x100)) * 4, "byte 0x80 at offset 0"),
    "utf-16": ("run:\n  name: x\n".encode("utf-16"), "byte 0xff at offset 0"),
    "latin-1": (RUN.read_text().replace("nmc811-cr-5pj", "nmc\xe9", 1).encode("latin-1"),
                "byte 0xe9 at offset"),
}


@pytest.mark.parametrize("what", list(NOT_UTF8))
def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path, capsys, what: str) -> None:
    raw, says = NOT_UTF8[what]
    p = tmp_path / "bad.yaml"
    p.write_bytes(raw)
    check_and_run(capsys, tmp_path, p, "not UTF-8 text", says)


def test_an_included_file_or_a_campaign_base_that_is_binary(tmp_path: Path, capsys) -> None:
    binary = tmp_path / "data.pos"
    binary.write_bytes(b"\xc0\x00\x01\x02" * 64)
    cfg = run_file(tmp_path, {"specimen": str(binary)})
    one_error(capsys, ["config", "check", str(cfg)], str(binary), "not UTF-8 text (byte 0xc0 "
              "at offset 0)")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: c\nbase: {binary}\naxes:\n  run.seed: [1, 2]\n")
    one_error(capsys, ["config", "check", str(sweep)], str(binary), "not UTF-8 text")
    found = errors(capsys, ["campaign", str(sweep), "--dry-run", "-o", str(tmp_path / "c"),
                            "--quiet"])  # one line per point
    assert found and all(f"{binary}: not UTF-8 text" in ln for ln in found), found


def test_a_utf8_bom_is_read(tmp_path: Path, capsys) -> None:
    p = run_file(tmp_path)
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    assert errors(capsys, ["config", "check", str(p)], code=0) == []


def test_a_nul_byte_is_one_line(tmp_path: Path, capsys) -> None:
    p = tmp_path / "nul.yaml"
    p.write_bytes(b"run:\n  name: a\x00b\n")
    one_error(capsys, ["config", "check", str(p)], f"{p}:2", "#x0000")


@pytest.mark.parametrize("body, line", [
    ("run: " + "[" * 100_000 + "]" * 100_000 + "\n", 1),
    ("".join("  " * i + "a:\n" for i in range(300)), 51)], ids=["flow", "block"])
def test_deep_nesting_is_one_line(tmp_path: Path, capsys, body: str, line: int) -> None:
    p = tmp_path / "deep.yaml"
    p.write_text(body)
    check_and_run(capsys, tmp_path, p, f"{p}:", "nests deeper than 50 levels")


def test_an_integer_of_5000_digits_is_one_line(tmp_path: Path, capsys) -> None:
    text = RUN.read_text().replace("../", f"{CONFIGS}/")
    p = tmp_path / "huge.yaml"
    p.write_text(text.replace("seed: 1", "seed: 1" + "0" * 5000))
    line = next(i for i, s in enumerate(p.read_text().splitlines(), 1) if "seed:" in s)
    check_and_run(capsys, tmp_path, p, f"{p}:{line}:", "an integer of 5001 digits")


def test_a_config_above_1_mib_is_refused_before_it_is_parsed(tmp_path: Path, capsys) -> None:
    p = tmp_path / "long.yaml"
    p.write_text(RUN.read_text() + "\n# " + "x" * 50_000_000 + "\n")
    t0 = time.monotonic()
    check_and_run(capsys, tmp_path, p, "larger than 1 MiB")
    assert time.monotonic() - t0 < 10


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=300),
                     st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass"))))
def test_any_bytes_as_a_config_are_refused_in_lines(tmp_path: Path, capsys, raw: bytes) -> None:
    """Whatever the bytes: exit 2 with ``error:`` lines (one per problem), no traceback."""
    p = tmp_path / "any.yaml"
    p.write_bytes(raw)
    found = errors(capsys, ["config", "check", str(p)])
    assert found and all(str(p) in ln for ln in found), found


# ------------------------------------------------------------------ F2, F10, F11, F15, F16: values
BAD_VALUES = {
    # F2: a block of 1e12 pulses took 20 GB and the OOM killer
    "chunk 1e12": ({"run.chunk_pulses": 10**12}, "run.chunk_pulses: must be <= 100000000"),
    "max block 2**64+1": ({"run.max_block_pulses": 2**64 + 1}, "run.max_block_pulses: must be <="),
    "chunk true": ({"run.chunk_pulses": True}, "run.chunk_pulses: true/false is not"),
    "laser true": ({"run.laser_pj": True}, "run.laser_pj: true/false is not"),
    # F10: 2**64 crashed when the run file was opened
    "seed 2**64": ({"run.seed": 2**64}, "run.seed: must be <= 18446744073709551615"),
    # F11
    "temperature 1e300": ({"run.base_temperature_k": 1e300}, "run.base_temperature_k: must be <="),
    "name NUL": ({"run.name": "a\0b"}, "run.name: a plain file name"),
    # F15: runs/../../etc/x.h5, runs/.h5, a 100000-character name
    "name ../": ({"run.name": "../../etc/x"}, "run.name: a plain file name"),
    "name empty": ({"run.name": ""}, "run.name: a plain file name"),
    "name 1e5 chars": ({"run.name": "x" * 100_000}, "run.name: a plain file name"),
    # F16: inf wherever NaN is refused, and absurd values
    "temperature inf": ({"run.base_temperature_k": float("inf")},
                        "run.base_temperature_k: must be a finite number"),
    "time inf": ({"run.stop.instrument_time_s": float("inf")},
                 "run.stop.instrument_time_s: must be a finite number"),
    "time 1e30": ({"run.stop.instrument_time_s": 1e30}, "run.stop.instrument_time_s: must be <="),
    "max step inf": ({"run.feedback.max_step_v": float("inf")}, "run.feedback.max_step_v: must"),
    "error ratio inf": ({"run.feedback.max_error_ratio": float("inf")},
                        "run.feedback.max_error_ratio: must be a finite number"),
    "atomic volume inf": ({"analysis.reconstruction.atomic_volume_nm3": float("inf")},
                          "analysis.reconstruction.atomic_volume_nm3: must be a finite number"),
    "pulse rate 1e-300": ({"run.pulse_rate_hz": 1e-300}, "run.pulse_rate_hz: must be >= 1"),
    "detection rate 1e-300": ({"run.target_detection_rate": 1e-300},
                              "run.target_detection_rate: must be >= 0.0001"),
    "fracture blocks 1e30": ({"run.fracture_blocks": 10**30}, "run.fracture_blocks:"),
    "fda block 1e30": ({"analysis.fda_block_ions": 10**30}, "analysis.fda_block_ions:"),
    "reference peak Zz9+": ({"analysis.reference_peak": "Zz9+"},
                            "analysis.reference_peak: not an ion name"),
    "dld records 2**64": ({"drivers.dld.max_chunk_records": 2**64},
                          "drivers.dld.max_chunk_records: must be <= 4194304"),
    "roi inf": ({"analysis.roi": "cylinder:inf"}, "analysis.roi: ROI 'cylinder:inf': every"),
    "roi centre nan": ({"analysis.roi": "cylinder:25,nan,nan"}, "analysis.roi: ROI"),
    "roi box nan": ({"analysis.roi": "box:1,2,nan"}, "analysis.roi: ROI 'box:1,2,nan'"),
    # F5: 1e-4 V/s ramped for hours of wall time
    "ramp 1e-4 V/s": ({"drivers.hv.ramp_v_per_s": 1e-4}, "drivers.hv.ramp_v_per_s: must be >= 1"),
}


@pytest.mark.parametrize("what", list(BAD_VALUES))
def test_a_bad_value_is_refused_by_check_and_by_run(tmp_path: Path, capsys, what: str) -> None:
    changes, says = BAD_VALUES[what]
    cfg = run_file(tmp_path, changes)
    check_and_run(capsys, tmp_path, cfg, says)


@pytest.mark.parametrize("key, value, says", [
    ("flight_path_mm", float("inf"), "instrument.flight_path_mm: must be a finite number"),
    ("background_per_ns", 1.0, "instrument.background_per_ns: must be <= 1e-06")])
def test_an_absurd_instrument_value_names_the_key(tmp_path: Path, capsys, key: str,
                                                  value: float, says: str) -> None:
    inst = yaml.safe_load((CONFIGS / "instruments" / "leap5000xs.yaml").read_text())
    inst[key] = value
    cfg = run_file(tmp_path, {"instrument": inst})
    check_and_run(capsys, tmp_path, cfg, says)


def test_a_stop_count_beyond_what_a_run_can_hold(tmp_path: Path, capsys) -> None:
    # F4: --ions 2**64+1 wrote 4.9 GB a minute; in the file, and as --ions, the model says no
    cfg = run_file(tmp_path, {"run.stop.ions": 2**64 + 1})
    check_and_run(capsys, tmp_path, cfg, "run.stop.ions: must be <= 10000000000", ions=False)
    one_error(capsys, ["run", str(RUN), "--ions", str(10**11), "-o", str(tmp_path / "o.h5"),
                       "--quiet"], "run.stop.ions: must be <= 10000000000")


def test_an_empty_schedule_is_refused(tmp_path: Path, capsys) -> None:
    # F11: passed check, then IndexError in the run's ramp
    cfg = run_file(tmp_path, {"run.schedule": []}, drop=("run.laser_pj",))
    check_and_run(capsys, tmp_path, cfg, "run.schedule: must have at least 1 item")


def test_a_simulated_run_that_nothing_stops_is_refused(tmp_path: Path, capsys) -> None:
    # F4: wrote 5.3 GB a minute until killed
    cfg = run_file(tmp_path, {"run.stop": {"ions": None, "on_fracture": False}})
    check_and_run(capsys, tmp_path, cfg, "run.stop: nothing stops this simulated run",
                  ions=False)
    cfg = run_file(tmp_path, {"run.stop": {"ions": None, "on_fracture": False,
                                           "instrument_time_s": 600}}, name="timed.yaml")
    assert errors(capsys, ["config", "check", str(cfg)], code=0) == []


def test_a_real_run_that_nothing_stops_is_a_warning(tmp_path: Path, capsys) -> None:
    """Stopped by hand on a real instrument: said, not refused."""
    cfg = run_file(tmp_path, {"run.stop": {"ions": None, "on_fracture": False},
                              "drivers.dld": {"backend": "stream", "url": "tcp://127.0.0.1:9"}})
    assert main(["config", "check", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "run.stop: nothing stops this run but its operator" in err and str(cfg) in err


def test_a_ramp_of_hours_is_a_warning(tmp_path: Path, capsys) -> None:
    cfg = run_file(tmp_path, {"drivers.hv.ramp_v_per_s": 1, "run.start_voltage_v": 5000})
    assert main(["config", "check", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "drivers.hv.ramp_v_per_s: 1 V/s takes 1.4 h to ramp" in err, err


@pytest.mark.parametrize("key, value", [("instrument", "/dev/null"),
                                        ("analysis.ranges", "/dev/zero")])
def test_an_include_that_is_not_a_regular_file(tmp_path: Path, capsys, key: str,
                                               value: str) -> None:
    # F22: "file not found" of files that exist
    cfg = run_file(tmp_path, {key: value})
    check_and_run(capsys, tmp_path, cfg, f"{key}: ", "not a regular file", value)


@pytest.mark.timeout(120)
def test_the_largest_seed_runs(tmp_path: Path, capsys) -> None:
    # F10: 2**64 - 1 is what numpy and the HDF5 attribute hold
    import h5py

    cfg = run_file(tmp_path, {"run.seed": 2**64 - 1})
    out = tmp_path / "seed.h5"
    assert main(["run", str(cfg), "--ions", "200", "-o", str(out), "--quiet"]) == 0
    capsys.readouterr()
    with h5py.File(out) as f:
        assert int(f["meta"].attrs["seed"]) == 2**64 - 1


# ------------------------------------------------------------------ F17: what check now reads
def test_check_reads_the_range_file_as_run_does(tmp_path: Path, capsys) -> None:
    garbage = tmp_path / "garbage.rrng"
    garbage.write_bytes(b"\x0f\xfe\xfa binary\n" * 20)
    pos = tmp_path / "data.pos"
    pos.write_bytes(b"\x00" * 1600)
    for ranges in (garbage, pos):
        cfg = run_file(tmp_path, {"analysis.ranges": str(ranges)})
        check_and_run(capsys, tmp_path, cfg, str(ranges), named=False)  # as run names it


def sweep_file(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "sweep.yaml"
    p.write_text(f"name: c\nbase: {run_file(tmp_path)}\n{body}")
    return p


@pytest.mark.parametrize("body, says", [
    ("set:\n  run.laser_pj: abc\naxes:\n  run.seed: [1, 2]\n",
     ["sweep.yaml:4 set run.laser_pj: Input should be a valid number"]),
    ("axes:\n  run.bogus: [1, 2]\n", ["sweep.yaml:4 axes run.bogus: unknown key"]),
    ("axes:\n  run.laser_pj: [.nan, -1]\n",
     ["sweep.yaml:4 axes run.laser_pj: must be a finite number, got nan",
      "sweep.yaml:4 axes run.laser_pj: must be > 0.0, got -1"]),
    ("axes:\n  run.seed: {start: 1, stop: 3, step: 0.5}\n",
     ["sweep.yaml:4 axes run.seed: Input should be a valid integer"]),
], ids=["set abc", "axis bogus", "axis nan and -1", "seed step 0.5"])
def test_check_of_a_campaign_validates_set_and_axes(tmp_path: Path, capsys, body: str,
                                                    says: list[str]) -> None:
    sweep = sweep_file(tmp_path, body)
    found = errors(capsys, ["config", "check", str(sweep)])
    assert len(found) == len(says), found
    for line, want in zip(found, says, strict=True):
        assert want in line and str(sweep) in line, (want, line)
    assert errors(capsys, ["campaign", str(sweep), "--dry-run", "-o", str(tmp_path / "c"),
                           "--quiet"])  # which campaign refused already


def test_a_sweep_range_whose_count_overflows(tmp_path: Path, capsys) -> None:
    # F14: OverflowError: cannot convert float infinity to integer
    sweep = sweep_file(tmp_path, "axes:\n  run.seed: {start: 1, stop: 1.0e+308, step: 1.0e-300}\n")
    one_error(capsys, ["config", "check", str(sweep)], f"{sweep}:4 axes.run.seed",
              "more than the 10000 points")
    one_error(capsys, ["campaign", str(sweep), "--dry-run", "-o", str(tmp_path / "c"),
                       "--quiet"], "more than the 10000 points")


def test_a_good_campaign_still_checks(tmp_path: Path, capsys) -> None:
    sweep = sweep_file(tmp_path, "ions: 1000\nset:\n  run.seed: 3\naxes:\n"
                                 "  run.laser_pj: {start: 5, stop: 20, num: 4}\n")
    assert errors(capsys, ["config", "check", str(sweep)], code=0) == []


# ------------------------------------------------------------------ the other readers (F7, F22)
def test_a_bad_ports_file_is_one_line(tmp_path: Path, capsys) -> None:
    cfg = run_file(tmp_path)
    out = str(tmp_path / "o.h5")
    for body, says in [(b"\xff\xfe{}", "not UTF-8 text (byte 0xff at offset 0)"),
                       (b'{"hv": 5, "laser": null}', "hv: 5 is not a resource string"),
                       (b'{"hv": ' + b"1" * 5000 + b"}", "not a ports file"),
                       (b"{}", "names none of laser, hv")]:
        ports = tmp_path / "ports.json"
        ports.write_bytes(body)
        one_error(capsys, ["run", str(cfg), "--ions", "200", "-o", out, "--quiet",
                           "--ports-file", str(ports)], str(ports), says)


def test_import_field_map_and_instrument_that_are_not_utf8(tmp_path: Path, capsys) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("tof,v\n500,5000\n510,5000\n")
    fmap = tmp_path / "fm.yaml"
    fmap.write_bytes(b"fields:\n  tof: \xe9\n")
    one_error(capsys, ["import", str(csv), "-o", str(tmp_path / "i.h5"), "--field-map",
                       str(fmap)], str(fmap), "not UTF-8 text (byte 0xe9 at offset 15)")
    inst = tmp_path / "inst.yaml"
    inst.write_bytes(bytes(range(0x80, 0x100)))
    argv = ["import", str(csv), "-o", str(tmp_path / "j.h5"), "--fields",
            "tof=tof:ns,v_dc=v:V", "--instrument"]
    one_error(capsys, [*argv, str(inst)], str(inst), "not UTF-8 text (byte 0x80 at offset 0)")
    one_error(capsys, [*argv, "/dev/null"], "/dev/null: not a regular file")


def test_a_ports_file_is_json_of_strings(tmp_path: Path) -> None:
    from apt_daq.commands.emulate import read_ports

    p = tmp_path / "ports.json"
    ports = {"laser": "TCPIP::127.0.0.1::5025::SOCKET", "dld": "tcp://127.0.0.1:7000"}
    p.write_text(json.dumps(ports))
    assert read_ports(p) == ports


# ------------------------------------------------------------------ a misspelt key (Dec 6)
#: misspelt keys at several depths and the keys docs/config.md documents there
MISSPELT = {"run.base_temprature_k": "base_temperature_k", "drivers.hv.limt_v": "limit_v",
            "analysis.fda_ion": "fda_ions", "run.stop.ion": "ions"}


@pytest.mark.parametrize("typo", list(MISSPELT))
def test_a_misspelt_key_names_the_key_it_is_close_to(tmp_path: Path, capsys, typo: str) -> None:
    meant = MISSPELT[typo]
    assert f"`{meant}`" in (ROOT / "docs" / "config.md").read_text()  # a key users can look up
    cfg = run_file(tmp_path, {typo: 5})
    check_and_run(capsys, tmp_path, cfg, typo, f"did you mean '{meant}'?")


def test_a_key_close_to_none_is_only_unknown(tmp_path: Path, capsys) -> None:
    cfg = run_file(tmp_path, {"run.colour_scheme": 5})
    line = check_and_run(capsys, tmp_path, cfg, "run.colour_scheme", "unknown key")
    assert "did you mean" not in line


@pytest.mark.parametrize("key, given, kind", [
    ("instrument", "specimens/nmc811-cr.yaml", "a specimen"),
    ("specimen", "instruments/leap5000xs.yaml", "an instrument"),
    ("specimen", "runs/nmc811-cr-5pj.yaml", "a run"),
])
def test_the_wrong_kind_of_file_is_named_in_one_line(tmp_path: Path, capsys, key: str,
                                                     given: str, kind: str) -> None:
    """A run file given as a sweep's specimen was eight lines blaming the shipped files it
    includes ('leap5000xs.yaml:3 instrument: unknown key', 'nmc811-cr-5pj.yaml:3 name:
    required but missing', ...): an outside audit. Now the file's kind, in one line."""
    run = yaml.safe_load((CONFIGS / "runs" / "nmc811-cr-5pj.yaml").read_text())
    for k in ("instrument", "specimen", "analysis"):
        if isinstance(run.get(k), str):
            run[k] = str((CONFIGS / "runs" / run[k]).resolve())
    run["analysis"] = {}
    run[key] = str(CONFIGS / given)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(run))
    capsys.readouterr()
    assert main(["config", "check", str(path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    article = "an instrument" if key == "instrument" else "a specimen"
    assert len(err) == 1 and f"is {kind} file, not {article} file" in err[0], err


def test_a_sweeps_specimen_axis_given_a_run_file_is_one_line(tmp_path: Path, capsys) -> None:
    run = CONFIGS / "runs" / "nmc811-cr-5pj.yaml"
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\nbase: {run}\naxes:\n  specimen: [{run}]\n")
    capsys.readouterr()
    assert main(["config", "check", str(path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "is a run file, not a specimen file" in err[0], err

"""The streamed composition pass (ion stream chunk by chunk: m/n, ranging, spectrum, counts)
equals the same analysis of the whole run held in memory, and reads in bounded chunks."""

from __future__ import annotations

import numpy as np
import pytest

from apt_daq.analysis.composition import composition, stream_composition
from apt_daq.config import InstrumentConfig
from apt_daq.hits import HIT_DTYPE
from apt_daq.io.store import RunReader, RunWriter
from apt_daq.pipeline.corrections import Calibration
from apt_daq.pipeline.ions import ION_CHUNK, IonStream, open_stream
from apt_daq.pipeline.ranging import ranges_for_ions
from apt_daq.pipeline.tof import K_DA, flight_time_ns
from apt_daq.rangetable import table_to_meta

INST = InstrumentConfig()
IONS = ["Li+", "O+", "O2+", "Ni+", "Ni2+", "Co+", "Mn+", "Mn2+", "NiO+"]
CAL = Calibration((0.998, 0.0005, -1e-5), (1.0, 1e-4, -1e-4, 2e-4, 1e-5, 2e-4),
                  t0_ns=float(INST.t0_ns), flight_path_mm=float(INST.flight_path_mm),
                  source="test")  # fmt: skip


@pytest.fixture(scope="module")
def run_file(tmp_path_factory) -> str:
    """A 50 000-ion run: masses on the ions' peaks (RP ~ 1000) plus 10 % flat background,
    voltage ramping 4 -> 8 kV, hits across the detector; calibration and ranges stored."""
    from apt_daq.isotopes import ion_mass

    rng = np.random.default_rng(7)
    n = 50_000
    m = np.array([ion_mass(i) for i in IONS])[rng.integers(0, len(IONS), n)]
    m *= 1 + rng.normal(0, 1 / 2355, n)
    bg = rng.random(n) < 0.1
    m[bg] = rng.uniform(2, 130, int(bg.sum()))
    r = 38 * np.sqrt(rng.random(n))
    phi = rng.uniform(0, 2 * np.pi, n)
    h = np.zeros(n, HIT_DTYPE)
    h["det_x"], h["det_y"] = r * np.cos(phi), r * np.sin(phi)
    h["v_dc"] = np.linspace(4000, 8000, n)
    h["v_pulse"] = rng.uniform(0, 50, n)
    h["tof"] = flight_time_ns(m, h["v_dc"].astype(float) + h["v_pulse"], INST.flight_path_mm,
                              h["det_x"], h["det_y"], INST.t0_ns)  # fmt: skip
    h["pulse"] = np.cumsum(rng.geometric(0.01, n))
    h["multiplicity"] = 1
    path = tmp_path_factory.mktemp("stream") / "run.h5"
    meta = {"instrument": INST.model_dump(mode="json"), "calibration": CAL.as_dict(),
            "ranges": table_to_meta(ranges_for_ions(IONS))}  # fmt: skip
    with RunWriter(path, meta) as w:
        for s in range(0, n, 12_345):  # appended in uneven chunks, as a run does
            w.append(hits=h[s : s + 12_345])
        w.finish("completed")
    return str(path)


def numpy_route(hits: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """m/n of every hit at once in plain numpy (the documented formula, not the kernels),
    stored float32 as the stream stores it, ranged by np.searchsorted: counts per range."""
    t = hits["tof"].astype(np.float64) - CAL.t0_ns
    x, y = hits["det_x"].astype(np.float64), hits["det_y"].astype(np.float64)
    v = hits["v_dc"].astype(np.float64) + CAL.beta * hits["v_pulse"]
    m = K_DA * v * t * t / ((CAL.flight_path_mm**2 + x * x + y * y) * 1e-6)
    u = v * 1e-3
    c, b = CAL.voltage_coeffs, CAL.bowl_coeffs
    xs, ys = x / 10.0, y / 10.0
    m = m / ((c[0] + u * (c[1] + u * c[2]))
             * (b[0] + b[1] * xs + b[2] * ys + b[3] * xs * xs + b[4] * xs * ys + b[5] * ys * ys))
    m32 = m.astype(np.float32).astype(np.float64)
    j = np.searchsorted(lo, m32, side="right") - 1
    ion = np.where((j >= 0) & (m32 < hi[np.clip(j, 0, None)]), j, -1)
    return np.bincount(ion[ion >= 0], minlength=len(lo))


def test_streamed_equals_in_memory(run_file: str) -> None:
    with RunReader(run_file) as r:
        whole = stream_composition(open_stream(r, positions="none", chunk=10**9))
        streamed = stream_composition(open_stream(r, positions="none", chunk=4096))
        hits = r.read("hits")
        ranges = open_stream(r).ranges
    assert streamed.ions == whole.ions == len(hits)
    np.testing.assert_array_equal(streamed.range_counts, whole.range_counts)
    np.testing.assert_array_equal(streamed.spectrum.counts, whole.spectrum.counts)
    assert streamed.composition.atoms == whole.composition.atoms
    # in memory by another route: numpy m/n and search over all hits at once
    want = numpy_route(hits, ranges.lo_da, ranges.hi_da)
    np.testing.assert_array_equal(streamed.range_counts, want)
    comp, counts = composition(want, ranges)
    assert streamed.composition.atoms == comp.atoms and streamed.ion_counts == counts
    assert want.sum() > 0.5 * len(hits)  # most ions ranged: the test compares something


class CountingReader:
    """A RunReader that records the rows of every read."""

    def __init__(self, reader: RunReader):
        self._r = reader
        self.rows: list[int] = []

    def __getattr__(self, name: str):
        return getattr(self._r, name)

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        out = self._r.read(name, start, stop)
        self.rows.append(len(out))
        return out

    def iter(self, name: str, chunk: int = 1_000_000):
        n = self._r.count(name)
        for i in range(0, n, chunk):
            yield self.read(name, i, min(i + chunk, n))


def test_stream_reads_in_bounded_chunks(run_file: str) -> None:
    """Memory is bounded by construction: every read is at most the stream's chunk, the
    default chunk's hits stay under 32 MB, and the result's arrays do not grow with the run."""
    assert ION_CHUNK * HIT_DTYPE.itemsize < 32 << 20
    with RunReader(run_file) as raw_reader:
        r = CountingReader(raw_reader)
        cal = open_stream(raw_reader).calibration
        ranges = open_stream(raw_reader).ranges
        res = stream_composition(IonStream(r, cal, ranges, positions="none", chunk=5000))
    assert r.rows and max(r.rows) <= 5000 and sum(r.rows) == res.ions
    assert len(res.spectrum.counts) == round((ranges.hi_da.max() + 20) / 0.01)
    assert res.range_counts.shape == (len(ranges),)

"""The time-of-flight pipeline: numba kernels over chunks (decode, m/n, corrections, ranging).

``process_chunk(raw, instrument, ranges) -> (hits, derived, keep, counters)`` is the per-chunk
contract; the run engine calls its two halves, ``decode_chunk`` (the fused pass, which its
feedback needs) and ``Decoded.records`` (the output rows, built while the next chunk fires).
The modules hold the pieces and their numpy-free kernels. After the store, ``ions.IonStream``
(``open_stream(reader)``) is the one calibrated ion stream that analysis, plots and exports
read; ``tof.mass_da`` is the one m/n kernel.
"""

from apt_daq.pipeline.corrections import Calibration, corrected_mass, fit_calibration
from apt_daq.pipeline.decode import decode
from apt_daq.pipeline.histogram import MassHistogram, mass_histogram
from apt_daq.pipeline.ions import IonChunk, IonStream, open_stream, run_calibration
from apt_daq.pipeline.peaks import find_peaks, peak_shape
from apt_daq.pipeline.process import Decoded, decode_chunk, process_chunk
from apt_daq.pipeline.ranging import RangeLookup, propose_ranges, range_masses, ranges_for_ions
from apt_daq.pipeline.tof import K_DA, mass_da, mass_to_charge

__all__ = [
    "K_DA",
    "Calibration",
    "Decoded",
    "IonChunk",
    "IonStream",
    "MassHistogram",
    "RangeLookup",
    "corrected_mass",
    "decode",
    "decode_chunk",
    "find_peaks",
    "fit_calibration",
    "mass_da",
    "mass_histogram",
    "mass_to_charge",
    "open_stream",
    "peak_shape",
    "process_chunk",
    "propose_ranges",
    "range_masses",
    "ranges_for_ions",
    "run_calibration",
]

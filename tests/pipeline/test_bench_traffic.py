"""The fused kernel's bench figures count the bytes its dtypes say (issue 22): the raw record
read, every output column written, against np.copyto's read + write of the same records."""

import numpy as np

from apt_daq.bench.pipeline import FUSED_READS, traffic_results
from apt_daq.hits import RAW_DTYPE


def test_traffic_counts_the_record_read_and_the_columns_written() -> None:
    outs = (np.empty(4, np.int64), *(np.empty(4, np.float32) for _ in range(4)),
            np.empty(4, np.int16))  # fmt: skip
    n, t_kernel, t_copy = 1_000_000, 0.010, 0.002
    by_input, traffic = traffic_results(n, t_kernel, t_copy, outs)
    rec = RAW_DTYPE.itemsize
    assert rec == 40 and sum(RAW_DTYPE.fields[f][0].itemsize for f in FUSED_READS) == 28
    assert np.isclose(by_input.value, n * rec / t_kernel / 1e9)
    assert np.isclose(by_input.ratio, t_copy / t_kernel)
    assert np.isclose(traffic.value, n * (rec + 26) / t_kernel / 1e9)  # 8 + 4 x 4 + 2 written
    assert np.isclose(traffic.baseline, n * 2 * rec / t_copy / 1e9)
    assert np.isclose(traffic.ratio, (rec + 26) / (2 * rec) * t_copy / t_kernel)
    assert "ratio is 0.100" in by_input.note  # the 20 B a hit: 20 / 40 of 0.2

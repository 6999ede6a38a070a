"""DLD binary framing (round trips, byte layout, corruption) and the stream DLD on loopback."""

from __future__ import annotations

import socket
import struct
import threading

import numpy as np
import pytest
from apt_daq.drivers import dld_stream as fr
from apt_daq.drivers.base import BadReply, DriverTimeout
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_daq import drivers
from apt_daq.hits import RAW_DTYPE


def records(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.zeros(n, RAW_DTYPE)
    r["pulse"] = np.sort(rng.integers(0, 2**40, n))
    for f in ("t_x1", "t_x2", "t_y1", "t_y2", "t_mcp"):
        r[f] = rng.integers(-1, 2**31 - 1, n)
    r["v_dc"], r["laser_pj"] = rng.random(n) * 1e4, 5.0
    return r


def test_header_byte_layout_is_little_endian():
    b = fr.encode_data(records(2), first_pulse=7, n_pulses=1000, dropped=3)
    assert b[:4] == b"APTD" and len(b) == 40 + 2 * 40
    flen, version, kind, size = struct.unpack_from("<IHHI", b, 4)
    assert (flen, version, kind, size) == (32 + 80, 1, fr.DATA, 40)
    assert struct.unpack_from("<QQII", b, 16) == (7, 1000, 2, 3)
    # record layout = RAW_DTYPE little endian: pulse u64 at 40, t_x1 i4 at 48
    r = records(2)
    b = fr.encode_data(r, first_pulse=0, n_pulses=1)
    assert struct.unpack_from("<Qi", b, 40) == (int(r["pulse"][0]), int(r["t_x1"][0]))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 50), first=st.integers(0, 2**63), pulses=st.integers(0, 2**63),
       dropped=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(1, 5000), max_size=5))
def test_roundtrip_through_incremental_decoder(n, first, pulses, dropped, cuts):
    r = records(n, seed=n)
    stream = (fr.encode(fr.START) + fr.encode_data(r, first_pulse=first, n_pulses=pulses,
                                                   dropped=dropped)
              + fr.encode(fr.ERROR, text="überlauf") + fr.encode(fr.END))
    dec, frames, at = fr.FrameDecoder(), [], 0
    for c in [*sorted(cuts), len(stream)]:  # split anywhere: frames must come out whole
        frames += dec.feed(stream[at:c])
        at = max(at, c)
    assert [f.kind for f in frames] == [fr.START, fr.DATA, fr.ERROR, fr.END]
    d = frames[1]
    assert (d.first_pulse, d.n_pulses, d.dropped) == (first, pulses, dropped)
    assert d.records.dtype == RAW_DTYPE and np.array_equal(d.records, r)
    assert frames[2].text == "überlauf" and dec.pending == 0


def test_corruption_names_the_byte_offset():
    good = fr.encode(fr.END)
    with pytest.raises(fr.FrameError, match=r"byte 40: bad magic"):
        fr.FrameDecoder().feed(good + b"XXXX" + good[4:])
    bad_size = bytearray(fr.encode_data(records(1), first_pulse=0, n_pulses=1))
    bad_size[12] = 44
    with pytest.raises(fr.FrameError, match=r"byte 12: record_size 44, expected 40"):
        fr.decode_frame(bytes(bad_size))
    with pytest.raises(TypeError, match="RAW_DTYPE"):
        fr.encode_data(np.zeros(2, "<f8"), first_pulse=0, n_pulses=1)


class FrontEnd:
    """A tiny DLD front end: after START sends the given DATA blocks; STOP -> END."""

    def __init__(self, blocks):
        self.blocks = blocks
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        conn, _ = self.sock.accept()
        dec = fr.FrameDecoder()
        while True:
            data = conn.recv(65536)
            if not data:
                break
            for f in dec.feed(data):
                if f.kind == fr.START:
                    for i, b in enumerate(self.blocks):
                        payload = fr.encode_data(b, first_pulse=i * 1000, n_pulses=1000,
                                                 dropped=i)
                        conn.sendall(payload[:50])  # split mid-frame on purpose
                        conn.sendall(payload[50:])
                elif f.kind == fr.STOP:
                    conn.sendall(fr.encode(fr.END))
        conn.close()


def test_stream_dld_reads_blocks_and_counters():
    blocks = [records(5, 1), records(0), records(3, 2)]
    blocks[0]["pulse"][:2] = 17  # one double hit
    fe = FrontEnd(blocks)
    with drivers.open_dld({"backend": "stream", "url": fe.url, "max_chunk_records": 4,
                           "timeout_s": 2}) as dld:
        dld.start()
        got = [dld.read_chunk(2.0) for _ in range(4)]
        assert [len(g) for g in got] == [4, 1, 0, 3]  # 5 split by max_chunk_records=4
        assert np.array_equal(np.concatenate(got), np.concatenate(blocks))
        assert dld.counters == {"pulses": 3000, "hits": 8, "multi_hits": 1, "dropped": 3}
        with pytest.raises(DriverTimeout, match=r"no frame within 0\.05 s"):
            dld.read_chunk(0.05)
        dld.stop()
        assert not dld.running


def test_stream_dld_corrupt_stream_is_a_bad_reply():
    srv = socket.create_server(("127.0.0.1", 0))

    def run():
        conn, _ = srv.accept()
        conn.recv(100)
        conn.sendall(b"NOPE" + bytes(60))

    threading.Thread(target=run, daemon=True).start()
    dld = drivers.open_dld({"backend": "stream", "url":
                            f"tcp://127.0.0.1:{srv.getsockname()[1]}"})
    dld.start()
    with pytest.raises(BadReply, match="bad magic"):
        dld.read_chunk(2.0)
    dld.close()

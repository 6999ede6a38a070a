"""The DLD record stream's framing, defined in the foundation module
:mod:`apt_daq.wire.dld_stream` (the emulator's server speaks it too) and re-exported here."""

from apt_daq.wire.dld_stream import (
    DATA,
    END,
    ERROR,
    HEADER,
    HEADER_SIZE,
    KINDS,
    MAGIC,
    MAX_FRAME,
    START,
    STOP,
    VERSION,
    Frame,
    FrameDecoder,
    FrameError,
    decode_frame,
    decode_header,
    encode,
    encode_data,
)

__all__ = [
    "DATA", "END", "ERROR", "HEADER", "HEADER_SIZE", "KINDS", "MAGIC", "MAX_FRAME", "START",
    "STOP", "VERSION", "Frame", "FrameDecoder", "FrameError", "decode_frame", "decode_header",
    "encode", "encode_data",
]

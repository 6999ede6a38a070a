"""The wire protocols both sides speak: the drivers (clients) and the emulator's servers.

A foundation package, so neither side imports the other to agree on a frame or a code:
:mod:`apt_daq.wire.dld_stream` (binary DLD record frames over TCP),
:mod:`apt_daq.wire.scpi_commands` (the SCPI command sets of the HV supply and the laser: texts,
argument and reply formats, error codes) and :mod:`apt_daq.wire.hv_line` (the terse HV line
protocol's terminator and error codes).
"""

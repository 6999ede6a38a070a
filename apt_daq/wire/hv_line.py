"""The terse HV line protocol's constants, shared by the serial driver
(:mod:`apt_daq.drivers.serial_line`, where the command table is documented) and the emulator's
line interface (:mod:`apt_daq.sim.serial_server`).

ASCII lines terminated by CR LF both ways; a refused command answers ``ERR <code> <message>``.
Error codes: 1 unknown command, 2 bad argument, 3 out of range, 4 tripped, 5 other.
"""

EOL = "\r\n"
ERR_UNKNOWN, ERR_ARGUMENT, ERR_RANGE, ERR_TRIPPED, ERR_OTHER = 1, 2, 3, 4, 5

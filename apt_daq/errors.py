"""Errors that reach the user as one line and exit code 2 (bad input), never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a file, a config, an argument. The message names what and where."""


class DataFileError(UserError):
    """A data file that cannot be read as what it claims to be (names the file and offset)."""


class DiskFull(DataFileError):
    """The disk (or the file size limit) ran out while a run file was written. The message names
    the file and says what it still holds."""

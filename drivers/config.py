"""The drivers' pydantic configs (``backend`` picks the implementation): defined in the
foundation module :mod:`apt_daq.driver_config` (the run file's ``drivers:`` section) and
re-exported here, where lab scripts look for them."""

from apt_daq.driver_config import (
    BUILTIN_BACKENDS,
    DldConfig,
    DriversConfig,
    HvConfig,
    LaserConfig,
)

__all__ = ["BUILTIN_BACKENDS", "DldConfig", "DriversConfig", "HvConfig", "LaserConfig"]

"""apt-daq's bluesky face (the optional extra ``pip install 'apt-daq[bluesky]'``).

- :mod:`apt_daq.bluesky.devices`: ophyd-async devices for the laser, the HV supply and the
  detector over apt-daq's drivers (soft signals: no EPICS or Tango), whose sets keep the
  drivers' safety rules;
- :func:`acquire`: a plan running an apt-daq acquisition inside bluesky's RunEngine, with
  event-model documents per readout block and the HDF5 run file as a stream resource.

See docs/bluesky.md.
"""

from __future__ import annotations

try:
    import bluesky as _bluesky  # noqa: F401
    import event_model as _event_model  # noqa: F401
    import ophyd_async as _ophyd_async  # noqa: F401
except ImportError as e:  # pragma: no cover (the extra is in dev)
    raise ImportError(f"apt_daq.bluesky needs the bluesky extra: pip install 'apt-daq[bluesky]' "
                      f"({e})") from e

from apt_daq.bluesky.devices import (
    AptDetector,
    AptDevices,
    AptHvSupply,
    AptLaser,
    open_devices,
)
from apt_daq.bluesky.plans import BLOCK_FIELDS, HITS_MIMETYPE, RunBlocks, RunHits, acquire
from apt_daq.bluesky.suspenders import WatchSignal

__all__ = ["BLOCK_FIELDS", "HITS_MIMETYPE", "AptDetector", "AptDevices", "AptHvSupply",
           "AptLaser", "RunBlocks", "RunHits", "WatchSignal", "acquire", "open_devices"]

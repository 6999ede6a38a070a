"""Tomographic reconstruction: moved to :mod:`apt_daq.pipeline.reconstruction` (the ion stream
reconstructs positions as it goes); re-exported here for existing imports."""

from apt_daq.pipeline.reconstruction import Reconstructor, bas_kernel

__all__ = ["Reconstructor", "bas_kernel"]

"""Regions of interest. The model is a foundation module (:mod:`apt_daq.roi`: the run file's
``analysis.roi`` is checked before a run starts); re-exported here for the analysis."""

from apt_daq.roi import Roi, parse_roi

__all__ = ["Roi", "parse_roi"]

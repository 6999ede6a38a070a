"""``apt-daq plot RUN.h5 [-o DIR] [--ranges FILE] [--roi SPEC]``: PNG figures of a run."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="mass spectrum, hit map, FDA, profile and slices as PNG")
    p.add_argument("run", help="run file (.h5)")
    p.add_argument("-o", "--out", default=None, help="output folder (default: RUN_plots/)")
    p.add_argument("--ranges", help="RRNG/RNG range file (default: the run file's)")
    p.add_argument("--roi", help="ROI for FDA and profile (default: config)")
    p.set_defaults(func=_plot)


def _plot(args: argparse.Namespace) -> int:
    from apt_daq.analysis.report import analyze
    from apt_daq.plots import plot_all

    res = analyze(args.run, args.ranges, args.roi)
    out = Path(args.out) if args.out else Path(args.run).with_name(Path(args.run).stem + "_plots")
    for f in plot_all(res, out):
        print(f)
    return 0

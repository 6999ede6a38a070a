"""``apt-daq plot RUN.h5 [-o DIR] [--format png|svg|pdf] [--only NAME]``: figures of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

# the names of apt_daq.plots.FIGURES, kept here so `apt-daq --help` does not import matplotlib
FIGURE_NAMES = ("spectrum", "hitmap", "fda", "profile", "slices", "multihit")
FORMATS = ("png", "svg", "pdf")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot", help="mass spectrum, hit map, FDA, profile, slices and multi-hits as PNG, SVG "
        "or PDF",
        description="Draw a run's figures from its calibrated ion stream into a folder, one "
        "file a figure: " + ", ".join(FIGURE_NAMES) + ".",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="figures (--only NAME):\n"
        "  spectrum  mass spectrum, log counts, ranges shaded per ion, peak labels, isotopes\n"
        "  hitmap    detector hit map with colour bar\n"
        "  fda       frequency distribution analysis against the binomial\n"
        "  profile   concentration profile along z in the ROI, with counting errors\n"
        "  slices    XZ and XY slices coloured by ion, with a colour bar\n"
        "  multihit  correlation (Saxey) histogram of multi-hit pairs; events by multiplicity",
    )  # fmt: skip
    p.add_argument("run", help="run file (.h5)")
    p.add_argument("-o", "--out", default=None, help="output folder (default: RUN_plots/)")
    p.add_argument("--ranges", help="RRNG/RNG range file (default: the run file's)")
    p.add_argument("--roi", help="ROI for FDA and profile (default: config)")
    p.add_argument("--format", choices=FORMATS, default="png", dest="fmt",
                   help="file format of the figures (default: png)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace figures of the same names already in the output folder")
    p.add_argument("--only", action="append", choices=FIGURE_NAMES, metavar="NAME",
                   help="draw only this figure (repeatable): " + ", ".join(FIGURE_NAMES))  # fmt: skip
    p.set_defaults(func=_plot)


def _plot(args: argparse.Namespace) -> int:
    from apt_daq.analysis.report import analyze
    from apt_daq.cli import console
    from apt_daq.plots import plot_all

    out = Path(args.out) if args.out else Path(args.run).with_name(Path(args.run).stem + "_plots")
    _check_out(out, [f"{n}.{args.fmt}" for n in (args.only or FIGURE_NAMES)], args.overwrite)
    res = analyze(args.run, args.ranges, args.roi)
    skipped: dict[str, str] = {}  # figures that cannot be drawn: not written, said why
    for f in plot_all(res, out, fmt=args.fmt, only=args.only, roi=args.roi, skipped=skipped):
        print(f)
    for name, why in skipped.items():
        console(stderr=True).print(f"warning: {args.run}: no {name} figure: {why}", markup=False)
    return 0


def _check_out(out: Path, names: list[str], overwrite: bool) -> None:
    """Before any work: ``out`` must be (or become) a folder, and without ``--overwrite``
    hold none of the figure files this command would write."""
    from apt_daq.errors import UserError

    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file; -o takes the folder the figures go into")
    there = [n for n in names if (out / n).exists()]
    if there and not overwrite:
        raise UserError(f"{out / there[0]}: exists (use --overwrite or another -o)"
                        + (f"; so do {len(there) - 1} more of the figures" if len(there) > 1
                           else ""))

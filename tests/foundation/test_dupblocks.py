"""tools/dupblocks.py (the repeated-block check of issue 21) finds a block copied with other
names, tells it from one copied as is, and ignores docstrings, comments and short blocks."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from dupblocks import repeated_blocks  # noqa: E402

BLOCK = """
def {f}(record, bins):
    \"\"\"A docstring that differs: {f}.\"\"\"
    total_x = record["t_x1"] + record["t_x2"] - 2 * bins.offset_x  # comment {f}
    total_y = record["t_y1"] + record["t_y2"] - 2 * bins.offset_y
    position_x = 0.5 * (record["t_x1"] - record["t_x2"]) * bins.velocity
    position_y = 0.5 * (record["t_y1"] - record["t_y2"]) * bins.velocity
    keep = (abs(total_x - bins.sum_x) < bins.tolerance) & (abs(total_y - bins.sum_y) < 3)
    return position_x[keep], position_y[keep]
"""


def _tree(tmp_path: Path, a: str, b: str) -> Path:
    for folder, name, text in (("drivers", "a.py", a), ("sim", "b.py", b)):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / name).write_text(textwrap.dedent(text))
    (tmp_path / "apt_daq" / "pipeline").mkdir(parents=True)
    return tmp_path


def test_a_block_copied_as_is_is_found_both_ways(tmp_path):
    root = _tree(tmp_path, BLOCK.format(f="decode"), BLOCK.format(f="other_name"))
    assert repeated_blocks(False, root) and repeated_blocks(True, root)
    files = {f for places in repeated_blocks(False, root) for f, _ in places}
    assert files == {"drivers/a.py", "sim/b.py"}


def test_a_renamed_copy_is_found_only_with_other_names(tmp_path):
    renamed = (BLOCK.format(f="g").replace("total_", "sum_").replace("position_", "p_")
               .replace("bins", "cal").replace("keep", "ok"))
    root = _tree(tmp_path, BLOCK.format(f="f"), renamed)
    assert not repeated_blocks(False, root)
    assert repeated_blocks(True, root)


def test_different_code_is_not_reported(tmp_path):
    other = BLOCK.format(f="f").replace(" - 2 * ", " + 3 * ").replace("0.5 *", "abs(").replace(
        ") * bins.velocity", ")) * bins.velocity")
    root = _tree(tmp_path, BLOCK.format(f="f"), other)
    assert not repeated_blocks(True, root)


# The tree itself (issue 21: "no block of six or more lines repeated across drivers/, sim/ and
# apt_daq/pipeline, as is or with other names"). None is repeated as is. The ones repeated with
# other names are declarative tables, listed here by the files they are in, with how many windows
# of six lines each may hold and why; a new one, or one more in a listed place, fails, and so does
# an entry that no longer matches (delete it when the repeat goes).
RENAMED_TABLES: dict[tuple[str, ...], tuple[int, str]] = {
    ("drivers/hv.py", "drivers/laser.py"): (
        1, "each driver's import list and its one-line queries (a command and a parser each: "
           "different facts, the same shape)"),
    ("drivers/hv_base.py", "drivers/laser_base.py"): (
        1, "an abstract query, then the helpers formatting each instrument's own command texts"),
    ("drivers/sim_backends.py",): (
        1, "the HV and laser sim backends' one-line _call(command, model method) lines"),
    ("sim/scpi_server.py",): (
        5, "the HV and laser SCPI tables: add(command, model method), one line per command"),
}


def _renamed_repeats_by_files() -> dict[tuple[str, ...], int]:
    out: dict[tuple[str, ...], int] = {}
    for places in repeated_blocks(True):
        key = tuple(sorted({f for f, _ in places}))
        out[key] = out.get(key, 0) + 1
    return out


def test_the_tree_repeats_no_block_as_is():
    assert repeated_blocks(False) == []


def test_the_tree_repeats_no_block_with_other_names_but_its_tables():
    found = _renamed_repeats_by_files()
    over = {k: n for k, n in found.items() if n > RENAMED_TABLES.get(k, (0, ""))[0]}
    assert not over, ("blocks of six lines repeated with other names (python tools/dupblocks.py "
                      f"lists them): {over}")
    stale = sorted(k for k, (n, _) in RENAMED_TABLES.items() if found.get(k, 0) < n)
    assert not stale, f"RENAMED_TABLES holds more than is found (lower or delete): {stale}"

"""Find blocks of six or more lines repeated across drivers/, sim/ and apt_daq/pipeline (issue 21,
"one place per fact"), as is or with other names.

    python tools/dupblocks.py            # both kinds; exit status 1 if any
    python tools/dupblocks.py --as-is    # only blocks repeated token for token

Each file is tokenized; comments, docstrings and blank lines are dropped and each source line
becomes its tokens joined by spaces. "With other names" replaces every identifier by ``N`` and
every number by ``0`` first, so a block copied and renamed is found too. A block is six
consecutive such lines holding at least 120 characters (not a run of imports or closing
brackets), found in two files, or twice in one file without overlapping.
"""

from __future__ import annotations

import io
import keyword
import sys
import tokenize
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("drivers", "sim", "apt_daq/pipeline")
LINES = 6
MIN_CHARS = 120
_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
         tokenize.ENCODING, tokenize.ENDMARKER}


def normalized_lines(text: str, rename: bool) -> list[tuple[int, str]]:
    """(line number, normalized tokens) of every line holding code."""
    lines: dict[int, list[str]] = defaultdict(list)
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return []
    for t in tokens:
        if t.type in _SKIP or (t.type == tokenize.STRING
                               and t.string.lstrip("rbuRBUfF").startswith(('"""', "'''"))):
            continue
        s = t.string
        if rename and t.type == tokenize.NAME and not keyword.iskeyword(s):
            s = "N"
        elif rename and t.type == tokenize.NUMBER:
            s = "0"
        lines[t.start[0]].append(s)
    return [(n, " ".join(v)) for n, v in sorted(lines.items())]


def repeated_blocks(rename: bool, root: Path = ROOT) -> list[list[tuple[str, int]]]:
    """Every repeated block: the (file, first line) of each place it is found."""
    seen: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(root).as_posix()
            lines = normalized_lines(path.read_text(), rename)
            for i in range(len(lines) - LINES + 1):
                window = [t for _, t in lines[i:i + LINES]]
                if sum(map(len, window)) < MIN_CHARS or all(
                        t.startswith(("import ", "from ", "@")) or t in (")", "]", "}")
                        for t in window):
                    continue
                seen["\n".join(window)].append((rel, lines[i][0]))
    out = []
    for places in seen.values():
        files = {f for f, _ in places}
        firsts = sorted(n for _, n in places)
        if len(files) > 1 or (len(places) > 1 and firsts[-1] - firsts[0] >= LINES):
            out.append(places)
    return sorted(out)


def main(argv: list[str]) -> int:
    found = 0
    for rename in ((False,) if "--as-is" in argv else (False, True)):
        blocks = repeated_blocks(rename)
        found += len(blocks)
        print(f"{'with other names' if rename else 'as is'}: {len(blocks)} repeated blocks "
              f"of {LINES} lines")
        for places in blocks:
            print("  " + "  ".join(f"{f}:{n}" for f, n in places))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

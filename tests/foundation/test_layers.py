"""Every import points down: the layering rule of docs/architecture.md, checked on the AST of
every module of the package (imports inside functions count: a lazy import is still a
dependency; code under ``if __name__ == "__main__":`` does not: it is a program's entry point,
which nothing imports).

The rule:
- a module imports only modules of its own layer or of a layer below (the table below);
- ``apt_daq.drivers`` and ``apt_daq.sim`` share a layer but meet only through the declared
  seams (``SEAMS``): the sim backends of the drivers use the simulator;
- no import cycle between modules, lazy imports included;
- the picture at the top of docs/architecture.md is the one :func:`layer_picture` draws.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# source folder -> package name (pyproject.toml [tool.setuptools.package-dir])
FOLDERS = {"apt_daq": "apt_daq", "drivers": "apt_daq.drivers", "sim": "apt_daq.sim"}

# Bottom first. A module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, list[str]]] = [
    ("foundation", ["apt_daq", "apt_daq.hits", "apt_daq.errors", "apt_daq.config",
                    "apt_daq.driver_config", "apt_daq.isotopes",
                    "apt_daq.data", "apt_daq.rangetable", "apt_daq.roi", "apt_daq.tof",
                    "apt_daq.wire", "apt_daq.shipped"]),
    ("instruments", ["apt_daq.drivers", "apt_daq.sim"]),
    ("pipeline, store and formats", ["apt_daq.pipeline", "apt_daq.io"]),
    ("engine parts", ["apt_daq.engine"]),
    ("run engine", ["apt_daq.run", "apt_daq.live"]),
    ("analysis", ["apt_daq.analysis"]),
    ("applications", ["apt_daq.plots", "apt_daq.campaign", "apt_daq.campaign_plots",
                      "apt_daq.config_check", "apt_daq.reproduce", "apt_daq.bench",
                      "apt_daq.web", "apt_daq.bluesky"]),
    ("CLI", ["apt_daq.cli", "apt_daq.commands"]),
]
# packages of one layer that must not import each other, and the declared exceptions
APART = [("apt_daq.drivers", "apt_daq.sim")]
SEAMS = {("apt_daq.drivers.sim_backends", "apt_daq.sim")}


def _module_name(path: Path) -> str:
    folder = path.relative_to(ROOT).parts[0]
    parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([FOLDERS[folder], *parts])


def modules() -> dict[str, Path]:
    out = {}
    for folder in FOLDERS:
        for p in sorted((ROOT / folder).rglob("*.py")):
            if folder == "apt_daq" or "__pycache__" not in p.parts:
                out[_module_name(p)] = p
    return out


def _is_main_guard(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if _is_main_guard(node):
            continue
        stack.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                out.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(name, p, known) for name, p in mods.items()}


def _match(name: str, prefixes: list[str]) -> int:
    return max((len(p) for p in prefixes if name == p or name.startswith(p + ".")), default=-1)


def layer_of(name: str) -> int:
    best = [_match(name, prefixes) for _, prefixes in LAYERS]
    assert max(best) >= 0, f"{name} is in no layer: add it to LAYERS"
    return best.index(max(best))


def _under(name: str, pkg: str) -> bool:
    return name == pkg or name.startswith(pkg + ".")


def violations(g: dict[str, set[str]]) -> list[str]:
    found = []
    for a, targets in sorted(g.items()):
        for b in sorted(targets):
            if layer_of(b) > layer_of(a):
                found.append(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} "
                             f"({LAYERS[layer_of(b)][0]}): a layer above it")
            for p, q in APART:
                for x, y in ((p, q), (q, p)):
                    if _under(a, x) and _under(b, y) and not any(
                            _under(a, s) and _under(b, t) for s, t in SEAMS):
                        found.append(f"{a} imports {b}: {x} and {y} meet only through "
                                     f"the declared seams {sorted(SEAMS)}")
    return found


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def layer_picture() -> str:
    """The layers top down, as docs/architecture.md shows them (modules of ``apt_daq``)."""
    import textwrap

    width = max(len(n) for n, _ in LAYERS)
    rows = []
    for n, prefixes in reversed(LAYERS):
        names = ", ".join(p.removeprefix("apt_daq.") if p != "apt_daq" else "apt_daq (root)"
                          for p in prefixes)
        lines = textwrap.wrap(names, 96 - width)
        rows.append(f"{n:<{width}}  {lines[0]}")
        rows += [" " * (width + 2) + line for line in lines[1:]]
    rows.append("")
    rows += [f"apart: {a} / {b}" for a, b in APART]
    rows += [f"seam:  {a} -> {b}" for a, b in sorted(SEAMS)]
    return "\n".join(rows)


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_imports_point_down():
    found = violations(graph())
    assert not found, "\n".join(found)


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "\n".join(" <-> ".join(c) for c in found)


def test_the_docs_picture_is_the_rule():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert f"```text\n{layer_picture()}\n```" in doc, (
        "docs/architecture.md: the layers picture is out of date; it should read\n"
        + layer_picture())


def test_the_checker_sees_a_violation(tmp_path):
    """The rule can fail: an upward import, a crossing outside the seam and a circle."""
    g = {"apt_daq.hits": {"apt_daq.run"}, "apt_daq.run": set(),
         "apt_daq.sim.physics": {"apt_daq.drivers.base"}, "apt_daq.drivers.base": set(),
         "apt_daq.io.a": {"apt_daq.io.b"}, "apt_daq.io.b": {"apt_daq.io.a"}}
    found = violations(g)
    assert any("apt_daq.hits" in f for f in found)
    assert any("apt_daq.sim.physics" in f for f in found)
    assert cycles(g) == [["apt_daq.io.a", "apt_daq.io.b"]]

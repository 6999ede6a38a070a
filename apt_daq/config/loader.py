"""YAML loading with line numbers: every key path remembers the file and line it came from, so
a validation error reads ``configs/runs/x.yaml:12 run.laser_pj: must be > 0, got -5``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from apt_daq.config.errors import ConfigError, Problems

M = TypeVar("M", bound=BaseModel)

# --------------------------------------------------------------------------- YAML loading
Lines = dict[tuple[Any, ...], tuple[str, int]]
_INCLUDES = {"instrument", "specimen", "drivers", "analysis"}


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one YAML mapping (``at``: its key path), which a plain YAML loader
    silently resolves to the last value."""

    def __init__(self, key_node: yaml.Node, at: tuple[Any, ...], first_line: int) -> None:
        super().__init__(None, None, f"duplicate key {key_node.value!r} (first at line "
                         f"{first_line}; YAML would silently keep the last)",
                         key_node.start_mark)
        self.at, self.first_line = at, first_line


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, refusing a mapping that gives a key twice (YAML 1.2 requires unique
    keys; PyYAML keeps the last). Checked on the composed document, before the merge keys
    (``<<: *anchor``) are flattened: a key that overrides a merged one is no duplicate."""

    def construct_document(self, node: yaml.Node) -> Any:
        _refuse_duplicate_keys(node)
        return super().construct_document(node)


def _refuse_duplicate_keys(root: yaml.Node) -> None:
    seen: set[int] = set()  # an alias is the anchored node again (and may be recursive)

    def walk(n: yaml.Node, at: tuple[Any, ...]) -> None:
        if id(n) in seen:
            return
        seen.add(id(n))
        if isinstance(n, yaml.MappingNode):
            first: dict[Any, int] = {}
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    if k.value in first:
                        raise DuplicateKeyError(k, (*at, k.value), first[k.value])
                    first[k.value] = k.start_mark.line + 1
                walk(v, (*at, k.value))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, (*at, i))

    walk(root, ())


#: the most YAML values a config may hold once its aliases are expanded (a shipped run file
#: holds a few hundred): a "billion laughs" file or a self-referencing alias is refused
MAX_NODES = 100_000


def compose_yaml(path: Path) -> tuple[Any, Lines]:
    """Load YAML and remember, for every key path, the file and line it came from."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader
    except DuplicateKeyError as e:
        dotted = ".".join(str(p) for p in e.at)
        raise ConfigError([f"{path}:{e.problem_mark.line + 1} {dotted}: {e.problem}"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError([f"{where}: not valid YAML: {getattr(e, 'problem', e)}"]) from None
    lines: Lines = {}
    seen = [0]

    def walk(n: yaml.Node, at: tuple[Any, ...]) -> None:
        seen[0] += 1
        if seen[0] > MAX_NODES or len(at) > 50:  # aliases expanded: a bomb, or one in itself
            raise ConfigError([f"{path}:{n.start_mark.line + 1}: more than {MAX_NODES} values "
                               "or 50 levels once its aliases (*name) are expanded: an alias "
                               "that refers to itself, or nests too deep"])
        lines.setdefault(at, (str(path), n.start_mark.line + 1))
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                lines[(*at, k.value)] = (str(path), k.start_mark.line + 1)
                walk(v, (*at, k.value))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, (*at, i))

    if node is not None:
        walk(node, ())
    return data, lines


def _load_tree(path: Path, missing: dict[str, str] | None = None
               ) -> tuple[dict[str, Any], Lines]:
    """The YAML tree of ``path`` with its include files in place. An include file that does
    not exist raises, or, given ``missing``, is reported there (key: problem) and left out."""
    data, lines = compose_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: expected a mapping at the top level"])
    gone: dict[str, str] = {}
    for key in sorted(_INCLUDES & set(data)):
        ref = data.get(key)
        if isinstance(ref, str):
            sub_path = (path.parent / ref) if not Path(ref).is_absolute() else Path(ref)
            if not sub_path.is_file():
                f, line = lines.get((key,), (str(path), 1))
                what = "is a directory, not a file" if sub_path.is_dir() else "file not found"
                gone[key] = f"{f}:{line} {key}: {what}: {sub_path}"
                continue
            sub, sub_lines = compose_yaml(sub_path)
            data[key] = sub
            for k, v in sub_lines.items():
                lines[(key, *k)] = v
    if gone and missing is None:
        raise ConfigError(list(gone.values()))
    if missing is not None:
        missing.update(gone)
    return data, lines


def _explain(err: ErrorDetails) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    words = {
        "greater_than": "must be > {gt}",
        "greater_than_equal": "must be >= {ge}",
        "less_than": "must be < {lt}",
        "less_than_equal": "must be <= {le}",
        "extra_forbidden": "unknown key (misspelt?)",
        "missing": "required but missing",
        "literal_error": "must be one of {expected}",
    }
    msg = words.get(kind, err["msg"]).format(**ctx) if kind in words else err["msg"]
    if kind not in ("missing", "extra_forbidden"):
        msg += f", got {err.get('input')!r}"
    return msg


def where(lines: Lines, loc: tuple[Any, ...], default_file: str) -> str:
    """``file:line dotted.path`` of a key path (the nearest enclosing key the YAML has); a key
    set on the command line is named by what set it (``--ions``) instead of a file line."""
    spot = (default_file, 1)
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            spot = lines[loc[:n]]
            break
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    return f"{spot[0]} {dotted}" if spot[1] == 0 else f"{spot[0]}:{spot[1]} {dotted}"


def validation_problems(e: ValidationError, lines: Lines, default_file: str,
                        skip: set[tuple[Any, ...]] | frozenset = frozenset()) -> list[str]:
    """Turn a pydantic error into lines of ``file:line path: what was expected``; errors at or
    below a key path in ``skip`` (already reported otherwise) are left out."""
    out = []
    for err in e.errors():
        loc = tuple(err["loc"])
        found = (err.get("ctx") or {}).get("error")
        items = ([((*loc, *sub), msg) for sub, msg in found.problems]
                 if isinstance(found, Problems) else [(loc, _explain(err))])
        for at, msg in items:
            if any(at[:len(k)] == k for k in skip):
                continue
            out.append(f"{where(lines, at, default_file)}: {msg}")
    return out


def load_yaml_model(path: str | Path, model: type[M]) -> M:
    """Load ``path`` as ``model`` (e.g. an InstrumentConfig file), errors with file:line."""
    path = Path(path)
    data, lines = _load_tree(path)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_problems(e, lines, str(path))) from None

"""YAML loading with line numbers: every key path remembers the file and line it came from, so
a validation error reads ``configs/runs/x.yaml:12 run.laser_pj: must be > 0, got -5``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from apt_daq.config.errors import ConfigError, Problems
from apt_daq.config.suggest import did_you_mean

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
#: the deepest a config may nest (a shipped one: 5 levels): PyYAML composes recursively, and a
#: file of 100000 '[' ran out of Python's stack in a 3000-line traceback
MAX_DEPTH = 50
#: the largest config file, bytes (a shipped one is a few KB): PyYAML reads ~0.5 MB/s, so a
#: 50 MB comment took minutes; a larger file is refused before it is parsed
MAX_CONFIG_BYTES = 1 << 20


class _TooDeep(yaml.YAMLError):
    def __init__(self, mark: yaml.Mark) -> None:
        self.problem_mark = mark


class _HugeInt(yaml.YAMLError):
    def __init__(self, node: yaml.Node) -> None:
        self.problem_mark, self.digits = node.start_mark, len(str(node.value))


class _BoundedLoader(UniqueKeyLoader):
    """:class:`UniqueKeyLoader`, refusing a file that nests deeper than :data:`MAX_DEPTH` (as
    it composes it, before Python's stack runs out) and an integer longer than Python reads
    (``sys.get_int_max_str_digits()``, 4300 digits) with the line it is on."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise _HugeInt(node) from None


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def read_config_text(path: Path) -> str:
    """A config file's text, read by apt-daq itself: at most :data:`MAX_CONFIG_BYTES` (a
    larger file, or an endless one such as /dev/zero, is refused before it is parsed), UTF-8
    (a leading BOM dropped). Each refusal is one ConfigError line naming the file; OSError
    (missing, a directory, unreadable) is the caller's to word."""
    with open(path, "rb") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB, the most a config "
                           "file may be (a shipped one is a few KB): not a config file?"])
    return decode_utf8(raw, path)


def decode_utf8(raw: bytes, path: str | Path) -> str:
    """``raw`` as UTF-8 text (a leading BOM dropped), or one ConfigError line naming the first
    byte that is not UTF-8 and its offset."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        hint = " (UTF-16? save it as UTF-8)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ConfigError([f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                           f"{e.start}){hint}"]) from None


def _yaml_problem(path: Path, text: str, e: yaml.YAMLError) -> str:
    """One line (file:line: what) for a YAML error PyYAML words over several lines."""
    if isinstance(e, DuplicateKeyError):
        dotted = ".".join(str(p) for p in e.at)
        return f"{path}:{e.problem_mark.line + 1} {dotted}: {e.problem}"
    if isinstance(e, _TooDeep):
        return (f"{path}:{e.problem_mark.line + 1}: nests deeper than {MAX_DEPTH} levels (a "
                "config is a few levels deep)")
    if isinstance(e, _HugeInt):
        return (f"{path}:{e.problem_mark.line + 1}: an integer of {e.digits} digits, more than "
                f"the {sys.get_int_max_str_digits()} Python reads (a config value has at most "
                "20)")
    if isinstance(e, yaml.reader.ReaderError):
        line = text.count("\n", 0, max(e.position, 0)) + 1
        char = ord(e.character) if isinstance(e.character, str) else int(e.character)
        return f"{path}:{line}: not valid YAML: character #x{char:04x}: {e.reason} (not text?)"
    mark = getattr(e, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark else str(path)
    what = " ".join(str(getattr(e, "problem", None) or e).split())
    return f"{where}: not valid YAML: {what}"


def compose_yaml(path: Path) -> tuple[Any, Lines]:
    """Load YAML and remember, for every key path, the file and line it came from."""
    try:
        text = read_config_text(path)
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    loader = None
    try:
        loader = _BoundedLoader(text)  # checks the characters
        node = loader.get_single_node()  # composed (depth-checked), not yet constructed
        lines = _node_lines(path, node) if node is not None else {}
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        raise ConfigError([_yaml_problem(path, text, e)]) from None
    except RecursionError:  # the composer's limit above is the first line of defence
        raise ConfigError([f"{path}: nests too deep (a config is a few levels deep)"]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, lines


def _node_lines(path: Path, node: yaml.Node) -> Lines:
    """For every key path of a composed document, the file and line it came from; refuses a
    document whose aliases expand to more than :data:`MAX_NODES` values or 50 levels."""
    lines: Lines = {}
    seen = [0]

    def walk(n: yaml.Node, at: tuple[Any, ...]) -> None:
        seen[0] += 1
        if seen[0] > MAX_NODES or len(at) > MAX_DEPTH:  # aliases expanded: a bomb, or a loop
            raise ConfigError([f"{path}:{n.start_mark.line + 1}: more than {MAX_NODES} values "
                               f"or {MAX_DEPTH} levels once its aliases (*name) are expanded: "
                               "an alias that refers to itself, or nests too deep"])
        lines.setdefault(at, (str(path), n.start_mark.line + 1))
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:  # a key that is a list or a mapping: refused when built
                key = k.value if isinstance(k, yaml.ScalarNode) else f"<{k.id}>"
                lines[(*at, key)] = (str(path), k.start_mark.line + 1)
                walk(v, (*at, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, (*at, i))

    walk(node, ())
    return lines


#: the kinds of apt-daq YAML file, as ``config check``, a wrong ``run`` name and a wrong
#: include name them
KIND_WORDS = {"run": "a run file", "instrument": "an instrument file",
              "specimen": "a specimen file", "campaign": "a campaign (sweep) file"}
_INCLUDE_WORDS = {**KIND_WORDS, "drivers": "a drivers file", "analysis": "an analysis file"}
_MODEL_KIND = {"RunFile": "run", "SpecimenConfig": "specimen", "InstrumentConfig": "instrument"}


def known_kind(data: Any) -> str | None:
    """Which kind of apt-daq YAML a loaded file is, from keys only that kind has; None when
    its keys tell nothing (:func:`file_kind` then takes it for a run file)."""
    if not isinstance(data, dict):
        return None
    if "run" in data:
        return "run"
    if "base" in data and ("axes" in data or "ions" in data):
        return "campaign"
    if "phases" in data or "matrix" in data:
        return "specimen"
    if "flight_path_mm" in data or "model" in data or "detector_diameter_mm" in data:
        return "instrument"
    return None


def file_kind(data: Any) -> str:
    """Which kind of apt-daq YAML a loaded file is, from its keys (a run file if they tell
    nothing)."""
    return known_kind(data) or "run"


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
                what = ("is a directory, not a file" if sub_path.is_dir() else
                        "not a regular file" if sub_path.exists() else "file not found")
                gone[key] = f"{f}:{line} {key}: {what}: {sub_path}"
                continue
            sub, sub_lines = compose_yaml(sub_path)
            kind = known_kind(sub)
            if kind is not None and kind != key:  # one line, not the other kind's N keys
                f, line = lines.get((key,), (str(path), 1))
                gone[key] = (f"{f}:{line} {key}: {sub_path} is {_INCLUDE_WORDS[kind]}, not "
                             f"{_INCLUDE_WORDS[key]}")
                continue
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
        "finite_number": "must be a finite number",
        "too_short": "must have at least {min_length} item(s)",
        "int_parsing_size": "an integer far too large for this key",
    }
    msg = words.get(kind, err["msg"]).format(**ctx) if kind in words else err["msg"]
    if kind not in ("missing", "extra_forbidden"):
        got = repr(err.get("input"))
        if len(got) > 80:  # a 100000-character name is not echoed whole
            got = f"{got[:60]}... ({len(got)} characters)"
        msg += f", got {got}"
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
                        skip: set[tuple[Any, ...]] | frozenset = frozenset(),
                        model: type[BaseModel] | None = None) -> list[str]:
    """Turn a pydantic error into lines of ``file:line path: what was expected``; errors at or
    below a key path in ``skip`` (already reported otherwise) are left out. With the
    ``model`` validated, an unknown key names the known one it is closest to."""
    out = []
    for err in e.errors():
        loc = tuple(err["loc"])
        found = (err.get("ctx") or {}).get("error")
        hint = did_you_mean(model, loc) if err["type"] == "extra_forbidden" else ""
        items = ([((*loc, *sub), msg) for sub, msg in found.problems]
                 if isinstance(found, Problems) else [(loc, f"unknown key{hint}" if hint
                                                       else _explain(err))])
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
        kind, want = known_kind(data), _MODEL_KIND.get(model.__name__)
        if kind is not None and want is not None and kind != want:  # the wrong kind of file
            raise ConfigError([f"{path}: is {KIND_WORDS[kind]}, not {KIND_WORDS[want]}"]
                              ) from None
        raise ConfigError(validation_problems(e, lines, str(path), model=model)) from None

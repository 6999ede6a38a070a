"""The errors of loading a config: :class:`ConfigError` (what the user reads, one line per
problem) and :class:`Problems` (what a model validator found, each at its own key path)."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A config that does not validate. ``str()`` gives one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class Problems(ValueError):
    """What a model validator found, each at a key path below the model it validates, e.g.
    ``[(("run", "laser_pj"), "5000 pJ is above ...")]``: :func:`validation_problems` names
    each one's own file:line (a plain ValueError would be blamed on the model's first line)."""

    def __init__(self, problems: list[tuple[tuple[Any, ...], str]]):
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))


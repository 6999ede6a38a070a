"""``apt-daq reproduce --seeds A-B``: the seed list it runs, and its refusal of nonsense."""

from __future__ import annotations

import pytest

from apt_daq.commands.reproduce import parse_seeds
from apt_daq.errors import UserError


def test_parse_seeds() -> None:
    assert parse_seeds("0-9") == list(range(10))
    assert parse_seeds("3") == [3]
    assert parse_seeds("0,2,5-6") == [0, 2, 5, 6]
    for bad in ("9-0", "a-b", "-1", "1-", ""):
        with pytest.raises(UserError):
            parse_seeds(bad)

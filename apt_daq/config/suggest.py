"""The key a misspelt one was probably meant to be: ``run.base_temprature_k: unknown key (did
you mean 'base_temperature_k'?)``, from the keys the model takes at that place."""

from __future__ import annotations

import difflib
import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel


def _models(tp: Any) -> list[type[BaseModel]]:
    """The models a field's type holds: itself, or inside Optional/Union/Annotated."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    if get_origin(tp) in (Union, types.UnionType) or hasattr(tp, "__metadata__"):
        return [m for a in get_args(tp) for m in _models(a)]
    return []


def _items(tp: Any) -> list[Any]:
    """The item types of a list/tuple/dict type (a list index or a dict key steps into them)."""
    out = []
    for t in [tp, *get_args(tp)] if get_origin(tp) in (Union, types.UnionType) else [tp]:
        origin = get_origin(t)
        if origin in (list, tuple, set, frozenset):
            out += list(get_args(t))
        elif origin is dict:
            out += list(get_args(t)[1:])
    return out


def keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys ``model`` takes at the mapping ``loc`` leads to (empty when not known)."""
    types_: list[Any] = [model]
    for part in loc:
        nxt: list[Any] = []
        for tp in types_:
            for m in _models(tp):
                if isinstance(part, str) and part in m.model_fields:
                    nxt.append(m.model_fields[part].annotation)
            nxt += _items(tp)
        types_ = nxt
    return sorted({k for tp in types_ for m in _models(tp) for k in m.model_fields})


def did_you_mean(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    """`` (did you mean 'x'?)`` for the unknown key at ``loc``, or ''."""
    if model is None or not loc or not isinstance(loc[-1], str):
        return ""
    near = difflib.get_close_matches(loc[-1], keys_at(model, loc[:-1]), n=1, cutoff=0.75)
    return f" (did you mean {near[0]!r}?)" if near else ""

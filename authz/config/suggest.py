"""Did-you-mean for unknown keys: the keys the schema accepts at the place of the error,
and the one closest to what was written."""

from __future__ import annotations

import difflib
import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel


def _members(annotation: Any) -> list[Any]:
    """The types an annotation may hold: a union's members, a list's or dict's items."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """Field annotations by the name written in the file (an alias where there is one)."""
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}


def keys_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the schema accepts in the mapping that holds ``loc``'s last key."""
    current: list[Any] = [root]
    for part in loc[:-1]:
        following: list[Any] = []
        for annotation in current:
            for member in _members(annotation):
                origin = get_origin(member)
                if isinstance(member, type) and issubclass(member, BaseModel):
                    if isinstance(part, str) and part in _fields(member):
                        following.append(_fields(member)[part])
                    elif isinstance(part, str) and part == member.__name__:
                        following.append(member)  # pydantic names a union's member
                elif origin is list and isinstance(part, int):
                    following.extend(get_args(member)[:1])
                elif origin is dict:
                    following.extend(get_args(member)[1:2])
        current = following
    names: dict[str, None] = {}
    for annotation in current:
        for model in _models(annotation):
            names.update(dict.fromkeys(_fields(model)))
    return list(names)


def did_you_mean(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """' (did you mean X?)' when a known key is close to the unknown one; otherwise the
    keys accepted there; '' when the place is not known."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    known = keys_at(root, loc)
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]}?)"
    return f" (accepted here: {', '.join(known)})" if known else ""

"""Did-you-mean: for an unknown key, the key the schema accepts at that place that is
closest to what was written (or what another policy language calls it); for a value that
is not one of a field's choices, the closest choice."""

from __future__ import annotations

import difflib
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

# Names other policy languages (OPA, CEL, JSON Schema, Envoy) give what authz spells
# otherwise; offered only where the key they stand for is accepted.
SYNONYMS = {
    "includes": "contains",
    "include": "contains",
    "has": "contains",
    "includes_any": "contains_any",
    "includes_all": "contains_all",
    "has_any": "contains_any",
    "has_all": "contains_all",
    "in": "one_of",
    "any_of": "one_of",
    "enum": "one_of",
    "eq": "equals",
    "is": "equals",
    "const": "equals",
    "ne": "not_equals",
    "neq": "not_equals",
    "regex": "matches",
    "regexp": "matches",
    "pattern": "matches",
    "present": "exists",
    "missing": "absent",
    "greater_than": "gt",
    "ge": "gte",
    "less_than": "lt",
    "le": "lte",
    "aud": "audiences",
    "iss": "issuer",
    "jwks_uri": "jwks",
}
# Operators that do not exist, and what does their work.
MISSING_OPERATORS = {
    "prefix": "there is no prefix operator: matches takes an RE2 pattern that must match "
    "the whole value, e.g. matches: 'admin:.*'",
    "suffix": "there is no suffix operator: matches takes an RE2 pattern that must match "
    "the whole value, e.g. matches: '.*@example\\.com'",
    "not_in": "there is no not_in operator: put one_of under not",
    "not_contains": "there is no not_contains operator: put contains under not",
}
MISSING_OPERATOR_SPELLINGS = {
    "starts_with": "prefix",
    "startswith": "prefix",
    "has_prefix": "prefix",
    "ends_with": "suffix",
    "endswith": "suffix",
    "has_suffix": "suffix",
    "none_of": "not_in",
    "not_one_of": "not_in",
}


def _members(annotation: Any) -> list[Any]:
    """The types an annotation may hold: a union's members, or itself."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _choices(annotation: Any) -> list[Any]:
    return [m for m in _members(annotation) if m is not type(None)]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [m for m in _members(annotation) if _is_model(m)]


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """Field annotations by the name written in the file (an alias where there is one)."""
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}


def _walk(root: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[list[Any], set[int]]:
    """The annotations of the value at ``loc``, and which parts of ``loc`` are the tags
    pydantic puts after a union of several types to say which member an error is about
    (a model's name, list[str], literal['memory'])."""
    current: list[Any] = [root]
    tags: set[int] = set()
    for index, part in enumerate(loc):
        unions = [a for a in current if len(_choices(a)) > 1]
        if unions and isinstance(part, str):
            tags.add(index)
            members = [m for a in unions for m in _choices(a)]
            chosen = [m for m in members if _is_model(m) and m.__name__ == part]
            current = chosen or [m for m in members if not _is_model(m)]
            continue
        following: list[Any] = []
        for annotation in current:
            for member in _members(annotation):
                origin = get_origin(member)
                if _is_model(member):
                    if isinstance(part, str) and part in _fields(member):
                        following.append(_fields(member)[part])
                elif origin is list and isinstance(part, int):
                    following.extend(get_args(member)[:1])
                elif origin is dict:
                    following.extend(get_args(member)[1:2])
        current = following
    return current, tags


def union_tags(root: type[BaseModel], loc: tuple[int | str, ...]) -> set[int]:
    return _walk(root, loc)[1]


def keys_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the schema accepts in the mapping that holds ``loc``'s last key."""
    names: dict[str, None] = {}
    for annotation in _walk(root, loc[:-1])[0]:
        for model in _models(annotation):
            names.update(dict.fromkeys(_fields(model)))
    return list(names)


def choices_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> list[Any]:
    """The values a Literal field at ``loc`` accepts."""
    choices: list[Any] = []
    for annotation in _walk(root, loc)[0]:
        for member in _members(annotation):
            if get_origin(member) is Literal:
                choices.extend(get_args(member))
    return choices


def meant_key(root: type[BaseModel], loc: tuple[int | str, ...]) -> str | None:
    """The known key an unknown one (``loc``'s last) was probably meant to be."""
    if not loc or not isinstance(loc[-1], str):
        return None
    known = keys_at(root, loc)
    synonym = SYNONYMS.get(loc[-1].lower())
    if synonym in known:
        return synonym
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """' (did you mean X?)' when a known key is close to the unknown one (or how to do
    without an operator that does not exist); otherwise the keys accepted there; '' when
    the place is not known."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    known = keys_at(root, loc)
    written = loc[-1].lower()
    condition = "matches" in known
    missing = MISSING_OPERATOR_SPELLINGS.get(written, written)
    if condition and missing in MISSING_OPERATORS:
        return f" ({MISSING_OPERATORS[missing]})"
    meant = meant_key(root, loc)
    if meant is not None:
        return f" (did you mean {meant}?)"
    close = difflib.get_close_matches(missing, list(MISSING_OPERATORS), n=1, cutoff=0.7)
    if condition and close:
        return f" ({MISSING_OPERATORS[close[0]]})"
    return f" (accepted here: {', '.join(known)})" if known else ""


def closest_choice(written: Any, choices: list[Any]) -> str:
    """' (did you mean X?)' for a value that is close to one of ``choices``, compared
    without regard to case, '-' or ' ' for '_'."""
    if not isinstance(written, str):
        return ""
    texts = {str(c).lower().replace("-", "_").replace(" ", "_"): c for c in choices}
    wanted = written.lower().replace("-", "_").replace(" ", "_")
    close = difflib.get_close_matches(wanted, list(texts), n=1, cutoff=0.6)
    return f" (did you mean {texts[close[0]]}?)" if close else ""

"""Schema errors as messages: the key's path (a rule named as well as numbered), what is
wrong, what was probably meant, and, when the file is known, where it was written.

Values are never echoed (a misplaced secret must not reach a log); only the schema's own
keys and choices are.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from authz.config.base import SEVERAL_PROBLEMS
from authz.config.source import SourceMap
from authz.config.suggest import (
    choices_at,
    closest_choice,
    did_you_mean,
    meant_key,
    union_tags,
)

# What a union member expected, when the value was not even of its type.
SHAPES = {
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
}

Loc = tuple[int | str, ...]


def problems(
    exc: ValidationError, root: type[BaseModel], data: Any, source: SourceMap | None
) -> list[str]:
    """One line per problem, in pydantic's order; "FILE:LINE:COL: " first with a source."""
    located: list[tuple[tuple[int, int], str]] = []
    for loc, message in _messages(root, exc.errors(include_url=False)):
        tags = union_tags(root, loc)
        shown = tuple(part for index, part in enumerate(loc) if index not in tags)
        where = _location(shown, data)
        line = f"{where}: {message}" if where else message
        position = source.position(loc, message) if source is not None else None
        if source is not None:
            line = f"{position or source.file}: {line}"
        located.append(((position.line, position.column) if position else (1 << 30, 0), line))
    # In the order of the file, as a compiler's; those without a place last.
    return [line for _, line in sorted(located, key=lambda item: item[0])]


def _messages(root: type[BaseModel], errors: list[ErrorDetails]) -> list[tuple[Loc, str]]:
    """(where, what) for each error. Errors about the members of a union are told as one:
    those of the members the value had the shape of, or else what each member expects."""
    order: list[Loc | ErrorDetails] = []
    unions: dict[Loc, list[ErrorDetails]] = {}
    for err in errors:
        tags = union_tags(root, tuple(err["loc"]))
        if not tags:
            order.append(err)
            continue
        base = tuple(err["loc"])[: min(tags)]
        if base not in unions:
            unions[base] = []
            order.append(base)
        unions[base].append(err)
    # "audience: unknown key (did you mean audiences?)" says all "audiences: Field
    # required" would.
    meant = {
        (*err["loc"][:-1], key)
        for err in errors
        if err["type"] == "extra_forbidden"
        and (key := meant_key(root, tuple(err["loc"]))) is not None
    }
    messages: list[tuple[Loc, str]] = []
    for item in order:
        if isinstance(item, dict) and item["type"] == "missing" and tuple(item["loc"]) in meant:
            continue
        if isinstance(item, dict) and item["type"] == SEVERAL_PROBLEMS:
            loc = tuple(item["loc"])
            messages.extend((loc, problem) for problem in item.get("ctx", {})["problems"])
            continue
        if isinstance(item, dict):
            messages.append((tuple(item["loc"]), _message(root, item)))
            continue
        base = item
        members: dict[Any, list[ErrorDetails]] = {}
        for err in unions[base]:
            members.setdefault(err["loc"][len(base)], []).append(err)
        fitting = [
            err
            for errs in members.values()
            if not all(_mismatch(err, len(base)) for err in errs)
            for err in errs
        ]
        if fitting:
            messages.extend((tuple(err["loc"]), _message(root, err)) for err in fitting)
        else:
            messages.append((base, _expected(root, base, unions[base])))
    return messages


def _mismatch(err: ErrorDetails, depth: int) -> bool:
    """Whether the error says only that the value is not of the union member's type."""
    return len(err["loc"]) == depth + 1 and (
        err["type"] in SHAPES or err["type"] == "literal_error"
    )


def _expected(root: type[BaseModel], base: Loc, errors: list[ErrorDetails]) -> str:
    wanted: dict[str, None] = {}
    choices: list[Any] = []
    for err in errors:
        if err["type"] == "literal_error":
            wanted[str((err.get("ctx") or {}).get("expected", ""))] = None
            choices.extend(choices_at(root, tuple(err["loc"])))
        else:
            wanted[SHAPES[err["type"]]] = None
    written = errors[0].get("input")
    return "Input should be " + " or ".join(wanted) + closest_choice(written, choices)


def _message(root: type[BaseModel], err: ErrorDetails) -> str:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        return "unknown key" + did_you_mean(root, loc)
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "literal_error":
        message += closest_choice(err.get("input"), choices_at(root, loc))
    return message


def _location(loc: Loc, data: Any) -> str:
    """A dotted path to the bad key; a rule is named as well as numbered."""
    where = ".".join(str(part) for part in loc)
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = data.get("rules") if isinstance(data, dict) else None
        if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
            name = rules[loc[1]].get("name")
            if isinstance(name, str):
                where = where.replace(f"rules.{loc[1]}", f"rules.{loc[1]} ({name})", 1)
    return where

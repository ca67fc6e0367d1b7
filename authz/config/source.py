"""Where each key of a config file was written, so that every message about the file can
start with FILE:LINE:COLUMN, as compilers' do.

The file is parsed once: PyYAML composes its nodes (which carry marks), the marks of every
key path are collected, and the same nodes are then constructed into the data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from authz.config.base import ConfigError

Loc = tuple[str | int, ...]
MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True, slots=True)
class Position:
    file: str
    line: int  # from 1
    column: int  # from 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class SourceMap:
    """``marks``: the (line, column) where each key path was written (a mapping's key; a
    list's item; () the document); ``duplicates``: keys written twice in one mapping, with
    where they were first written (YAML keeps the last one silently)."""

    file: str
    marks: Mapping[Loc, tuple[int, int]]
    children: Mapping[Loc, tuple[str | int, ...]]
    duplicates: tuple[tuple[Loc, Position], ...] = field(default=())

    def at(self, loc: Loc) -> Position:
        line, column = self.marks[loc]
        return Position(self.file, line, column)

    def position(self, loc: Sequence[str | int] = (), text: str = "") -> Position | None:
        """Where ``loc`` was written, or its nearest ancestor that was; then, deeper, the
        key path that ``text`` starts with ("rules.3 (admin).claims: ...", read relative to
        ``loc``). None when neither names anything in the file."""
        found: Loc = ()
        named = bool(loc)
        for part in loc:
            step = self._child(found, part)
            if step is not None:
                found = step  # a part not in the file (a union member's tag) is skipped
        found = self._follow(found, text)
        return self.at(found) if found in self.marks and (found or named) else None

    def locate(self, text: str, loc: Sequence[str | int] = ()) -> str:
        """``text`` prefixed with where it points to ("FILE:LINE:COL: "), or the file."""
        where = self.position(loc, text)
        return f"{where or self.file}: {text}"

    def locate_message(self, message: str) -> str:
        """A ConfigError's message with each of its problems located: the message itself,
        or each indented line under a heading such as "invalid configuration:"."""
        lines = message.split("\n")
        if len(lines) == 1:
            return self.locate(message)
        return "\n".join(
            f"  {self.locate(line[2:])}"
            if line.startswith("  ") and not line[2:3].isspace()
            else line
            for line in lines
        )

    def _child(self, loc: Loc, part: str | int) -> Loc | None:
        for candidate in (part, str(part)):
            if (*loc, candidate) in self.marks:
                return (*loc, candidate)
        return None

    def _follow(self, loc: Loc, text: str) -> Loc:
        """The deepest key path below ``loc`` that ``text`` spells out, dotted, each part
        ended by ".", ":", " (" or the end (an index also by " "); a list index may be
        followed by a rule's " (name)"."""
        rest = text
        while rest:
            step = self._key_at_start(loc, rest)
            if step is None:
                break
            loc, rest = (*loc, step[0]), step[1]
            if isinstance(loc[-1], int) and rest.startswith(" ("):
                closing = rest.find(")")
                if closing > 0:
                    rest = rest[closing + 1 :]
            if rest.startswith("."):
                rest = rest[1:]
            elif rest.startswith(": "):
                rest = rest[2:]  # "providers.multi: tenants: ..." goes on to tenants
            else:
                break
        return loc

    def _key_at_start(self, loc: Loc, text: str) -> tuple[str | int, str] | None:
        """The child of ``loc`` that ``text`` starts with (the longest, for names holding
        dots), and the text after it."""
        best: tuple[str | int, str] | None = None
        for child in self.children.get(loc, ()):
            name = str(child)
            after = text[len(name) :]
            ended = not after or after[0] in ".:" or after[:2] == " ("
            ended = ended or (isinstance(child, int) and after[0] == " ")
            if text.startswith(name) and ended and (best is None or len(name) > len(str(best[0]))):
                best = (child, after)
        return best


def parse_yaml(text: str, file: str) -> tuple[Any, SourceMap]:
    """The data of a YAML document and where each key in it was written; ConfigError
    naming FILE:LINE:COLUMN when it is not valid YAML."""
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters already
        node = loader.get_single_node()
        source = _source_map(node, file)
        # Constructing flattens merge keys in the nodes: after the marks are collected.
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_yaml_problem(exc, file)) from exc
    except yaml.reader.ReaderError as exc:
        line, column = _line_column(text, exc.position)
        raise ConfigError(
            f"{file}:{line}:{column}: not valid YAML: character #x{exc.character:04x} is "
            "not allowed (a control character)"
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{file}: not valid YAML: nested too deeply") from exc
    finally:
        if loader is not None:
            loader.dispose()
    return data, source


def _line_column(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def _yaml_problem(exc: yaml.MarkedYAMLError, file: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
    problem = exc.problem or exc.context or "cannot be parsed"
    message = f"{where}: not valid YAML: {problem}"
    if exc.context and exc.problem:
        opened = exc.context_mark
        same = (
            opened is not None
            and mark is not None
            and (opened.line, opened.column) == (mark.line, mark.column)
        )
        at = f" at {opened.line + 1}:{opened.column + 1}" if opened and not same else ""
        message += f" ({exc.context}{at})"
    return message


def _source_map(root: yaml.Node | None, file: str) -> SourceMap:
    marks: dict[Loc, tuple[int, int]] = {}
    children: dict[Loc, list[str | int]] = {}
    duplicates: list[tuple[Loc, Position]] = []
    seen: set[int] = set()  # an alias is walked once: a "billion laughs" file stays small

    def walk(node: yaml.Node, loc: Loc) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        for key, mark, value in _entries(node, loc, duplicates, file):
            if (*loc, key) not in marks:
                children.setdefault(loc, []).append(key)
            marks[(*loc, key)] = (mark.line + 1, mark.column + 1)
            walk(value, (*loc, key))

    if root is not None:
        marks[()] = (root.start_mark.line + 1, root.start_mark.column + 1)
        walk(root, ())
    return SourceMap(
        file,
        marks,
        {loc: tuple(keys) for loc, keys in children.items()},
        tuple(duplicates),
    )


def _entries(
    node: yaml.Node, loc: Loc, duplicates: list[tuple[Loc, Position]], file: str
) -> Iterator[tuple[str | int, yaml.Mark, yaml.Node]]:
    """(key, where it was written, value node) of a mapping or a list; a mapping's own keys
    win over merged ones (<<), as in the data."""
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield index, item.start_mark, item
        return
    if not isinstance(node, yaml.MappingNode):
        return
    own: dict[str, tuple[yaml.Mark, yaml.Node]] = {}
    merged: list[yaml.Node] = []
    for key, value in node.value:
        if key.tag == MERGE_TAG:
            merged.extend(value.value if isinstance(value, yaml.SequenceNode) else [value])
        elif isinstance(key, yaml.ScalarNode):
            name = str(key.value)
            if name in own:
                first = own[name][0]
                duplicates.append(((*loc, name), Position(file, first.line + 1, first.column + 1)))
            own[name] = (key.start_mark, value)  # the last one is the one kept
    for name, (mark, value) in own.items():
        yield name, mark, value
    for source in merged:
        if isinstance(source, yaml.MappingNode):
            for key, value in source.value:
                scalar = isinstance(key, yaml.ScalarNode) and key.tag != MERGE_TAG
                if scalar and str(key.value) not in own:
                    yield str(key.value), key.start_mark, value

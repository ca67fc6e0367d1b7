"""Where keys were written: the marks of a YAML file, and key paths (as messages write
them) resolved to lines and columns."""

from __future__ import annotations

import pytest

from authz.config import ConfigError
from authz.config.source import Position, parse_yaml

TEXT = """\
providers:
  corp.eu:
    issuer: https://idp.test
    jwks:
      file: keys.json
rules:
  - name: admin
    claims:
      - {claim: roles, contains: admin}
  - requires: {provider: corp.eu}
"""


def test_the_data_is_what_safe_load_reads() -> None:
    import yaml

    data, _ = parse_yaml(TEXT, "authz.yaml")
    assert data == yaml.safe_load(TEXT)


@pytest.mark.parametrize(
    ("loc", "text", "line", "column"),
    [
        (("providers",), "", 1, 1),
        (("providers", "corp.eu", "issuer"), "", 3, 5),
        (("rules", 0), "", 7, 5),  # a list item: where it starts
        (("rules", 0, "claims", 0, "contains"), "", 9, 24),
        # a key the file does not have: its nearest ancestor that it has
        (("providers", "corp.eu", "audiences"), "", 2, 3),
        # a union member's tag pydantic puts in the path is skipped
        (("providers", "corp.eu", "jwks", "FileJwks", "file"), "", 5, 7),
        # a path written in the message, relative to loc; a rule's "(name)" is read over
        ((), "rules.0 (admin).claims: provider 'x' is not required", 8, 5),
        ((), "providers.corp.eu.jwks.file: cannot read keys.json", 5, 7),
        (("providers", "corp.eu"), "jwks: exactly one of ...", 4, 5),
        ((), "rules.1 can never match", 10, 5),
    ],
)
def test_positions(loc: tuple[str | int, ...], text: str, line: int, column: int) -> None:
    _, source = parse_yaml(TEXT, "authz.yaml")
    assert source.position(loc, text) == Position("authz.yaml", line, column)


def test_a_message_naming_nothing_in_the_file_has_no_position() -> None:
    _, source = parse_yaml(TEXT, "authz.yaml")
    assert source.position((), "providers 'a' and 'b' both read the header") is None
    assert source.position((), "rules are checked in order") is None
    assert source.locate("both read the header") == "authz.yaml: both read the header"


def test_a_multi_line_message_is_located_line_by_line() -> None:
    _, source = parse_yaml(TEXT, "authz.yaml")
    message = "invalid configuration:\n  rules.1.requires: x\n  providers.corp.eu: y"
    assert source.locate_message(message) == (
        "invalid configuration:\n"
        "  authz.yaml:10:5: rules.1.requires: x\n"
        "  authz.yaml:2:3: providers.corp.eu: y"
    )


def test_merged_keys_point_where_they_were_written() -> None:
    text = "base: &base\n  issuer: x\n  audiences: [a]\nproviders:\n  corp:\n    <<: *base\n"
    data, source = parse_yaml(text, "f.yaml")
    assert data["providers"]["corp"] == {"issuer": "x", "audiences": ["a"]}
    assert source.position(("providers", "corp", "audiences")) == Position("f.yaml", 3, 3)


def test_keys_written_twice_are_recorded_and_the_last_one_counts() -> None:
    data, source = parse_yaml("a: 1\nb:\n  c: 1\nb:\n  d: 2\n", "f.yaml")
    assert data == {"a": 1, "b": {"d": 2}}
    assert source.duplicates == ((("b",), Position("f.yaml", 2, 1)),)
    assert source.position(("b",)) == Position("f.yaml", 4, 1)
    assert source.position(("b", "c")) == Position("f.yaml", 4, 1)  # not the lost one's


def test_many_aliases_of_one_node_stay_small() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)
    ]
    _, source = parse_yaml("\n".join(lines) + "\n", "f.yaml")
    assert len(source.marks) < 200


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [\n", "f.yaml:2:1: not valid YAML: expected the node content, but found"),
        (
            "rules:\n  - a: b\n   c: d\n",
            "f.yaml:3:4: not valid YAML: expected <block end>, but found '<block mapping "
            "start>' (while parsing a block collection at 2:3)",
        ),
        ("a: *nope\n", "f.yaml:1:4: not valid YAML: found undefined alias 'nope'"),
        ("a: 1\n\tb: 2\n", "f.yaml:2:1: not valid YAML: found character '\\t'"),
    ],
)
def test_yaml_errors_name_the_file_line_and_column(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "f.yaml")
    assert str(caught.value).startswith(message)
    assert "<unicode string>" not in str(caught.value)


def test_a_control_character_is_a_located_error_not_a_traceback() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml("rules:\n  - name: r\x0c\n", "authz.yaml")
    assert str(caught.value) == (
        "authz.yaml:2:12: not valid YAML: character #x000c is not allowed (a control character)"
    )


def test_nesting_beyond_what_can_be_read_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"authz\.yaml: not valid YAML: nested too deeply"):
        parse_yaml("rules: " + "[" * 5000 + "]" * 5000, "authz.yaml")

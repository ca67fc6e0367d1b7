from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.core.errors import InvalidPath
from authz.core.paths import check_path, check_rule_path


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b?x=/../admin", "/a/b"),  # the query string is not part of the path
        ("/a/b/", "/a/b/"),  # a trailing slash is kept
        ("/Admin", "/Admin"),  # case kept
        ("/a%3ab", "/a%3Ab"),  # hex digits upper-cased, nothing decoded
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%20b", "/a%20b"),
        ("/a%3Bb", None),  # an encoded ; is still a ; to a decoding upstream
        ("/a%25b", "/a%25b"),  # a literal %
        ("/a%2520", "/a%2520"),  # decodes twice to a space: harmless
        ("/...", "/..."),  # not a dot-segment
        ("/.well-known/x", "/.well-known/x"),
        ("/a..b/c", "/a..b/c"),
        ("/a/.b", "/a/.b"),
        ("/{x}|^", "/{x}|^"),
    ],
)
def test_accepted_paths_are_judged_as_sent(target: str, path: str | None) -> None:
    if path is None:
        with pytest.raises(InvalidPath):
            check_path(target)
    else:
        assert check_path(target) == path


REFUSED = [
    # dot-segments, raw, encoded, and with ;params
    "/public/../admin",
    "/a/./b",
    "/a/..",
    "/a/.",
    "/..",
    "/secret/%2e%2e;/public",
    "/secret/.%2e;/healthz",
    "/admin/%2e%2e/public",
    "/admin/%2E%2E/public",
    "/admin/..;/public",
    "/admin/.;/public",
    "/secret/x/../../public",
    "/admin%23/../public",
    "/users/bob/%2e%2e;/alice",
    # encoded and raw separators
    "/admin%2Fusers",
    "/admin%2fusers",
    "/a%5Cb",
    "/a%5cb",
    "/a\\b",
    "/a%3Fb",
    "/a%23b",
    "/a#frag",
    # control characters, raw and encoded; spaces and raw non-ASCII
    "/a%00",
    "/a\x00b",
    "/a\tb",
    "/x%0a",
    "/admin/..%0a/public",
    "/a%0D",
    "/a%1f",
    "/a%7F",
    "/a b",
    "/café",
    # encoded unreserved characters
    "/%61dmin",
    "/%70ublic/x",
    "/a%7eb",
    "/a%2D",
    "/a%5F",
    "/a%30",
    # double encoding of anything above
    "/a%252e%252e/b",
    "/a%252Fb",
    "/a%2561",
    "/a%25252e",
    "/a%250a",
    # malformed or non-UTF-8 escapes
    "/a%",
    "/a%2",
    "/a%zz",
    "/a%c0%ae",  # overlong "."
    "/a%ff",
    # ; parameters and empty segments
    "/admin;x=1",
    "/a;b/c",
    "//admin",
    "/a//b",
    # not a path at all
    "admin",
    "",
    "*",
    "http://host/a",
]


@pytest.mark.parametrize("target", REFUSED)
def test_ambiguous_paths_are_refused(target: str) -> None:
    with pytest.raises(InvalidPath):
        check_path(target)


@pytest.mark.parametrize(
    ("target", "path"),
    [("/admin;x=1", "/admin;x=1"), ("/a%3bb", "/a%3Bb"), ("/a;b/c;d/", "/a;b/c;d/")],
)
def test_semicolons_literal(target: str, path: str) -> None:
    assert check_path(target, semicolons_literal=True) == path


@pytest.mark.parametrize(
    "target", ["/admin/..;/public", "/a/.;x/b", "/a/%2e%2e;/b", "/a/..%3b/b", "/a/.%3Bx/b"]
)
def test_semicolons_literal_still_refuses_dot_segments(target: str) -> None:
    with pytest.raises(InvalidPath):
        check_path(target, semicolons_literal=True)


def test_refusals_say_why_without_the_path() -> None:
    with pytest.raises(InvalidPath) as caught:
        check_path("/secret-name/../x")
    assert caught.value.detail == "a dot-segment in the path"
    assert "secret-name" not in str(caught.value)


def test_rule_paths_must_be_matchable() -> None:
    assert check_rule_path("/a%3ab") == "/a%3Ab"
    with pytest.raises(ValueError, match="percent-encoded"):
        check_rule_path("/café")
    with pytest.raises(ValueError, match="semicolon"):
        check_rule_path("/a;b")
    assert check_rule_path("/a;b", semicolons_literal=True) == "/a;b"
    with pytest.raises(ValueError, match="rules match the path without it"):
        check_rule_path("/a/b?c=1")  # requests are matched with their query cut off


# --- property: no public verdict for a path another reader routes to a protected prefix ---

PROTECTED = ("/admin", "/secret")


def _raw_reader(target: str) -> str:
    """A router that matches the path as sent (Express, Envoy without normalization)."""
    return re.split(r"[?#]", target, maxsplit=1)[0]


def _resolving_reader(target: str, *, cut_params: bool, decode_first: bool) -> str:
    """A server that decodes, cuts ;params (Tomcat) and resolves dot-segments."""
    path = target
    if decode_first:
        path = unquote(path)
    path = re.split(r"[?#]", path, maxsplit=1)[0]
    if cut_params:
        path = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
    if not decode_first:
        path = unquote(path)
    path = path.replace("\\", "/")
    path = re.sub("/+", "/", path)
    resolved = posixpath.normpath(path) if path else "/"
    return resolved if resolved.startswith("/") else "/" + resolved


def _readings(target: str) -> list[str]:
    readings = [_raw_reader(target)]
    for cut_params in (False, True):
        for decode_first in (False, True):
            readings.append(
                _resolving_reader(target, cut_params=cut_params, decode_first=decode_first)
            )
    return readings


def _protected(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PROTECTED)


# The alphabet (/ . % 2 e E f F 5 c ; \ # ? and letters), drawn as single characters
# and as the words an attacker strings together, so that "../admin" is not left to chance.
PIECES = [
    *"/.%2eEfF5c;\\#?",
    *("..", "/..", "%2e", "%2E", ";", ";x=1", "%2f", "%5c", "%25", "%252e", "%3b", "%3f"),
    *("admin", "secret", "public", "x", "/admin", "/secret"),
]
segments = st.lists(st.sampled_from(PIECES), max_size=10).map("".join)


@settings(max_examples=3000, deadline=None)
@given(prefix=st.sampled_from(["/public/", "/", "/admin/", "/secret/x/"]), tail=segments)
def test_no_reader_routes_an_accepted_public_path_to_a_protected_prefix(
    prefix: str, tail: str
) -> None:
    target = prefix + tail
    try:
        path = check_path(target)
    except InvalidPath:
        return
    if _protected(path):
        return  # authz itself judges it protected
    for reading in _readings(target):
        assert not _protected(reading), (target, path, reading)

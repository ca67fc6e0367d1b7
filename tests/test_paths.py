from __future__ import annotations

import pytest

from authz.errors import InvalidPath
from authz.paths import normalize_path


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b?x=/../admin", "/a/b"),  # the query string is not part of the path
        ("/a#frag", "/a"),
        ("//admin", "/admin"),  # double slashes merged
        ("/a///b//", "/a/b/"),
        ("/a/./b", "/a/b"),  # dot segments
        ("/public/../admin", "/admin"),
        ("/public/%2e%2e/admin", "/admin"),  # encoded dots are dots
        ("/public/%2E%2E/admin", "/admin"),
        ("/../../etc", "/etc"),  # never above the root
        ("/a/..", "/"),
        ("/a/.", "/a/"),
        ("/a/b/", "/a/b/"),  # a trailing slash is kept
        ("/%61dmin", "/admin"),  # unreserved characters decoded
        ("/a%7eb%2D", "/a~b-"),
        ("/a%3ab", "/a%3Ab"),  # reserved escapes kept, hex upper-cased
        ("/Admin", "/Admin"),  # case kept
        ("/public/..;/admin/x", "/admin/x"),  # path parameters go before dot segments
        ("/public/%2e%2e;/admin/x", "/admin/x"),
        ("/admin;x=1", "/admin"),
        ("/a;b/c;d/", "/a/c/"),
        ("/a%3Bb", "/a%3Bb"),  # an encoded ; is data
    ],
)
def test_normalize(target: str, path: str) -> None:
    assert normalize_path(target) == path


@pytest.mark.parametrize(
    "target",
    ["/admin%2Fusers", "/admin%2fusers", "/a%5Cb", "/a\\b", "/a%00", "/a\x00b", "/a\tb", "admin"],
)
def test_refused(target: str) -> None:
    with pytest.raises(InvalidPath):
        normalize_path(target)

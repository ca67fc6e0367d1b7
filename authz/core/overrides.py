"""Method overrides: X-HTTP-Method-Override and its kin ask a framework to act as another
method than the request's, so a verdict on the request's own method may not hold."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from authz.core.model import RequestAttributes
from authz.core.tokens import name_key

METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
METHOD_OVERRIDE_PARAM = "_method"


def method_overrides(request: RequestAttributes) -> list[str]:
    """Other methods the request asks the upstream to act as (the headers above, or a
    ``_method`` query parameter in any spelling a framework may read), sorted."""
    query = request.query
    if not query and request.headers.keys().isdisjoint(METHOD_OVERRIDE_HEADERS):
        return []
    named: list[str] = []
    for header in METHOD_OVERRIDE_HEADERS:
        value = request.headers.get(header)
        if value is not None:
            named.extend(value.split(","))
    # Every spelling of _method holds "method", or an escape that may decode to it.
    if query and ("%" in query or "method" in query.lower()):
        for part in re.split("[&;]", query):  # some parsers also split on ";"
            name, _, value = part.partition("=")
            if name_key(name) == METHOD_OVERRIDE_PARAM:
                named.append(unquote_plus(value))
    method = request.method.upper()
    others = {m.strip().upper() for m in named} - {method, ""}
    return sorted(others)

"""An upstream that routes as common frameworks do, and says which handlers would run.

Behind a proxy, the request target the upstream receives decides which handler runs, and
frameworks read it differently: Express matches the raw path, Tomcat and Spring cut
``;params`` and resolve dot-segments, others decode first. This server reads each request
every one of those ways and answers with every handler any reader would run, so a test can
assert that no protected handler ran for a request authz allowed.

Run as ``python -m tests.framework_upstream --port N`` (the Stack's upstream interface).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import posixpath
import re
from urllib.parse import unquote

from aiohttp import web

# Handlers by route; "users:<id>" for /users/<id>[/...].
PUBLIC_HANDLERS = frozenset({"public", "healthz"})


def route(path: str) -> str:
    """The handler a path-prefix router picks for ``path``."""
    for name in ("admin", "secret", "public", "healthz"):
        if path == f"/{name}" or path.startswith(f"/{name}/"):
            return name
    found = re.match(r"/users/([^/]+)(/|$)", path)
    if found:
        return f"users:{found.group(1)}"
    return "default"


def _resolve(path: str) -> str:
    path = re.sub("/+", "/", path.replace("\\", "/"))
    resolved = posixpath.normpath(path) if path else "/"
    return resolved if resolved.startswith("/") else "/" + resolved


def readings(target: str) -> dict[str, str]:
    """How each kind of framework reads the path of ``target``."""
    raw = re.split(r"[?#]", target, maxsplit=1)[0]
    cut = "/".join(segment.split(";", 1)[0] for segment in raw.split("/"))
    decoded_first = re.split(r"[?#]", unquote(target), maxsplit=1)[0]
    return {
        "raw": raw,  # Express: the undecoded path
        "tomcat": _resolve(unquote(cut)),  # ;params cut, then decoded and resolved
        "decoding": _resolve(unquote(raw)),  # decoded, resolved, ; kept
        "decode-first": _resolve("/".join(s.split(";", 1)[0] for s in decoded_first.split("/"))),
    }


def handlers(target: str) -> list[str]:
    return sorted({route(path) for path in readings(target).values()})


async def answer(request: web.BaseRequest) -> web.Response:
    ran = handlers(request.raw_path)
    body = {
        "handlers": ran,
        "path": request.raw_path,
        "method": request.method,
        "headers": {k.lower(): v for k, v in request.headers.items()},
    }
    return web.Response(
        text=json.dumps(body),
        content_type="application/json",
        headers={"x-handlers": ",".join(ran)},
    )


async def serve(port: int) -> None:
    runner = web.ServerRunner(web.Server(answer), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))

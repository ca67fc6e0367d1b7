"""Command line: argument parsing for serve, check-config, version, and the developer
helpers keygen and token. What the commands do is authz/runtime/commands.py."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from authz import __version__
from authz.config import (
    ConfigError,
    Overrides,
    http_method,
    load_config,
    parse_workers,
    untokenable,
)
from authz.core.errors import AuthzError
from authz.core.jws import strict_json
from authz.keys.crypto import generate_rsa_private_key_pem, public_jwk, sign_token

WORKERS_ENV = "AUTHZ_WORKERS"


def cmd_serve(args: argparse.Namespace) -> int:
    # gRPC's C core writes its own lines straight to stderr (a port taken: a line of its
    # format among the JSON ones); authz logs each failure it sees itself. Set before
    # grpc is first imported, which reads it then; GRPC_VERBOSITY given wins.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from authz.runtime.commands import serve

    return serve(args.config, serve_overrides(args.workers, os.environ))


def serve_overrides(workers_flag: str | None, environ: Mapping[str, str]) -> Overrides:
    """``--workers``, else AUTHZ_WORKERS, else the config file's ``workers``."""
    if workers_flag is not None:
        return Overrides(workers=parse_workers(workers_flag, "--workers"))
    if WORKERS_ENV in environ:
        return Overrides(workers=parse_workers(environ[WORKERS_ENV], WORKERS_ENV))
    return Overrides()


def cmd_check_config(args: argparse.Namespace) -> int:
    from authz.runtime.commands import check_config

    config, warnings = check_config(args.config)
    for warning in warnings:
        where = f"{warning.where}: " if warning.where else ""
        print(f"{where}warning: {warning.message}", file=sys.stderr)
    if warnings and args.strict:
        count = f"{len(warnings)} warning{'s' if len(warnings) > 1 else ''}"
        print(f"authz: {args.config}: {count}, and --strict refuses warnings", file=sys.stderr)
        return 2
    print(f"{args.config}: ok ({len(config.providers)} providers, {len(config.rules)} rules)")
    return 0


def _pairs(items: list[str], separator: str, flag: str) -> dict[str, str]:
    pairs = {}
    for index, item in enumerate(items, 1):
        name, sep, value = item.partition(separator)
        if not sep or not name.strip():
            # Never echo the argument: it may hold a token.
            raise AuthzError(f"{flag} number {index} is not NAME{separator}VALUE")
        pairs[name.strip()] = value.strip() if separator == ":" else value
    return pairs


def _method(text: str) -> str:
    try:
        return http_method(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _json_object(text: str, flag: str) -> dict[str, Any]:
    try:
        if text.startswith("@"):
            text = Path(text[1:]).read_text(encoding="utf-8")
        value = strict_json(text)  # as serve reads a token's payload
    except OSError as exc:
        raise AuthzError(f"{flag}: cannot read {text[1:]}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise AuthzError(f"{flag}: the file is not UTF-8 text") from exc
    except RecursionError as exc:
        raise AuthzError(f"{flag}: nested too deeply") from exc
    except ValueError as exc:
        raise AuthzError(f"{flag}: not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise AuthzError(f"{flag}: expected a JSON object")
    try:
        problem = untokenable(value)
    except RecursionError as exc:
        raise AuthzError(f"{flag}: nested too deeply") from exc
    if problem is not None:
        # Minted anyway, the token would only be refused as malformed_token.
        raise AuthzError(f"{flag}: {problem}: no token can carry it")
    return value


def cmd_eval(args: argparse.Namespace) -> int:
    from authz.runtime.evaluate import Request, evaluate_once
    from authz.runtime.report import to_json, to_text

    config = load_config(args.config)
    request = Request(
        method=args.method,
        path=args.path,
        host=args.host,
        headers=_pairs(args.header, ":", "--header"),
        context=_pairs(args.context, "=", "--context"),
    )
    claims = _json_object(args.claims, "--claims") if args.claims is not None else None
    jwks = Path(args.jwks) if args.jwks else None
    try:
        evaluation = asyncio.run(
            evaluate_once(config, request, claims=claims, provider=args.provider, jwks_file=jwks)
        )
    except RecursionError as exc:
        raise AuthzError("the claims are nested too deeply") from exc
    if args.json:
        print(json.dumps(to_json(evaluation), indent=2))
    else:
        print(to_text(evaluation))
    return 0 if evaluation.decision.allowed else 1


def cmd_test(args: argparse.Namespace) -> int:
    from authz.runtime.policy_tests import junit, report, run_file

    async def run_all() -> list[Any]:
        results = []
        for name in args.files:
            results += await run_file(Path(name))
        return results

    try:
        results = asyncio.run(run_all())
    except RecursionError as exc:
        raise AuthzError("a case's claims are nested too deeply") from exc
    print(report(results, verbose=args.verbose))
    if args.junit:
        Path(args.junit).write_bytes(junit(results))
    return 0 if all(result.passed for result in results) else 1


def cmd_version(_: argparse.Namespace) -> int:
    print(f"authz {__version__}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pem = generate_rsa_private_key_pem()
    key_path = out / "key.pem"
    key_path.write_bytes(pem)
    os.chmod(key_path, 0o600)
    jwk = public_jwk(pem)
    (out / "jwks.json").write_text(json.dumps({"keys": [jwk]}, indent=2) + "\n")
    print(f"wrote {key_path} and {out / 'jwks.json'} (kid {jwk['kid']})")
    return 0


def _claim_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_token(args: argparse.Namespace) -> int:
    pem = Path(args.key).read_bytes()
    jwk = public_jwk(pem)
    now = int(time.time())
    claims: dict[str, Any] = {"iss": args.iss, "sub": args.sub, "iat": now, "exp": now + args.ttl}
    audiences = args.aud or ["api"]
    claims["aud"] = audiences if len(audiences) > 1 else audiences[0]
    for item in args.claim:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise AuthzError(f"--claim expects NAME=VALUE, got {item!r}")
        claims[name] = _claim_value(value)
    print(sign_token(claims, pem, algorithm=args.alg or jwk["alg"], kid=args.kid or jwk["kid"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authz", description="JWT ext_authz service for Envoy")
    parser.add_argument("--version", action="version", version=f"authz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="serve checks: Envoy's ext_authz over gRPC, the HTTP authorization endpoint "
        "when http_authz is set, and /healthz, /readyz and /metrics",
        description="Serve checks until SIGTERM: Envoy's ext_authz Check over gRPC (listen.grpc, "
        "with the gRPC health service), the HTTP authorization endpoint for Envoy's "
        "http_service, nginx auth_request, ingress-nginx, Traefik forwardAuth and Caddy "
        "forward_auth when http_authz is set (http_authz.listen), and /healthz, /readyz and "
        "/metrics on listen.http. The config file is reloaded on change and on SIGHUP.",
    )
    serve.add_argument("-c", "--config", required=True, help="YAML config file")
    serve.add_argument(
        "--workers",
        metavar="N",
        help=f"processes sharing the ports (1 to 64), instead of the file's workers; "
        f"default: ${WORKERS_ENV} when set",
    )
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser(
        "check-config",
        help="validate a config file as serve would build it, and exit: errors and warnings "
        "name FILE:LINE:COL",
    )
    check.add_argument("-c", "--config", required=True, help="YAML config file")
    check.add_argument(
        "--strict", action="store_true", help="exit 2 on warnings too, as on errors (for CI)"
    )
    check.set_defaults(func=cmd_check_config)

    judge = sub.add_parser(
        "eval",
        help="judge one request offline with the real authorizer and say why "
        "(exit 0: allowed, 1: denied)",
        description="Judge one request with the config's rules and print the rules "
        "skipped, the token checks, each condition's result and the decision. With "
        "--claims a token is minted for those claims with a stand-in key (the signature "
        "is not judged); otherwise the request's token is verified with the configured "
        "keys (one fetch of a remote JWKS) or --jwks. What a token and the request say of "
        "a DPoP or certificate binding is checked as serve checks it; the DPoP proof and "
        "the TLS client certificate belong to a live request and are named as skipped.",
    )
    judge.add_argument("-c", "--config", required=True, help="YAML config file")
    judge.add_argument("--method", default="GET", type=_method)
    judge.add_argument("--path", default="/", help="the request target, query included")
    judge.add_argument("--host", default="localhost")
    judge.add_argument(
        "--header", action="append", default=[], help="'NAME: VALUE'; repeat for several"
    )
    judge.add_argument(
        "--context", action="append", default=[], help="Envoy context_extensions KEY=VALUE"
    )
    # A --claims token is minted with a stand-in key: --jwks would verify nothing.
    token_given = judge.add_mutually_exclusive_group()
    token_given.add_argument(
        "--claims", help="JSON object (or @FILE): judge a token carrying these claims"
    )
    judge.add_argument("--provider", help="the provider the claims' token is for")
    token_given.add_argument("--jwks", help="a JWKS file to verify the request's token with")
    judge.add_argument("--json", action="store_true", help="one JSON object (stable schema)")
    judge.set_defaults(func=cmd_eval)

    test = sub.add_parser(
        "test",
        help="run policy tests (YAML cases beside the config; exit 1 when one fails)",
        description="Judge each case's request with the config's rules, a token minted "
        "for its claims with a stand-in key, and compare the answer with what the case "
        "expects. See docs/policy-testing.md.",
    )
    test.add_argument("files", nargs="+", help="policy test files")
    test.add_argument("--junit", help="also write the results as JUnit XML to this file")
    test.add_argument("-v", "--verbose", action="store_true", help="list passed cases too")
    test.set_defaults(func=cmd_test)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)

    keygen = sub.add_parser("keygen", help="create a development RSA key and its JWKS")
    keygen.add_argument("--out", required=True, help="folder for key.pem and jwks.json")
    keygen.set_defaults(func=cmd_keygen)

    token = sub.add_parser("token", help="mint a development token with a local key")
    token.add_argument("--key", required=True, help="PEM private key (from authz keygen)")
    token.add_argument("--sub", default="dev-user")
    token.add_argument("--iss", default="https://authz.dev.local")
    token.add_argument(
        "--aud", action="append", default=[], help="repeat for several (default: api)"
    )
    token.add_argument("--ttl", type=int, default=3600, help="seconds until exp")
    token.add_argument("--kid", help="default: the key's RFC 7638 thumbprint")
    token.add_argument("--alg", help="default: RS256 for RSA keys, ES* for EC keys")
    token.add_argument(
        "--claim", action="append", default=[], help="NAME=VALUE; VALUE is JSON if it parses"
    )
    token.set_defaults(func=cmd_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except (AuthzError, ConfigError) as exc:
        print(f"authz: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"authz: {exc}", file=sys.stderr)
        return 2
    return result

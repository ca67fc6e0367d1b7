"""Command line: argument parsing for serve, check-config, version, and the developer
helpers keygen and token. What the commands do is authz/runtime/commands.py."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from authz import __version__
from authz.config import ConfigError
from authz.core.errors import AuthzError
from authz.keys.crypto import generate_rsa_private_key_pem, public_jwk, sign_token
from authz.runtime.commands import check_config, serve


def cmd_serve(args: argparse.Namespace) -> int:
    return serve(args.config)


def cmd_check_config(args: argparse.Namespace) -> int:
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
    )
    serve.add_argument("-c", "--config", required=True, help="YAML config file")
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

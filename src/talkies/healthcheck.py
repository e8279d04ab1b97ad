"""`python -m talkies.healthcheck`: the container HEALTHCHECK. Exit 0 when the server is ready.

Asks `GET /readyz` (ready: preloads done, not draining) on 127.0.0.1:$TALKIES_PORT, falling back to the
liveness probe `/healthz` on a server without readiness. Sends the first `TALKIES_AUTH_TOKEN` token, if
any, so a probe behind auth works too. No third-party imports: it runs in a fraction of a second.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def probe(port: int, token: str = "", timeout: float = 4.0) -> tuple[bool, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for path in ("/readyz", "/healthz"):
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return True, f"{path}: {response.status}"
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and path == "/readyz":
                continue  # an older server: liveness is all there is
            return False, f"{path}: {exc.code}"
        except OSError as exc:
            return False, f"{path}: {exc}"
    return False, "no probe answered"


def main() -> int:
    port = int(os.environ.get("TALKIES_PORT", "8000"))
    token = os.environ.get("TALKIES_AUTH_TOKEN", "").split(",")[0].strip()
    ok, detail = probe(port, token)
    print(detail)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

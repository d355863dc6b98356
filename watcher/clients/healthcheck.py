"""``python -m watcher.clients.healthcheck``: the container's HEALTHCHECK, a GET of ``/health`` on this host.

It reads the settings as the watcher does, from ``WATCHER_*`` variables and
``WATCHER_CONFIG_FILE`` (a HEALTHCHECK cannot see the watcher's flags), for the port and, from
the web config file, whether to speak https. It checks liveness on the loopback interface:
the server certificate is not verified (its names are for the outside world) and no password
is needed (``/health`` is open). A server that requires client certificates turns this probe,
which has none, away: it ends the TLS session (an error or a closed connection). That answer
comes from the watcher's event loop, which does the handshakes, so it shows the watcher alive
as well as a 200 does; a hung watcher lets the probe time out, a dead one refuses the connection.

Exit codes, Docker's: 0 healthy, 1 not.
"""

from __future__ import annotations

import http.client
import ssl
import sys
import urllib.error
import urllib.request

from watcher import config
from watcher.config import webconfig

TIMEOUT_SECONDS = 2.0
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def url_and_context(settings: config.Settings) -> tuple[str, ssl.SSLContext | None, bool]:
    """The /health URL on this host, the client TLS context (None: http), and whether client certificates are required."""
    host, port = config.parse_listen_address(settings.web.listen_address)
    host = _LOOPBACK.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    web = webconfig.load(settings.web.config_file) if settings.web.config_file else webconfig.WebConfig()
    if web.tls is None:
        return f"http://{host}:{port}/health", None, False
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return f"https://{host}:{port}/health", context, web.client_cert_required


def probe(url: str, *, context: ssl.SSLContext | None, client_cert_required: bool) -> str:
    """What went wrong, or "" when healthy."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=context) as response:
            return "" if response.status == 200 else f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except (OSError, http.client.HTTPException) as exc:
        cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if client_cert_required and isinstance(cause, (ssl.SSLError, ConnectionResetError)):
            return ""  # turned away for want of a certificate: see the module's docstring
        return f"{url}: {cause}"


def main() -> int:
    try:
        url, context, client_cert_required = url_and_context(config.load())
    except config.ConfigError as exc:  # the web config file's WebConfigError too
        print(f"healthcheck: invalid configuration: {exc}", file=sys.stderr)
        return 1
    problem = probe(url, context=context, client_cert_required=client_cert_required)
    if problem:
        print(f"healthcheck: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``deployment-watcher notify``: deploy tooling reports a rollout to a running watcher.

Exit codes: 0 recorded (also when the watcher ignored the report as stale, with a warning);
1 the watcher could not be reached or failed; 2 bad usage, or a report the watcher refused
as invalid (400) or too large (413); 3 refused: missing or wrong token (401), or the API
is disabled on the watcher (403).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from watcher import __version__
from watcher.arguments import Parser
from watcher.config import API_TOKEN_ENV
from watcher.domain.labels import CHANGE_TYPES
from watcher.domain.model import Status
from watcher.wire import REPORTS_PATH as PATH

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
DEFAULT_URL = "http://localhost:9102"
PROG = "deployment-watcher notify"


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description=f"Report a rollout to a running deployment-watcher (POST {PATH}).",
        epilog=f"The token is read from ${API_TOKEN_ENV} unless --token-file is given. Exit codes: 0 recorded, "
        "1 watcher unreachable or failing, 2 usage or invalid report, 3 token refused or API disabled.",
    )
    p.add_argument("--deployment", required=True, help="the deployment's name")
    p.add_argument("--environment", help="its environment (default: the watcher's labels.default_environment)")
    p.add_argument("--version", required=True, help="the version deployed")
    p.add_argument("--commit", help="the commit deployed")
    p.add_argument("--status", required=True, choices=Status.texts(), help="where the rollout stands")
    p.add_argument("--started-at", metavar="TIME", help="when the deploy began: unix seconds or RFC 3339")
    p.add_argument(
        "--finished-at", metavar="TIME", help="when it finished (success or failed): unix seconds or RFC 3339"
    )
    p.add_argument(
        "--commit-time", metavar="TIME", help="when the commit was made (git log -1 --format=%%ct): for lead time"
    )
    p.add_argument("--change-type", choices=CHANGE_TYPES, help="hotfix: a fix of a change that failed (DORA rework)")
    p.add_argument("--url", default=DEFAULT_URL, help=f"the watcher's base URL (default {DEFAULT_URL})")
    p.add_argument("--token-file", metavar="PATH", help=f"file holding the API token (default: ${API_TOKEN_ENV})")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="request timeout (default 10)")
    return p


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    url = args.url.rstrip("/") + PATH
    if not args.timeout > 0:
        return _say(EXIT_USAGE, f"--timeout must be a positive number of seconds, got {args.timeout}")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return _say(EXIT_USAGE, f"--url must be an http:// or https:// URL, got {args.url!r}")
    try:
        token = (
            Path(args.token_file).read_text(encoding="utf-8").strip()
            if args.token_file
            else os.environ.get(API_TOKEN_ENV, "")
        )
    except (OSError, UnicodeDecodeError) as exc:
        return _say(EXIT_USAGE, f"cannot read --token-file {args.token_file}: {getattr(exc, 'strerror', None) or exc}")
    if not token:
        return _say(EXIT_USAGE, f"no token: set {API_TOKEN_ENV} or pass --token-file")
    report = {
        "deployment": args.deployment,
        "environment": args.environment,
        "version": args.version,
        "commit": args.commit,
        "status": args.status,
        "started_at": _time(args.started_at),
        "finished_at": _time(args.finished_at),
        "commit_time": _time(args.commit_time),
        "change_type": args.change_type,
    }
    request = urllib.request.Request(
        url,
        data=json.dumps({k: v for k, v in report.items() if v is not None}).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "User-Agent": f"deployment-watcher-notify/{__version__}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    except (OSError, http.client.HTTPException) as exc:  # URLError and timeouts are OSErrors
        reason = getattr(exc, "reason", None) or exc
        return _say(EXIT_FAILED, f"cannot reach the watcher at {url}: {reason}")
    return _answer(status, payload)


def _answer(status: int, payload: bytes) -> int:
    try:
        answer = json.loads(payload)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):  # not the watcher talking (a proxy, another server)
        answer = {"error": payload[:200].decode(errors="replace").strip()}
    error = answer.get("error", "")
    if status in (200, 201, 202) and "rollout" in answer:
        print(json.dumps(answer))
        rollout = answer["rollout"]
        what = (
            f"{answer.get('deployment')}/{answer.get('environment')} revision {rollout.get('revision')} "
            f"({rollout.get('version')}) {rollout.get('status')}"
        )
        if answer.get("outcome") == "stale":
            return _say(EXIT_OK, f"warning: the watcher ignored the report as stale ({answer.get('message')}); {what}")
        return _say(EXIT_OK, f"{answer.get('outcome')}: {what}")
    if status in (400, 413):
        return _say(EXIT_USAGE, f"the watcher refused the report ({status}): {error}")
    if status in (401, 403):
        return _say(EXIT_REFUSED, f"the watcher refused the request ({status}): {error}")
    if status == 404:
        return _say(EXIT_FAILED, "no CI/CD API at this URL (404): is --url a deployment-watcher?")
    return _say(EXIT_FAILED, f"the watcher answered {status}: {error}")


def _time(text: str | None) -> float | str | None:
    """Unix seconds go as a number; anything else as a string, for the watcher to judge."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def _say(code: int, message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code

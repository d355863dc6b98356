"""``deployment-watcher status``: the deployments a watcher tracks, as a table like ``docker ps``.

Exit codes: 0 printed; 2 bad usage; 4 the watcher cannot be reached or refuses the credentials.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from watcher.clients import reader
from watcher.display import age, size
from watcher.wire import REPORTS_PATH

EXIT_OK, EXIT_USAGE, EXIT_UNREACHABLE = 0, 2, 4
PROG = "deployment-watcher status"
HEADINGS = ("NAME", "ENVIRONMENT", "STATUS", "VERSION", "REVISION", "AGE", "HEALTH", "CPU", "MEMORY", "LAST VERSIONS")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Print the deployments a running watcher tracks, one line each.",
        epilog="Exit codes: 0 printed, 2 usage, 4 watcher unreachable or credentials refused.",
    )
    p.add_argument("--environment", help="only this environment")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="request timeout (default 10)")
    reader.add_flags(p)
    return p


def row(d: dict[str, Any], *, now: float) -> tuple[str, ...]:
    checks: dict[str, bool] = d["health_checks"]
    failing = [name for name, ok in checks.items() if not ok]
    health = "-" if not checks else "healthy" if not failing else "failing:" + ",".join(failing)
    if d.get("removed"):  # a watcher before 'removed' existed does not say
        health = "removed"
    status = d["status"] + (" (rollback)" if d["rollback"] else "")
    return (
        d["name"], d["environment"], status, d["version"], str(d["revision"]), age(now - d["started_at"]), health,
        f"{d['cpu_seconds']:.1f}s", size(d["memory_bytes"]), ",".join(d["last_versions"]),
    )  # fmt: skip


def table(deployments: list[dict[str, Any]], *, now: float) -> str:
    """Columns padded to their widest cell; control characters in label values shown escaped."""
    rows = [HEADINGS, *(tuple(_printable(cell) for cell in row(d, now=now)) for d in deployments)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADINGS))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if not args.timeout > 0:
        return _say(EXIT_USAGE, f"--timeout must be a positive number of seconds, got {args.timeout}")
    try:
        watcher = reader.Watcher.from_flags(args)
        status, answer = watcher.get(
            REPORTS_PATH,
            query={"environment": args.environment} if args.environment else None,
            timeout=args.timeout,
        )
    except reader.UsageError as exc:
        return _say(EXIT_USAGE, str(exc))
    except (reader.Unreachable, reader.Refused) as exc:
        return _say(EXIT_UNREACHABLE, str(exc))
    if status != 200 or not isinstance(answer, dict) or "deployments" not in answer:
        return _say(EXIT_UNREACHABLE, f"no read API at {args.url} (it answered {status}): is it a deployment-watcher?")
    print(table(answer["deployments"], now=time.time()))
    return EXIT_OK


def _printable(text: str) -> str:
    return text if text.isprintable() else text.encode("unicode_escape").decode()


def _say(code: int, message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code

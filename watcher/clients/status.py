"""``deployment-watcher status``: the deployments a watcher tracks, as a table like ``docker ps``.

Exit codes: 0 printed; 2 bad usage; 4 cannot tell: the watcher cannot be reached, refuses the
credentials, or gives an answer that cannot be read.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from watcher.clients import answers, reader
from watcher.display import age, size
from watcher.wire import REPORTS_PATH

EXIT_OK, EXIT_USAGE, EXIT_CANNOT_TELL = 0, 2, 4
PROG = "deployment-watcher status"
HEADINGS = ("NAME", "ENVIRONMENT", "STATUS", "VERSION", "REVISION", "AGE", "HEALTH", "CPU", "MEMORY", "LAST VERSIONS")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Print the deployments a running watcher tracks, one line each.",
        epilog=f"Exit codes: 0 printed, 2 usage, {reader.CANNOT_TELL}.",
    )
    p.add_argument("--environment", help="only this environment")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="request timeout (default 10)")
    reader.add_flags(p)
    return p


@dataclass(frozen=True, slots=True)
class Row:
    """What the table shows of a deployment's row in the list: its current rollout, as the gate reads it,
    and more."""

    rollout: answers.Summary
    started_at: float
    health_checks: dict[str, bool]
    cpu_seconds: float
    memory_bytes: float
    last_versions: list[str]
    removed: bool  # a watcher before 'removed' existed does not say: false


def parse(row: dict[str, Any], where: str) -> Row:
    """A row of the list, or ``reader.Unparseable``."""
    field, of = answers.field, answers.of
    checks = field(row, "health_checks", dict, where)
    versions = field(row, "last_versions", list, where)
    return Row(
        rollout=answers.summary(row, where),
        started_at=field(row, "started_at", float, where),
        health_checks={k: of(ok, bool, f"{where}: a health check") for k, ok in checks.items()},
        cpu_seconds=field(row, "cpu_seconds", float, where),
        memory_bytes=field(row, "memory_bytes", float, where),
        last_versions=[of(v, str, f"{where}: a version of last_versions") for v in versions],
        removed=field(row, "removed", bool, where) if "removed" in row else False,
    )


def row(d: Row, *, now: float) -> tuple[str, ...]:
    failing = [name for name, ok in d.health_checks.items() if not ok]
    health = "-" if not d.health_checks else "healthy" if not failing else "failing:" + ",".join(failing)
    if d.removed:
        health = "removed"
    r = d.rollout
    status = r.status + (" (rollback)" if r.rollback else "") + _analysis(r.analysis)
    return (
        r.name, r.environment, status, r.version, str(r.revision), age(now - d.started_at), health,
        f"{d.cpu_seconds:.1f}s", size(d.memory_bytes), ",".join(d.last_versions),
    )  # fmt: skip


def _analysis(analysis: answers.AnalysisSeen | None) -> str:
    """`` (analysing)`` while measuring, `` (analysis failed)`` once ended: the rollout's analysis, if any."""
    if analysis is None:
        return ""
    if analysis.status == "running":
        return " (analysing)" if analysis.measuring else " (analysis waits)"
    return f" (analysis {analysis.status})"


def table(deployments: list[Row], *, now: float) -> str:
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
        reply = watcher.get(
            REPORTS_PATH,
            query={"environment": args.environment} if args.environment else None,
            timeout=args.timeout,
        )
    except reader.UsageError as exc:
        return _say(EXIT_USAGE, str(exc))
    except (reader.Unreachable, reader.Refused) as exc:
        return _say(EXIT_CANNOT_TELL, str(exc))
    if reply.status != 200:
        return _say(EXIT_CANNOT_TELL, f"no read API at {args.url} (it answered {reply.status}): "
                                      "is it a deployment-watcher?")  # fmt: skip
    where = f"the answer to GET {REPORTS_PATH}"
    try:
        rows = [parse(d, f"{where}: deployments[{i}]") for i, d in enumerate(answers.rows(reply.json(), where))]
    except reader.Unparseable as exc:
        return _say(EXIT_CANNOT_TELL, f"cannot tell: {exc}")
    print(table(rows, now=time.time()))
    return EXIT_OK


def _printable(text: str) -> str:
    return text if text.isprintable() else text.encode("unicode_escape").decode()


def _say(code: int, message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code

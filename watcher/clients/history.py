"""``deployment-watcher rollout history NAME``: a deployment's rollouts, newest first, like ``kubectl rollout
history``: each revision (not each distinct version) with its version, verdict, duration, start and reason,
as the watcher keeps them (the last ``retention.revisions``, the current rollout first).

Exit codes: 0 printed; 1 no such deployment (the watcher does not show it); 2 bad usage (NAME in several
environments and no --environment); 4 cannot tell: the watcher cannot be reached, refuses the
credentials, or gives an answer that cannot be read.
"""

from __future__ import annotations

import argparse
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from watcher.clients import answers, columns, reader
from watcher.display import age
from watcher.domain import text
from watcher.wire import REPORTS_PATH

EXIT_OK, EXIT_UNKNOWN, EXIT_USAGE, EXIT_CANNOT_TELL = 0, 1, 2, 4
HEADINGS = ("REVISION", "VERSION", "STATUS", "DURATION", "STARTED", "REASON")
# On a terminal too narrow for the table: reasons give way first, then versions.
SHRINK = (HEADINGS.index("REASON"), HEADINGS.index("VERSION"))


def add_parser(commands: Any) -> None:
    """The ``history`` command among ``rollout``'s (``commands``: its subparsers)."""
    history = commands.add_parser(
        "history",
        help="list a deployment's rollouts (revisions), newest first",
        description="List a deployment's rollouts, newest first: revision, version, verdict, duration, start, "
        "reason (the last retention.revisions the watcher keeps). Exit codes: 0 printed; 1 no such deployment; "
        f"2 usage; {reader.CANNOT_TELL}.",
    )
    history.add_argument("name", metavar="NAME", help="the deployment's name (its deployment.name label)")
    history.add_argument("--environment", help="its environment (default: the one environment NAME is deployed in)")
    history.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                         help="request timeout (default 10)")  # fmt: skip
    reader.add_flags(history)


class Unknown(Exception):
    """The watcher does not show the deployment."""


class Ambiguous(Exception):
    """NAME is deployed in several environments and none was given."""


@dataclass(frozen=True, slots=True)
class Revision:
    """What the table shows of one revision of the detail's ``revisions``."""

    revision: int
    version: str
    previous_version: str
    status: str
    reason: str
    started_at: float
    duration_seconds: float | None
    rollback: bool
    analysis: str | None


def parse(value: Any, where: str) -> Revision:
    item = answers.an_object(value, where)
    field = answers.field
    duration, analysis = item.get("duration_seconds"), item.get("analysis")
    return Revision(
        revision=field(item, "revision", int, where), version=field(item, "version", str, where),
        previous_version=field(item, "previous_version", str, where), status=field(item, "status", str, where),
        reason=field(item, "reason", str, where), started_at=field(item, "started_at", float, where),
        duration_seconds=None if duration is None else answers.of(duration, float, f"{where}: 'duration_seconds'"),
        rollback=field(item, "rollback", bool, where),
        analysis=None if analysis is None else answers.of(analysis, str, f"{where}: 'analysis'"),
    )  # fmt: skip


def duration(seconds: float | None) -> str:
    """11s, 2m30s, 1h05m; "-" when unknown (in progress, found by a resync, superseded)."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.0f}s" if seconds >= 10 or seconds == whole else f"{seconds:.1f}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def row(r: Revision, *, now: float) -> tuple[str, ...]:
    status = r.status + (" (rollback)" if r.rollback else "") + (f" (analysis {r.analysis})" if r.analysis else "")
    return (str(r.revision), r.version, status, duration(r.duration_seconds), age(now - r.started_at) + " ago",
            r.reason)  # fmt: skip


def table(revisions: list[Revision], *, now: float, width: int | None = None) -> str:
    return columns.table(HEADINGS, [row(r, now=now) for r in revisions], width=width, shrink=SHRINK)


def read(
    watcher: reader.Watcher, name: str, environment: str | None, *, timeout: float
) -> tuple[str, str, list[Revision]]:
    """The deployment's name (as the watcher makes it), environment and revisions; raises Unknown, Ambiguous and ``reader``'s errors."""
    reply = watcher.get(REPORTS_PATH, timeout=timeout)
    if reply.status != 200:
        raise reader.Unreachable(f"no read API at {watcher.url} (it answered {reply.status}): "
                                 "is it a deployment-watcher?")  # fmt: skip
    # The name and environment as the watcher makes them of labels: cleaned, and cut to its limit.
    name = text.clean(name, limit=reply.max_value_length).value
    if environment is None:
        where = f"the answer to GET {REPORTS_PATH}"
        listed = [answers.summary(row, f"{where}: deployments[{i}]")
                  for i, row in enumerate(answers.rows(reply.json(), where))]  # fmt: skip
        found = sorted(d.environment for d in listed if d.name == name)
        if len(found) > 1:
            raise Ambiguous(f"{name} is deployed in several environments ({', '.join(found)}): pass --environment")
        if not found:
            raise Unknown(_unknown(name, None, ready=reply.ready))
        environment = found[0]
    environment = text.clean(environment, limit=reply.max_value_length).value
    path = REPORTS_PATH + "/" + "/".join(urllib.parse.quote(p, safe="") for p in (environment, name))
    reply = watcher.get(path, timeout=timeout)
    where = f"the answer to GET {path} ({reply.status})"
    if reply.status == 404:  # the watcher's own 404 (not a proxy's page): no such deployment
        answers.field(answers.an_object(reply.json(), where), "error", str, where)
        raise Unknown(_unknown(name, environment, ready=reply.ready))
    if reply.status != 200:
        raise reader.Unreachable(f"the watcher answered {reply.status} to {path}")
    items = answers.field(answers.an_object(reply.json(), where), "revisions", list, where)
    return name, environment, [parse(item, f"{where}: revisions[{i}]") for i, item in enumerate(items)]


def _unknown(name: str, environment: str | None, *, ready: bool) -> str:
    said = f"no deployment {name!r}" + (f" in environment {environment!r}" if environment else "")
    return said + ("" if ready else " (not synced with the Docker Engine yet: it may not be known yet)")


def run(args: argparse.Namespace, say: Any) -> int:
    """``rollout history``, its flags parsed; ``say(code, message)`` reports an error as ``rollout`` does."""
    if not args.timeout > 0:
        return int(say(EXIT_USAGE, f"--timeout must be a positive number of seconds, got {args.timeout}"))
    try:
        watcher = reader.Watcher.from_flags(args)
        name, environment, revisions = read(watcher, args.name, args.environment, timeout=args.timeout)
    except reader.UsageError as exc:
        return int(say(EXIT_USAGE, str(exc)))
    except Ambiguous as exc:
        return int(say(EXIT_USAGE, str(exc)))
    except Unknown as exc:
        return int(say(EXIT_UNKNOWN, str(exc)))
    except (reader.Unreachable, reader.Refused) as exc:
        return int(say(EXIT_CANNOT_TELL, str(exc)))
    except reader.Unparseable as exc:
        return int(say(EXIT_CANNOT_TELL, f"cannot tell: {exc}"))
    width = columns.terminal_width()
    title = columns.printable(f"{name}/{environment}")
    print(title if width is None else columns.cut(title, width))
    print(table(revisions, now=time.time(), width=width))
    return EXIT_OK

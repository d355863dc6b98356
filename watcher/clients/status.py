"""``deployment-watcher status``: the deployments a watcher tracks, as a table like ``docker ps``; with
``--watch``, redrawn on each event of the watcher's stream (``Watch``) until Ctrl-C or SIGTERM.
On a terminal the table is cut to its width (names cut with "…"); to a pipe it is printed whole.

Exit codes: 0 printed (or the watch ended by Ctrl-C or SIGTERM); 2 bad usage; 4 cannot tell: the
watcher cannot be reached, refuses the credentials, or gives an answer that cannot be read.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from watcher.arguments import Parser
from watcher.clients import answers, columns, reader
from watcher.display import age, size
from watcher.wire import REPORTS_PATH, RESYNC_EVENT

EXIT_OK, EXIT_USAGE, EXIT_CANNOT_TELL = 0, 2, 4
PROG = "deployment-watcher status"
RETRY_SECONDS = 1.0  # between attempts to reach a watcher that went away, while watching
FOREVER_SECONDS = 10.0 * 365 * 86400  # a watch reads its stream until stopped (silence is still caught)
CLEAR = "\x1b[H\x1b[2J"  # cursor home, screen cleared
HEADINGS = ("NAME", "ENVIRONMENT", "STATUS", "VERSION", "REVISION", "AGE", "HEALTH", "CPU", "MEMORY", "LAST VERSIONS")


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Print the deployments a running watcher tracks, one line each.",
        epilog=f"Exit codes: 0 printed, 2 usage, {reader.CANNOT_TELL}.",
    )
    p.add_argument("--environment", help="only this environment")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="request timeout (default 10)")
    p.add_argument("--watch", "-w", action="store_true",
                   help="redraw the table on each change the watcher's event stream tells of, until Ctrl-C; "
                        "reconnects when the stream is lost")  # fmt: skip
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


# On a terminal too narrow for the table: the last versions give way first, then names and environments.
SHRINK = (HEADINGS.index("LAST VERSIONS"), HEADINGS.index("NAME"), HEADINGS.index("ENVIRONMENT"))


def table(deployments: list[Row], *, now: float, width: int | None = None) -> str:
    """Columns padded to their widest cell, cut to ``width`` (a terminal's) when given; control characters in
    label values shown escaped."""
    return columns.table(HEADINGS, [row(d, now=now) for d in deployments], width=width, shrink=SHRINK)


def read(watcher: reader.Watcher, environment: str | None, *, timeout: float) -> tuple[list[Row], reader.Reply]:
    """The rows of the list (of ``environment``, if given), and the answer they came in; raises ``reader``'s
    errors, an answer that is not the list's as Unreachable or Unparseable."""
    reply = watcher.get(REPORTS_PATH, query={"environment": environment} if environment else None, timeout=timeout)
    if reply.status != 200:
        raise reader.Unreachable(f"no read API at {watcher.url} (it answered {reply.status}): "
                                 "is it a deployment-watcher?")  # fmt: skip
    where = f"the answer to GET {REPORTS_PATH}"
    return [parse(d, f"{where}: deployments[{i}]") for i, d in enumerate(answers.rows(reply.json(), where))], reply


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if not args.timeout > 0:
        return _say(EXIT_USAGE, f"--timeout must be a positive number of seconds, got {args.timeout}")
    try:
        watcher = reader.Watcher.from_flags(args)
        if args.watch:
            return until_stopped(Watch(watcher, args.environment, timeout=args.timeout))
        rows, _ = read(watcher, args.environment, timeout=args.timeout)
    except reader.UsageError as exc:
        return _say(EXIT_USAGE, str(exc))
    except (reader.Unreachable, reader.Refused) as exc:
        return _say(EXIT_CANNOT_TELL, str(exc))
    except reader.Unparseable as exc:
        return _say(EXIT_CANNOT_TELL, f"cannot tell: {exc}")
    print(table(rows, now=time.time(), width=columns.terminal_width()))
    return EXIT_OK


class Stopped(Exception):
    """SIGTERM (or a test) ends the watch."""


def until_stopped(watch: Watch) -> int:
    """The watch, until it fails or Ctrl-C or SIGTERM end it (exit 0: a watch ends so)."""

    def stop(signum: int, frame: object) -> None:
        raise Stopped

    previous = signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
    try:
        return watch()
    except (KeyboardInterrupt, Stopped):
        return EXIT_OK
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@dataclass
class Watch:
    """``status --watch``: the list read once, then kept from the event stream (each event carries its
    deployment's row as it is after it: no polling), the table redrawn at each change. A lost stream is
    reconnected to with the last event id seen (``Last-Event-ID``): the watcher sends what was missed, or
    ``resync`` when it no longer has it (or restarted), and the list is read again."""

    watcher: reader.Watcher
    environment: str | None
    timeout: float
    out: TextIO | None = None  # None: stdout (as it is when drawn)
    clock: Callable[[], float] = time.time
    retry_seconds: float = RETRY_SECONDS
    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    last_id: str = ""  # of the newest event applied (or of the list's state)
    lost: str = ""  # why the watcher is away, while it is
    shown: str = ""  # the table last drawn

    def __call__(self) -> int:
        reached, stale = False, True
        while True:
            try:
                if stale:
                    self._read()
                    reached, stale = True, False
                stale = self._follow()
            except reader.Refused as exc:
                return _say(EXIT_CANNOT_TELL, str(exc))
            except reader.Unparseable as exc:
                return _say(EXIT_CANNOT_TELL, f"cannot tell: {exc}")
            except (reader.Unreachable, TimeoutError) as exc:
                if not reached:
                    return _say(EXIT_CANNOT_TELL, str(exc))
                if not self.lost:
                    print(f"{PROG}: lost the watcher ({exc or 'silent'}); reconnecting", file=sys.stderr, flush=True)
                self.lost = str(exc)
                time.sleep(getattr(exc, "retry_after", 0.0) or self.retry_seconds)

    def _read(self) -> None:
        rows, reply = read(self.watcher, self.environment, timeout=self.timeout)
        self.rows = {(r.rollout.name, r.rollout.environment): r for r in rows}
        self.last_id = reply.event_id
        self._draw()

    def _follow(self) -> bool:
        """One connection to the stream, the table kept from its events; True: read the list again (resync)."""
        query = {"environment": self.environment} if self.environment else {}
        events = self.watcher.events(query=query, last_event_id=self.last_id, timeout=FOREVER_SECONDS)
        if self.lost:
            print(f"{PROG}: the watcher answers again", file=sys.stderr, flush=True)
            self.lost = ""
        try:
            for event in events:
                if event.name == RESYNC_EVENT:
                    return True
                self._apply(event)
                if event.id:
                    self.last_id = event.id
                self._draw()
        finally:
            events.close()
        raise reader.Unreachable("the event stream ended")

    def _apply(self, event: reader.Event) -> None:
        where = f"a {event.name!r} event on the stream"
        key = (answers.field(event.data, "name", str, where), answers.field(event.data, "environment", str, where))
        value = event.data.get("deployment")
        if value is None:
            self.rows.pop(key, None)  # gone
        else:
            self.rows[key] = parse(answers.an_object(value, f"{where}: 'deployment'"), f"{where}: 'deployment'")

    def _draw(self) -> None:
        out = sys.stdout if self.out is None else self.out
        width = columns.terminal_width(out)
        drawn = table([self.rows[key] for key in sorted(self.rows)], now=self.clock(), width=width)
        if drawn == self.shown:
            return
        self.shown = drawn
        if width is None:  # a pipe, a file: one table after another
            print(drawn + "\n", file=out, flush=True)
        else:  # a terminal: the screen cleared, the table at its top
            print(CLEAR + drawn, file=out, flush=True)


def _say(code: int, message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code

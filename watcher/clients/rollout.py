"""``deployment-watcher rollout status NAME``: wait for a rollout's verdict, a gate for CI (``rollout history
NAME``, a deployment's rollouts listed, is ``watcher.clients.history``'s).

It reads the deployment, then follows the watcher's event stream from that state on, printing
one line per change, until the rollout of the version asked for (default: the current
rollout) succeeds or fails, or ``--timeout`` seconds have passed since it started, whatever
the stream sends meanwhile. A watcher that goes away (a restart) or that has not synced with
the Docker Engine yet is waited for: a deployment it does not show then is one it does not
know yet, not one that is gone; after a restart the rollout is found again by its version
(a watcher that lost its state numbers revisions anew).

A rollout under a gate analysis (docs/analysis.md) stays in progress until its analysis ends: the
wait goes on through it, printing each measurement; a failed analysis fails the rollout (its
reason names the check and the figures), a passed or inconclusive one lets it succeed, and the
verdict's line says which.

Exit codes: 0 the rollout succeeded; 1 it failed, or it was rolled back or replaced (by the
orchestrator, or by a later deploy) before it succeeded, or the deployment is gone (no
longer tracked by the watcher that showed it); 2 bad usage; 3 no verdict within
``--timeout``; 4 cannot tell: the watcher cannot be reached, refuses the credentials, or
gives an answer that cannot be read.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from watcher.arguments import Parser
from watcher.clients import answers, history, reader
from watcher.clients.answers import Summary
from watcher.domain import text
from watcher.wire import REPORTS_PATH, RESYNC_EVENT, StreamEvent

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT, EXIT_CANNOT_TELL = 0, 1, 2, 3, 4
PROG = "deployment-watcher rollout"
RETRY_SECONDS = 1.0  # between attempts to reach a watcher that went away


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Commands about one deployment's rollouts.",
        epilog="Exit codes of 'status': 0 succeeded, 1 failed, rolled back or replaced, 2 usage, "
        f"3 timed out, {reader.CANNOT_TELL}. Of 'history': 0 printed, 1 no such deployment, 2 usage, 4 cannot tell.",
    )
    commands = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    status = commands.add_parser(
        "status",
        help="wait until the rollout finishes; exit 0 when it succeeded, 1 when not",
        description="Wait for the verdict on a rollout, printing each change (a gate analysis is waited through: "
        "its measurements printed, its failure the rollout's). Exit codes: 0 succeeded; 1 failed, "
        "rolled back or replaced by a later deploy; 2 usage; 3 no verdict within --timeout; 4 cannot tell: the "
        "watcher cannot be reached, refuses the credentials or gives an answer that cannot be read.",
    )
    status.add_argument("name", metavar="NAME", help="the deployment's name (its deployment.name label)")
    status.add_argument("--environment", help="its environment (default: the one environment NAME is deployed in)")
    status.add_argument("--version", help="wait for the rollout of this version (default: the current rollout)")
    status.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                        help="the longest wait (default 600): exit 3 at the latest this many seconds after the "
                             "start, whatever the watcher sends meanwhile (4 when it is unreachable then)")  # fmt: skip
    reader.add_flags(status)
    history.add_parser(commands)
    return p


class Ambiguous(Exception):
    """NAME is deployed in several environments and none was given."""


@dataclass
class Verdict:
    code: int
    message: str


class Gate:
    """Which rollout is waited for, and whether a state of the deployment decides it. Pure.

    The rollout is known by its revision in the run of the watcher that showed it (``run``,
    new at each start of the watcher). A watcher that restarted may have lost its state and
    number revisions anew: in another run the rollout is found again by its version.
    """

    def __init__(self, version: str | None) -> None:
        self.version = version  # the version asked for; once the rollout is known, its version
        self.revision: int | None = None  # the rollout waited for, once it is known
        self.run: str | None = None  # the run of the watcher that showed it

    def judge(self, deployment: Summary | None, *, run: str, settled: bool) -> Verdict | None:
        """The verdict that ``deployment`` as the watcher's ``run`` shows it gives; None: keep waiting.

        ``deployment`` is None when the watcher does not show it; that is "gone" only when
        ``settled`` (the watcher had synced with the Docker Engine) and in the run that showed it.
        """
        if self.revision is not None and run != self.run:
            if deployment is None:
                return None  # a restarted watcher that does not know it (yet)
            if deployment.version == self.version:
                self.revision, self.run = deployment.revision, run  # found again
            elif deployment.revision <= self.revision:
                return None  # not there yet, or an older state
        if deployment is None:
            if self.revision is None or not settled:
                return None  # not there yet, or not known yet
            return Verdict(EXIT_FAILED, "the deployment is gone (no longer tracked) before its rollout finished")
        revision, version, status = deployment.revision, deployment.version, deployment.status
        if self.revision is None:
            if self.version is not None and version != self.version:
                return None  # the version asked for has not appeared yet
            self.revision, self.run, self.version = revision, run, version
        if revision == self.revision:
            if status == "success":
                return Verdict(EXIT_OK, f"revision {revision} ({version}) succeeded" + _analysed(deployment))
            if status == "failed":
                reason = deployment.reason
                return Verdict(
                    EXIT_FAILED, f"revision {revision} ({version}) failed" + (f": {reason}" if reason else "")
                )
            return None
        if revision < self.revision:
            return None  # an older state, read before the newer one
        if deployment.rollback:
            return Verdict(EXIT_FAILED, f"rolled back to {version} (revision {revision})")
        return Verdict(EXIT_FAILED, f"replaced by {version} (revision {revision}) before it succeeded")


def _analysed(deployment: Summary) -> str:
    """What a success's line adds of its analysis: `` (analysis passed)``, `` (analysis inconclusive: …)``."""
    analysis = deployment.analysis
    if analysis is None:
        return ""
    said = f"analysis {analysis.status}" + (f": {analysis.reason}" if analysis.reason else "")
    if analysis.mode == "observe":
        said += ", observe mode"  # it did not decide the verdict: the containers did
    return f" ({said})"


def analysing(data: dict[str, Any], deployment: Summary | None = None) -> str:
    """An analysis_measured event's line: ``analysing: error_rate 0.004 → 0.005 (pass 2)``, the count of its
    result from the deployment after it."""
    check, result = str(data.get("check")), str(data.get("result"))
    value, reason = _figure(data.get("value")), f": {data['reason']}" if data.get("reason") else ""
    if data.get("of_baseline"):
        return f"analysing: {check} baseline {value}" + ("" if result == "pass" else f" ({result}{reason})")
    checks = deployment.analysis.checks if deployment is not None and deployment.analysis is not None else []
    counts = next((c.measurements for c in checks if c.name == check), {})
    count = f" {counts[result]}" if result in counts else ""
    return f"analysing: {check} {_figure(data.get('baseline'))} → {value} ({result}{count}{reason})"


def _figure(value: Any) -> str:
    try:
        return answers.figure(value, "a figure")
    except reader.Unparseable:
        return "?"  # a line printed, not a verdict: never a reason to stop waiting


def describe(name: str, data: dict[str, Any], deployment: Summary | None = None) -> str:
    """One line for an event of the stream (``deployment``: as it shows the deployment after it)."""
    revision = f"revision {data.get('revision')} ({data.get('version')})"
    match name:
        case StreamEvent.ROLLOUT_STARTED:
            return f"{revision} started"
        case StreamEvent.ROLLBACK_STARTED:
            return f"rollback: {revision} started"
        case StreamEvent.ROLLOUT_FINISHED | StreamEvent.ROLLOUT_REVISED:
            reason = data.get("reason") or ""
            verb = "revised to " if name == StreamEvent.ROLLOUT_REVISED else ""
            return f"{revision} {verb}{data.get('status')}" + (f": {reason}" if reason else "")
        case StreamEvent.ROLLOUT_SUPERSEDED:
            return f"{revision} superseded"
        case StreamEvent.HEALTH_CHANGED:
            return (
                f"{revision}: container {str(data.get('instance'))[:12]} {data.get('before')} -> {data.get('health')}"
            )
        case StreamEvent.DEPLOYMENT_CHANGED:
            failing = data.get("failing") or []
            health = "failing: " + ", ".join(map(str, failing)) if failing else "healthy"
            return f"{revision}: {data.get('running')} of {data.get('current')} containers running, {health}"
        case StreamEvent.ANALYSIS_MEASURED:
            return analysing(data, deployment)
        case StreamEvent.ANALYSIS_FINISHED:
            reason = f": {data['reason']}" if data.get("reason") else ""
            rollback = "; rolling back" if data.get("rollback") else ""
            return f"{revision}: {data.get('mode')} analysis {data.get('outcome')}{reason}{rollback}"
        case StreamEvent.DEPLOYMENT_REMOVED:
            return f"removed: {data.get('reason')}"
        case StreamEvent.DEPLOYMENT_RETURNED:
            return f"{revision}: back after its removal"
        case StreamEvent.DEPLOYMENT_GONE:
            return f"gone: {data.get('reason')}"
    return name


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if args.command == "history":
        return history.run(args, _say)
    if not args.timeout > 0:
        return _say(EXIT_USAGE, f"--timeout must be a positive number of seconds, got {args.timeout}")
    deadline = time.monotonic() + args.timeout  # from the start: nothing later extends it
    try:
        watcher = reader.Watcher.from_flags(args)
    except reader.UsageError as exc:
        return _say(EXIT_USAGE, str(exc))
    return Waiter(watcher, args.name, args.environment, args.version, deadline=deadline)()


class Waiter:
    """The wait: (re)connect, read the deployment, follow the stream from there until a verdict or the deadline."""

    def __init__(
        self,
        watcher: reader.Watcher,
        name: str,
        environment: str | None,
        version: str | None,
        *,
        deadline: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.watcher = watcher
        self.asked = (name, environment, version)  # as given; the watcher's form once it says its limit
        self.name = name
        self.environment = environment
        self.gate = Gate(version)
        self.deadline = deadline
        self.clock = clock
        self.run = ""  # of the watcher that answered last
        self.reached = False  # the watcher answered at least once
        self.lost = ""  # why the watcher is away, while it is
        self.full = False  # its event stream refused us as full (503), said once
        self.shown = ""  # the state last printed ("<revision> <status>", or "absent")

    def __call__(self) -> int:
        # At the deadline a read still blocked (an answer trickling in) is cut, whatever the watcher sends.
        cutter = threading.Timer(max(0.0, self.deadline - self.clock()), self.watcher.cut)
        cutter.daemon = True
        cutter.start()
        try:
            return self._wait()
        finally:
            cutter.cancel()

    def _wait(self) -> int:
        while True:
            pause = RETRY_SECONDS  # longer when the watcher asks for it (a full event stream's 503)
            try:
                verdict = self._follow()
            except reader.Refused as exc:
                return _say(EXIT_CANNOT_TELL, str(exc))
            except reader.Unparseable as exc:
                return _say(EXIT_CANNOT_TELL, f"cannot tell: {exc}")
            except Ambiguous as exc:
                return _say(EXIT_USAGE, str(exc))
            except reader.Unreachable as exc:
                if not self.reached:
                    return _say(EXIT_CANNOT_TELL, str(exc))
                if exc.retry_after:  # it answers, but its stream is full: not away; asked again when it says
                    pause = exc.retry_after
                    if not self.full:
                        print(f"{self._who()}: {exc}; asking again in {pause:g} s", file=sys.stderr, flush=True)
                    self.full = True
                elif self.clock() < self.deadline:  # else cut short by the deadline: not a watcher away
                    if not self.lost:
                        print(f"{self._who()}: lost the watcher ({exc}); reconnecting", file=sys.stderr, flush=True)
                    self.lost = str(exc)
                verdict = None
            except TimeoutError:
                verdict = None
            if verdict is not None:
                print(f"{self._who()}: {verdict.message}", flush=True)
                return verdict.code
            if self.clock() >= self.deadline:
                if self.lost:
                    return _say(EXIT_CANNOT_TELL, f"the watcher is still unreachable at the timeout: {self.lost}")
                return _say(EXIT_TIMEOUT, f"{self._who()}: no verdict within the timeout")
            time.sleep(min(pause, max(0.0, self.deadline - self.clock())))

    def _follow(self) -> Verdict | None:
        """One connection: the deployment read, then the stream's events since the state read."""
        deployment, reply = self._read()
        self.reached = True
        if self.lost:
            print(f"{self._who()}: the watcher answers again", file=sys.stderr, flush=True)
            self.lost = ""
        verdict = self._judge(deployment, reply)
        if verdict is not None:
            return verdict
        query = {"name": self.name, **({"environment": self.environment} if self.environment else {})}
        events = self.watcher.events(query=query, last_event_id=reply.event_id, timeout=self._left())
        try:
            for event in events:
                # resync: what happened since the read is no longer kept: read it again.
                verdict = self._judge(*self._read()) if event.name == RESYNC_EVENT else self._event(event)
                if verdict is not None:
                    return verdict
            raise reader.Unreachable("the event stream ended")
        except TimeoutError:
            if self.clock() < self.deadline:
                raise reader.Unreachable("the event stream went silent") from None
            raise
        finally:
            events.close()

    def _read(self) -> tuple[Summary | None, reader.Reply]:
        """The deployment now (None while the watcher does not show it), and the answer it came in."""
        if self.environment is None:
            reply = self._get(REPORTS_PATH)
            where = f"the answer to GET {REPORTS_PATH}"
            listed = [answers.summary(row, f"{where}: deployments[{i}]")
                      for i, row in enumerate(answers.rows(reply.json(), where))]  # fmt: skip
            found = [d for d in listed if d.name == self.name]
            if len(found) > 1:
                environments = ", ".join(d.environment for d in found)
                raise Ambiguous(f"{self.name} is deployed in several environments ({environments}): "
                                "pass --environment")  # fmt: skip
            if found:
                self.environment = found[0].environment
            return (found[0] if found else None), reply
        path = REPORTS_PATH + "/" + "/".join(urllib.parse.quote(p, safe="") for p in (self.environment, self.name))
        reply = self._get(path)
        where = f"the answer to GET {path} ({reply.status})"
        if reply.status == 404:  # the watcher's own 404 (not a proxy's page): no such deployment, for now
            answers.field(answers.an_object(reply.json(), where), "error", str, where)
            return None, reply
        return answers.summary(reply.json(), where), reply

    def _get(self, path: str) -> reader.Reply:
        reply = self.watcher.get(path, timeout=self._left())
        if reply.status not in (200, 404) or (reply.status == 404 and path == REPORTS_PATH):
            raise reader.Unreachable(f"the watcher answered {reply.status} to {path}")
        # Names and versions as the watcher makes them of labels: cleaned, and cut to its limit.
        limit = reply.max_value_length
        name, environment, version = self.asked
        self.name = text.clean(name, limit=limit).value
        if environment is not None:
            self.environment = text.clean(environment, limit=limit).value
        if version is not None:
            self.gate.version = text.clean(version, limit=limit).value
        self.run = reply.run
        return reply

    def _judge(self, deployment: Summary | None, reply: reader.Reply) -> Verdict | None:
        """The verdict of a read, printing the state it shows when it changed (a verdict is printed by the caller)."""
        verdict = self.gate.judge(deployment, run=reply.run, settled=reply.ready)
        if verdict is not None:
            return verdict
        if deployment is None:
            if self.shown != "absent":
                if self.gate.revision is not None:
                    what = "the watcher does not show the deployment (restarted, or not synced yet): waiting"
                elif self.gate.version:
                    what = f"waiting for version {self.gate.version} to appear"
                else:
                    what = "waiting for the deployment to appear"
                print(f"{self._who()}: {what}", flush=True)
            self.shown = "absent"
        elif self.gate.revision is not None:
            now = f"{deployment.revision} {deployment.status}"
            if now != self.shown:
                print(f"{self._who()}: revision {deployment.revision} ({deployment.version}) "
                      f"{deployment.status.replace('_', ' ')}", flush=True)  # fmt: skip
            self.shown = now
        return None

    def _event(self, event: reader.Event) -> Verdict | None:
        """The verdict of an event of the stream; its line printed when it is not the verdict."""
        where = f"a {event.name!r} event on the stream"
        environment = answers.field(event.data, "environment", str, where)
        if self.environment is not None and environment != self.environment:
            return None
        self.environment = environment
        if "deployment" not in event.data:
            raise reader.Unparseable(f"{where} has no 'deployment'")
        value = event.data["deployment"]
        deployment = None if value is None else answers.summary(value, f"{where}: 'deployment'")
        run = event.id.partition(".")[0] if event.id else self.run
        verdict = self.gate.judge(deployment, run=run, settled=True)
        if verdict is None:  # else the verdict's line says it: the final line is printed once
            print(f"{self._who()}: {describe(event.name, event.data, deployment)}", flush=True)
            self.shown = "absent" if deployment is None else f"{deployment.revision} {deployment.status}"
        return verdict

    def _left(self) -> float:
        return max(0.05, self.deadline - self.clock())

    def _who(self) -> str:
        return f"{self.name}/{self.environment}" if self.environment else self.name


def _say(code: int, message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code

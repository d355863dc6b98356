"""``deployment-watcher rollout status NAME``: wait for a rollout's verdict, a gate for CI.

It follows the watcher's event stream, printing one line per change, until the rollout of
the version asked for (default: the current rollout) succeeds or fails. A watcher that goes
away meanwhile (a restart) is waited for: the client reconnects, re-reads the deployment and
resumes the stream where it left off.

Exit codes: 0 the rollout succeeded; 1 it failed, or it was rolled back or replaced (by the
orchestrator, or by a later deploy) before it succeeded, or the deployment is gone; 2 bad
usage; 3 no verdict within ``--timeout``; 4 the watcher cannot be reached, or refuses the
credentials.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from watcher.clients import reader
from watcher.wire import REPORTS_PATH

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
PROG = "deployment-watcher rollout"
RETRY_SECONDS = 1.0  # between attempts to reach a watcher that went away


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Commands about one deployment's rollouts.",
        epilog="Exit codes of 'status': 0 succeeded, 1 failed, rolled back or replaced, 2 usage, "
        "3 timed out, 4 watcher unreachable or credentials refused.",
    )
    commands = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    status = commands.add_parser(
        "status",
        help="wait until the rollout finishes; exit 0 when it succeeded, 1 when not",
        description="Wait for the verdict on a rollout, printing each change. Exit codes: 0 succeeded; 1 failed, "
        "rolled back or replaced by a later deploy; 2 usage; 3 no verdict within --timeout; 4 the watcher cannot "
        "be reached or refuses the credentials.",
    )
    status.add_argument("name", metavar="NAME", help="the deployment's name (its deployment.name label)")
    status.add_argument("--environment", help="its environment (default: the one environment NAME is deployed in)")
    status.add_argument("--version", help="wait for the rollout of this version (default: the current rollout)")
    status.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                        help="give up after this long, exit 3 (default 600)")  # fmt: skip
    reader.add_flags(status)
    return p


class Ambiguous(Exception):
    """NAME is deployed in several environments and none was given."""


@dataclass
class Verdict:
    code: int
    message: str


class Gate:
    """Which rollout is waited for, and whether a state of the deployment decides it. Pure."""

    def __init__(self, version: str | None) -> None:
        self.version = version
        self.revision: int | None = None  # the rollout waited for, once it is known

    def judge(self, deployment: dict[str, Any] | None) -> Verdict | None:
        """The verdict that ``deployment`` (a summary, None when gone) gives; None: keep waiting."""
        if deployment is None:
            if self.revision is None:
                return None  # not there yet
            return Verdict(EXIT_FAILED, "the deployment is gone (no longer tracked) before its rollout finished")
        revision, version, status = deployment["revision"], deployment["version"], deployment["status"]
        if self.revision is None:
            if self.version is not None and version != self.version:
                return None  # the version asked for has not appeared yet
            self.revision = revision
        if revision == self.revision:
            if status == "success":
                return Verdict(EXIT_OK, f"revision {revision} ({version}) succeeded")
            if status == "failed":
                reason = deployment["reason"]
                return Verdict(
                    EXIT_FAILED, f"revision {revision} ({version}) failed" + (f": {reason}" if reason else "")
                )
            return None
        if revision < self.revision:
            return None  # an older state, read before the newer one
        if deployment["rollback"]:
            return Verdict(EXIT_FAILED, f"rolled back to {version} (revision {revision})")
        return Verdict(EXIT_FAILED, f"replaced by {version} (revision {revision}) before it succeeded")


def describe(name: str, data: dict[str, Any]) -> str:
    """One line for an event of the stream."""
    revision = f"revision {data.get('revision')} ({data.get('version')})"
    match name:
        case "rollout_started":
            return f"{revision} started"
        case "rollback_started":
            return f"rollback: {revision} started"
        case "rollout_finished" | "rollout_revised":
            reason = data.get("reason") or ""
            verb = "revised to " if name == "rollout_revised" else ""
            return f"{revision} {verb}{data.get('status')}" + (f": {reason}" if reason else "")
        case "rollout_superseded":
            return f"{revision} superseded"
        case "health_changed":
            return (
                f"{revision}: container {str(data.get('instance'))[:12]} {data.get('before')} -> {data.get('health')}"
            )
        case "deployment_changed":
            failing = data.get("failing") or []
            health = "failing: " + ", ".join(map(str, failing)) if failing else "healthy"
            return f"{revision}: {data.get('running')} of {data.get('current')} containers running, {health}"
        case "deployment_removed":
            return f"removed: {data.get('reason')}"
        case "deployment_returned":
            return f"{revision}: back after its removal"
        case "deployment_gone":
            return f"gone: {data.get('reason')}"
    return name


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if not args.timeout > 0:
        return _say(EXIT_USAGE, f"--timeout must be a positive number of seconds, got {args.timeout}")
    try:
        watcher = reader.Watcher.from_flags(args)
    except reader.UsageError as exc:
        return _say(EXIT_USAGE, str(exc))
    return Waiter(watcher, args.name, args.environment, Gate(args.version), deadline=time.monotonic() + args.timeout)()


class Waiter:
    """The wait: (re)connect, read the deployment, follow the stream until a verdict or the deadline."""

    def __init__(
        self,
        watcher: reader.Watcher,
        name: str,
        environment: str | None,
        gate: Gate,
        *,
        deadline: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.watcher = watcher
        self.name = name
        self.environment = environment
        self.gate = gate
        self.deadline = deadline
        self.clock = clock
        self.last_event_id = ""
        self.reached = False  # the watcher answered at least once
        self.shown: tuple[int, str] | None = None  # the (revision, status) last printed

    def __call__(self) -> int:
        lost = ""
        while True:
            try:
                verdict = self._follow()
            except reader.Refused as exc:
                return _say(EXIT_UNREACHABLE, str(exc))
            except Ambiguous as exc:
                return _say(EXIT_USAGE, str(exc))
            except reader.Unreachable as exc:
                if not self.reached:
                    return _say(EXIT_UNREACHABLE, str(exc))
                if not lost:
                    print(f"{self._who()}: lost the watcher ({exc}); reconnecting", file=sys.stderr, flush=True)
                lost = str(exc)
                verdict = None
            except TimeoutError:
                verdict = None
            if verdict is not None:
                print(f"{self._who()}: {verdict.message}", flush=True)
                return verdict.code
            if self.clock() >= self.deadline:
                if lost:
                    return _say(EXIT_UNREACHABLE, f"the watcher is still unreachable at the timeout: {lost}")
                return _say(EXIT_TIMEOUT, f"{self._who()}: no verdict within the timeout")
            time.sleep(min(RETRY_SECONDS, max(0.0, self.deadline - self.clock())))

    def _follow(self) -> Verdict | None:
        """One connection: the stream opened first, then the deployment read, then its events."""
        query = {"name": self.name, **({"environment": self.environment} if self.environment else {})}
        events = self.watcher.events(query=query, last_event_id=self.last_event_id, timeout=self._left())
        try:
            self.reached = True
            verdict = self._judge(self._read())
            if verdict is not None:
                return verdict
            events.set_timeout(self._left())
            for event in events:
                self.last_event_id = event.id or self.last_event_id
                if event.name == "resync":
                    verdict = self._judge(self._read())
                elif self.environment is None or event.data.get("environment") == self.environment:
                    self.environment = event.data.get("environment")
                    print(f"{self._who()}: {describe(event.name, event.data)}", flush=True)
                    verdict = self._judge(event.data.get("deployment"), printed=True)
                if verdict is not None:
                    return verdict
                events.set_timeout(self._left())
            raise reader.Unreachable("the event stream ended")
        except TimeoutError:
            if self.clock() < self.deadline:
                raise reader.Unreachable("the event stream went silent") from None
            raise
        finally:
            events.close()

    def _read(self) -> dict[str, Any] | None:
        """The deployment now (None while it does not exist)."""
        if self.environment is None:
            status, answer = self.watcher.get(REPORTS_PATH, timeout=self._left())
            if status != 200 or not isinstance(answer, dict):
                raise reader.Unreachable(f"the watcher answered {status} to the list of deployments")
            found = [d for d in answer["deployments"] if d["name"] == self.name]
            if len(found) > 1:
                environments = ", ".join(d["environment"] for d in found)
                raise Ambiguous(f"{self.name} is deployed in several environments ({environments}): "
                                "pass --environment")  # fmt: skip
            if not found:
                return None
            self.environment = found[0]["environment"]
            return dict(found[0])
        path = REPORTS_PATH + "/" + "/".join(urllib.parse.quote(p, safe="") for p in (self.environment, self.name))
        status, answer = self.watcher.get(path, timeout=self._left())
        if status == 404:
            return None
        if status != 200 or not isinstance(answer, dict):
            raise reader.Unreachable(f"the watcher answered {status} to {path}")
        return answer

    def _judge(self, deployment: dict[str, Any] | None, *, printed: bool = False) -> Verdict | None:
        verdict = self.gate.judge(deployment)
        if deployment is not None and self.gate.revision is not None:
            now = (deployment["revision"], deployment["status"])
            if now != self.shown and not printed and verdict is None:
                print(f"{self._who()}: revision {now[0]} ({deployment['version']}) {now[1].replace('_', ' ')}",
                      flush=True)  # fmt: skip
            self.shown = now
        elif deployment is None and verdict is None and not printed:
            wanted = f" version {self.gate.version}" if self.gate.version else ""
            print(f"{self._who()}: waiting for{wanted or ' the deployment'} to appear", flush=True)
        return verdict

    def _left(self) -> float:
        return max(0.05, self.deadline - self.clock())

    def _who(self) -> str:
        return f"{self.name}/{self.environment}" if self.environment else self.name


def _say(code: int, message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code

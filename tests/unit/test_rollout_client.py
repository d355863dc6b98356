"""`rollout status` and `status` against an in-process watcher: the verdicts and their exit codes,
the lines printed, the gate's logic; the real process and daemon are in tests/integration/test_read_side.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import http.client
import http.server
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_aiohttp import AiohttpClient

from tests.conftest import examples, free_port
from tests.polling import poll_async
from tests.unit.builders import ANALYSED, SETTINGS, measured, reported, started
from tests.unit.readside import NOW, ReadSide, read_side
from watcher import cli
from watcher.clients import answers, reader, rollout, status
from watcher.clients.answers import Summary
from watcher.config import Settings
from watcher.config.webconfig import WebConfig
from watcher.domain import labels
from watcher.domain.analysis import Request
from watcher.domain.model import DeploymentKey, Instance
from watcher.domain.observations import InstanceExited, InstanceGone, InstanceSeen, Tick
from watcher.wire import StreamEvent


def summary(revision: int, version: str, state: str, *, rollback: bool = False, reason: str = "") -> Summary:
    return Summary("api", "production", revision, version, state, rollback, reason)


def judge(gate: rollout.Gate, deployment: Summary | None, *, run: str = "r1", settled: bool = True) -> Any:
    return gate.judge(deployment, run=run, settled=settled)


def test_the_gate_waits_for_the_current_rollout() -> None:
    """Without --version: the rollout current at the first read; its verdict decides."""
    gate = rollout.Gate(None)
    assert judge(gate, summary(3, "1.0", "in_progress")) is None and gate.revision == 3
    assert judge(gate, summary(3, "1.0", "success")) == rollout.Verdict(0, "revision 3 (1.0) succeeded")
    assert judge(gate, summary(3, "1.0", "failed", reason="boom")) == rollout.Verdict(
        1, "revision 3 (1.0) failed: boom"
    )


def test_the_gate_waits_for_the_version_asked_for() -> None:
    """With --version: older rollouts are not it; the first rollout of that version is."""
    gate = rollout.Gate("2.0")
    assert judge(gate, None) is None
    assert judge(gate, summary(1, "1.0", "success")) is None and gate.revision is None
    assert judge(gate, summary(2, "2.0", "in_progress")) is None and gate.revision == 2
    assert judge(gate, summary(2, "2.0", "success")).code == 0


def test_replaced_or_rolled_back_or_gone_is_a_failure() -> None:
    """A later rollout before the verdict: 1, saying whether it was a rollback; the deployment gone: 1."""
    gate = rollout.Gate(None)
    judge(gate, summary(3, "2.0", "in_progress"))
    assert judge(gate, summary(4, "1.0", "in_progress", rollback=True)) == rollout.Verdict(
        1, "rolled back to 1.0 (revision 4)"
    )
    assert judge(gate, summary(4, "3.0", "in_progress")) == rollout.Verdict(
        1, "replaced by 3.0 (revision 4) before it succeeded"
    )
    assert judge(gate, None).code == 1
    assert judge(gate, summary(2, "1.0", "success")) is None  # an older read: not a verdict


def test_a_restarted_or_unsynced_watcher_is_waited_for_never_gone() -> None:
    """Missing from a watcher not synced yet, or from another run (a restart): wait, and find the rollout again
    by its version, whatever its revision now (a watcher that lost its state numbers them anew)."""
    gate = rollout.Gate("2.0")
    judge(gate, summary(3, "2.0", "in_progress"))
    assert judge(gate, None, settled=False) is None  # the same run, not synced (yet, or again)
    assert judge(gate, None, run="r2") is None  # another run, synced: the state was lost or moved aside
    assert judge(gate, summary(1, "1.0", "success"), run="r2") is None  # not the version waited for
    assert judge(gate, summary(1, "2.0", "in_progress"), run="r2") is None and (gate.revision, gate.run) == (1, "r2")
    assert judge(gate, summary(1, "2.0", "success"), run="r2") == rollout.Verdict(0, "revision 1 (2.0) succeeded")
    kept = rollout.Gate("2.0")
    judge(kept, summary(3, "2.0", "in_progress"))
    assert judge(kept, summary(3, "2.0", "in_progress"), run="r2") is None and kept.revision == 3  # the state kept
    assert judge(kept, summary(4, "3.0", "in_progress"), run="r3").code == 1  # replaced meanwhile
    assert judge(rollout.Gate(None), None, run="r2") is None  # never seen: not there yet


def test_server_sent_events_are_parsed() -> None:
    """Fields, multi-line data, comments and the blank line that ends an event."""
    raw = b'retry: 2000\n\n: keepalive\n\nid: r.1\nevent: rollout_started\ndata: {"a":\ndata: 1}\n\nid: r.2\n'
    response: Any = io.BytesIO(raw)
    events = list(reader.Events(http.client.HTTPConnection("unused"), response, None))
    assert events == [reader.Event("r.1", "rollout_started", {"a": 1})]


def test_a_stream_that_cannot_be_opened_is_unreachable() -> None:
    """Nothing listening (the watcher went away between the read and the stream): Unreachable, and no socket
    left to cut."""
    watcher = reader.Watcher(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(reader.Unreachable, match="cannot reach the watcher"):
        watcher.events(query={}, last_event_id="", timeout=5)
    assert not watcher._open


async def run_cli(*argv: str) -> tuple[int, str, str]:
    """The command in a thread (it blocks), its exit code and output."""
    out, err = io.StringIO(), io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return cli.main(list(argv))

    code = await asyncio.to_thread(call)
    return code, out.getvalue(), err.getvalue()


async def served(aiohttp_client: AiohttpClient, **kwargs: Any) -> tuple[str, ReadSide]:
    app, side = read_side(**kwargs)
    client = await aiohttp_client(app)
    return str(client.make_url("/")), side


async def later(side: ReadSide, *observations: Any) -> None:
    """Once the client follows the stream, apply ``observations`` (applied before, the client
    would read the state after them and wait for a version already gone)."""

    async def following() -> bool:
        return bool(side.stream.clients)

    await poll_async("the client following the stream", following, timeout=60, interval=0.01)
    side.submit(*observations)


async def test_success_exits_0(aiohttp_client: AiohttpClient) -> None:
    """A rollout in progress that then succeeds: a line per change, the verdict's once, exit 0."""
    url, side = await served(aiohttp_client)
    side.submit(started("a", "1.0.0", NOW))
    waiting = asyncio.create_task(run_cli("rollout", "status", "api", "--url", url, "--timeout", "10"))
    await later(side, Tick(NOW + 11))
    code, out, err = await waiting
    assert code == 0, err
    assert out.splitlines() == [
        "api/production: revision 1 (1.0.0) in progress",
        "api/production: revision 1 (1.0.0) succeeded",
    ]


def analysed(status: str, reason: str = "", *, mode: str = "gate") -> answers.AnalysisSeen:
    return answers.AnalysisSeen(mode=mode, status=status, measuring=True, reason=reason, checks=[])


def test_a_success_says_how_its_analysis_ended() -> None:
    """Passed, inconclusive (with why), or only observed: the verdict's line says which."""
    cases = [
        (analysed("passed"), "revision 3 (1.0) succeeded (analysis passed)"),
        (analysed("inconclusive", "no data"), "revision 3 (1.0) succeeded (analysis inconclusive: no data)"),
        (analysed("running", mode="observe"), "revision 3 (1.0) succeeded (analysis running, observe mode)"),
    ]
    for analysis, line in cases:
        gate = rollout.Gate(None)
        assert judge(gate, summary(3, "1.0", "in_progress")) is None
        assert judge(gate, dataclasses.replace(summary(3, "1.0", "success"), analysis=analysis)) == rollout.Verdict(
            0, line
        )


GATED = Request(checks=("error_rate",))


async def test_a_gate_analysis_is_waited_through_and_its_failure_exits_1(aiohttp_client: AiohttpClient) -> None:
    """The containers' verdict is no verdict while a gate analysis runs: each measurement is a line naming
    the check, its baseline, its value and its count; the analysis' failure fails the rollout: exit 1 with
    the reason (the check and its figures), on the measurement that reached the failure limit."""
    url, side = await served(aiohttp_client, settings=ANALYSED)
    side.submit(started("a", "1.0.0", NOW, analysis=GATED), measured(NOW + 1, 0.004, baseline=True))
    waiting = asyncio.create_task(run_cli("rollout", "status", "api", "--url", url, "--timeout", "10"))
    await later(side, Tick(NOW + 11), measured(NOW + 41, 0.005), measured(NOW + 71, 0.041), measured(NOW + 101, 0.041))
    code, out, err = await waiting
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0] == "api/production: revision 1 (1.0.0) in progress"
    analysing = [line for line in lines if "analysing" in line or "analysis" in line]
    reason = "analysis error_rate: 0.041 > max 0.02 (baseline 0.004)"
    assert analysing == [
        "api/production: analysing: error_rate 0.004 → 0.005 (pass 1)",
        "api/production: analysing: error_rate 0.004 → 0.041 (fail 1: 0.041 > max 0.02 (baseline 0.004))",
        f"api/production: revision 1 (1.0.0) failed: {reason}",  # the verdict's line, for the failure limit's
    ]
    assert lines[-1] == f"api/production: revision 1 (1.0.0) failed: {reason}"


async def test_a_gate_analysis_that_passes_exits_0_saying_so(aiohttp_client: AiohttpClient) -> None:
    url, side = await served(aiohttp_client, settings=ANALYSED)
    side.submit(started("a", "1.0.0", NOW, analysis=GATED), measured(NOW + 1, 0.004, baseline=True), Tick(NOW + 11))
    waiting = asyncio.create_task(run_cli("rollout", "status", "api", "--url", url, "--timeout", "10"))
    await later(side, measured(NOW + 41, 0.005), Tick(NOW + 311))
    code, out, err = await waiting
    assert code == 0, err
    assert out.splitlines()[-1] == "api/production: revision 1 (1.0.0) succeeded (analysis passed)"


async def test_an_inconclusive_analysis_exits_0_saying_why(aiohttp_client: AiohttpClient) -> None:
    url, side = await served(aiohttp_client, settings=ANALYSED)
    side.submit(started("a", "1.0.0", NOW, analysis=GATED), Tick(NOW + 11))
    waiting = asyncio.create_task(run_cli("rollout", "status", "api", "--url", url, "--timeout", "10"))
    await later(side, measured(NOW + 41, None, error="connection refused"), Tick(NOW + 311))
    code, out, err = await waiting
    assert code == 0, err
    assert "api/production: analysing: error_rate - → - (error 1: connection refused)" in out.splitlines()
    assert out.splitlines()[-1] == (
        "api/production: revision 1 (1.0.0) succeeded (analysis inconclusive: no check measured any data within"
        " the window (only no data or errors))"
    )


async def test_failure_exits_1(aiohttp_client: AiohttpClient) -> None:
    """A crash: exit 1 with the reason, the final line printed once (the event that is the verdict was printed
    too, the same line twice)."""
    url, side = await served(aiohttp_client)
    side.submit(started("a", "1.0.0", NOW))
    waiting = asyncio.create_task(
        run_cli("rollout", "status", "api", "--environment", "production", "--url", url, "--timeout", "10")
    )
    await later(side, InstanceExited(NOW + 1, "a", 3))
    code, out, _ = await waiting
    assert code == 1
    assert out.splitlines() == [
        "api/production: revision 1 (1.0.0) in progress",
        "api/production: revision 1 (1.0.0) failed: container a exited with code 3",
    ]


async def test_a_rollback_exits_1(aiohttp_client: AiohttpClient) -> None:
    """The version waited for is rolled back by a later deploy before it succeeded: exit 1."""
    url, side = await served(aiohttp_client)
    side.submit(started("a", "1.0.0", NOW), Tick(NOW + 11), started("b", "2.0.0", NOW + 20))
    waiting = asyncio.create_task(
        run_cli("rollout", "status", "api", "--version", "2.0.0", "--url", url, "--timeout", "60")
    )
    await later(side, started("c", "1.0.0", NOW + 25))
    code, out, _ = await waiting
    assert code == 1
    assert out.splitlines()[-1] == "api/production: rolled back to 1.0.0 (revision 3)"


async def test_waits_for_a_version_not_there_yet(aiohttp_client: AiohttpClient) -> None:
    """--version of a deploy the watcher has not seen yet: it waits for it to appear, then for its verdict."""
    url, side = await served(aiohttp_client)
    waiting = asyncio.create_task(
        run_cli("rollout", "status", "api", "--version", "2.0.0", "--url", url, "--timeout", "60")
    )
    await later(side, reported("1.0.0", "success", NOW), reported("2.0.0", "in_progress", NOW + 1))
    side.submit(reported("2.0.0", "success", NOW + 2))
    code, out, _ = await waiting
    assert code == 0
    assert out.splitlines()[0] == "api: waiting for version 2.0.0 to appear"


async def test_timeout_exits_3(aiohttp_client: AiohttpClient) -> None:
    """No verdict within --timeout: exit 3."""
    url, side = await served(aiohttp_client)
    side.submit(started("a", "1.0.0", NOW))
    code, _, err = await run_cli("rollout", "status", "api", "--url", url, "--timeout", "0.3")
    assert code == 3 and "no verdict within the timeout" in err


async def test_unreachable_exits_4() -> None:
    """Nothing listening at --url: exit 4 at once."""
    code, _, err = await run_cli("rollout", "status", "api", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 4 and "cannot reach the watcher" in err
    code, _, err = await run_cli("status", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 4 and "cannot reach the watcher" in err


async def test_wrong_credentials_exit_4(aiohttp_client: AiohttpClient, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Basic auth refused (none, or a wrong password): exit 4; the right one works."""
    users = {"ci": bcrypt.hashpw(b"right", bcrypt.gensalt(4))}
    url, side = await served(aiohttp_client, web_config=WebConfig(users=users))
    side.submit(reported("1.0.0", "success", NOW))
    password = tmp_path / "password"
    password.write_text("wrong\n")
    assert (await run_cli("rollout", "status", "api", "--url", url))[0] == 4
    code, _, err = await run_cli("rollout", "status", "api", "--url", url, "--user", "ci", "--password-file",
                                 str(password))  # fmt: skip
    assert code == 4 and "refused the credentials" in err
    assert (await run_cli("status", "--url", url, "--user", "ci", "--password-file", str(password)))[0] == 4
    monkeypatch.setenv(reader.PASSWORD_ENV, "right")
    assert (await run_cli("rollout", "status", "api", "--url", url, "--user", "ci"))[0] == 0
    assert base64.b64encode(b"ci:right").decode() not in (await run_cli("status", "--url", url, "--user", "ci"))[1]


async def test_status_prints_a_table(aiohttp_client: AiohttpClient) -> None:
    """`status`: a header and one line per deployment, like docker ps; --environment filters."""
    url, side = await served(aiohttp_client)
    side.submit(reported("1.0.0", "success", NOW - 30, started_at=NOW - 60))
    side.submit(reported("2.0.0", "failed", NOW, key=DeploymentKey("web\x1b[31m", "staging")))
    code, out, _ = await run_cli("status", "--url", url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [*status.HEADINGS[:-1], "LAST", "VERSIONS"]
    assert lines[1].split()[:5] == ["api", "production", "success", "1.0.0", "1"]
    assert lines[2].split()[:3] == ["web\\x1b[31m", "staging", "failed"]  # a terminal escape shown, not obeyed
    code, out, _ = await run_cli("status", "--url", url, "--environment", "staging")
    assert len(out.splitlines()) == 2


async def test_status_shows_the_analysis_in_the_status_column(aiohttp_client: AiohttpClient) -> None:
    """A rollout under analysis: analysing while it measures, then how it ended."""
    url, side = await served(aiohttp_client, settings=ANALYSED)
    side.submit(started("a", "1.0.0", NOW, analysis=GATED), Tick(NOW + 11))
    assert (await run_cli("status", "--url", url))[1].splitlines()[1].split()[2:4] == ["in_progress", "(analysing)"]
    side.submit(measured(NOW + 41, 0.05), measured(NOW + 71, 0.05))
    assert "failed (analysis failed)" in (await run_cli("status", "--url", url))[1]


async def test_status_shows_a_removed_deployment_as_removed(aiohttp_client: AiohttpClient) -> None:
    """`status`: a deployment with no container left is removed, not failing."""
    url, side = await served(aiohttp_client)
    side.submit(started("a", "1.0.0", NOW - 30), Tick(NOW - 19), InstanceGone(NOW - 10, "a"))
    code, out, _ = await run_cli("status", "--url", url)
    assert code == 0
    _, line = out.splitlines()
    cells = line.split()
    assert cells[:5] == ["api", "production", "success", "1.0.0", "1"] and cells[6] == "removed"


def test_the_gate_describes_every_event() -> None:
    """Each event the stream sends has its own line in `rollout status`, never the bare name."""
    changed = {"revision": 2, "version": "2.0", "current": 2, "running": 1, "failing": ["containers_running"]}
    assert rollout.describe("deployment_changed", changed) == (
        "revision 2 (2.0): 1 of 2 containers running, failing: containers_running"
    )
    assert rollout.describe("deployment_changed", {**changed, "running": 2, "failing": []}).endswith(
        "2 of 2 containers running, healthy"
    )
    removed = {"revision": 2, "version": "2.0", "reason": "no container of it is left"}
    assert rollout.describe("deployment_removed", removed) == "removed: no container of it is left"
    assert rollout.describe("deployment_returned", removed) == "revision 2 (2.0): back after its removal"
    finished = {**changed, "outcome": "failed", "mode": "gate", "reason": "analysis p99: 2 > max 1", "rollback": True}
    assert rollout.describe("analysis_finished", finished) == (
        "revision 2 (2.0): gate analysis failed: analysis p99: 2 > max 1; rolling back"
    )
    baseline = {"check": "p99", "result": "pass", "value": "+Inf", "baseline": "+Inf", "of_baseline": True}
    assert rollout.describe("analysis_measured", baseline) == "analysing: p99 baseline +Inf"
    for name in StreamEvent:
        assert rollout.describe(name, changed) != name


async def test_usage_errors_exit_2() -> None:
    """A bad --timeout or --url: exit 2."""
    assert (await run_cli("rollout", "status", "api", "--timeout", "0"))[0] == 2
    assert (await run_cli("rollout", "status", "api", "--url", "ftp://x"))[0] == 2
    assert (await run_cli("status", "--url", "nope"))[0] == 2


async def test_several_environments_need_one_chosen(aiohttp_client: AiohttpClient) -> None:
    """A name deployed in two environments and no --environment: exit 2 naming them."""
    url, side = await served(aiohttp_client)
    side.submit(reported("1", "success", NOW), reported("1", "success", NOW, key=DeploymentKey("api", "staging")))
    code, _, err = await run_cli("rollout", "status", "api", "--url", url)
    assert code == 2 and "production, staging" in err


def test_help_lists_the_new_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """`deployment-watcher --help` lists rollout and status among the commands."""
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "rollout" in out and "status" in out and "notify" in out


# -- the deadline


@pytest.mark.parametrize("version", ["9.9.9", "1.0.0"], ids=["a version that never appears", "no verdict"])
async def test_keepalives_do_not_extend_the_timeout(aiohttp_client: AiohttpClient, version: str) -> None:
    """A stream that sends nothing but its keepalive comments (here every 50 ms): the wait still ends at
    --timeout, exit 3 (each comment used to restart the read's timeout, and the deadline was only looked at
    after an event: the gate never returned)."""
    url, side = await served(aiohttp_client, heartbeat=0.05)
    side.submit(started("a", "1.0.0", NOW))  # in progress until a Tick, which never comes
    began = time.monotonic()
    code, _, err = await asyncio.wait_for(
        run_cli("rollout", "status", "api", "--version", version, "--url", url, "--timeout", "0.3"), 20
    )
    assert code == 3 and "no verdict within the timeout" in err
    assert 0.3 <= time.monotonic() - began < 2.3


@pytest.mark.parametrize("stream", ["keepalives", "trickle"])
def test_a_stream_with_no_verdict_ends_at_the_timeout(fake: Fake, stream: str) -> None:
    """A plain HTTP/1.0 server (as a proxy may answer) that sends only comments (keepalives), or a line that
    never ends, a byte every 50 ms (trickle: each read's timeout bounds a silence, and there is none): the
    requests in flight are cut at the deadline, exit 3."""
    fake.answers[DETAIL] = Answer(body=as_json(ROW))
    setattr(fake, stream, True)
    began = time.monotonic()
    code, _, err = cli_quietly("rollout", "status", "api", "--environment", "production", "--url", fake.url,
                               "--timeout", "0.3")  # fmt: skip
    assert code == 3 and "no verdict within the timeout" in err, err
    assert 0.3 <= time.monotonic() - began < 2.3


def test_a_full_stream_is_asked_again_after_its_retry_after(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream answers 503 with Retry-After: 1 (its caps are reached): the gate asks again after 1 s, not
    at its own retry interval (here 0.2 s, 1 s by default), and still ends at --timeout (exit 3: the watcher
    answers, with no verdict)."""
    monkeypatch.setattr(rollout, "RETRY_SECONDS", 0.2)  # shorter than the Retry-After, as the default is than 10 s
    fake.answers[DETAIL] = Answer(body=as_json(ROW))
    fake.stream_answer = Answer(503, b'{"error": "full"}', {"Retry-After": "1"})
    began = time.monotonic()
    code, _, err = cli_quietly("rollout", "status", "api", "--environment", "production", "--url", fake.url,
                               "--timeout", "1.5")  # fmt: skip
    assert 1.5 <= time.monotonic() - began < 3.5
    assert code == 3 and "no verdict within the timeout" in err, err
    assert err.count("event stream answered 503; asking again in 1 s") == 1 and "lost the watcher" not in err, err
    assert fake.stream_requests <= 3  # at 0 s, 1 s (and the deadline); every 0.2 s would be 9


@pytest.mark.parametrize(("value", "seconds"), [(None, 0.0), ("", 0.0), ("10", 10.0), ("0.5", 0.5), ("-3", 0.0),
                                                ("nan", 0.0), ("1e9", 60.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])  # fmt: skip
def test_retry_after_is_read_as_bounded_seconds(value: str | None, seconds: float) -> None:
    assert reader.retry_after(value) == seconds


def test_the_help_says_timeout_is_the_longest_wait(capsys: pytest.CaptureFixture[str]) -> None:
    """`rollout status --help`: --timeout is the longest wait, whatever the watcher sends."""
    with pytest.raises(SystemExit):
        cli.main(["rollout", "status", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--timeout SECONDS the longest wait (default 600): exit 3 at the latest" in out
    assert "whatever the watcher sends meanwhile" in out


async def test_a_watcher_back_after_a_loss_times_out_as_3(
    aiohttp_client: AiohttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watcher went away and came back: no verdict at the timeout is exit 3, not "still unreachable" (4)."""
    monkeypatch.setattr(rollout, "RETRY_SECONDS", 0.1)  # back within the timeout, with time to spare
    url, side = await served(aiohttp_client)
    side.submit(reported("1.0.0", "in_progress", NOW))
    waiting = asyncio.create_task(
        run_cli("rollout", "status", "api", "--version", "9.9.9", "--url", url, "--timeout", "1")
    )
    # The stream drops the client (as one too far behind), which reconnects.
    await later(side)
    for follower in list(side.stream._clients):
        side.stream._drop(follower, "too far behind")
    code, _, err = await waiting
    assert "lost the watcher" in err and "the watcher answers again" in err
    assert code == 3 and "no verdict within the timeout" in err


# -- answers that cannot be read: exit 4, one line


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Fake:
    """A server that answers what a test sets: per path, and the event stream's bytes (then it ends)."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.stream = b""
        self.keepalives = False  # the stream: then a comment every 50 ms, for ever
        self.trickle = False  # the stream: then an event that never ends, a byte every 50 ms
        self.stream_answer: Answer | None = None  # the stream's answer instead (a 503 of a full stream)
        self.stream_requests = 0
        self.last_event_ids: list[str | None] = []  # each stream request's Last-Event-ID
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.partition("?")[0]
                if path == "/api/v1/events":
                    fake.stream_requests += 1
                    fake.last_event_ids.append(self.headers.get("Last-Event-ID"))
                    answer = fake.stream_answer or Answer(
                        body=fake.stream, headers={"Content-Type": "text/event-stream"}
                    )
                else:
                    answer = fake.answers.get(path, Answer(404, b'{"error":"no"}'))
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                endless = path == "/api/v1/events" and answer.status == 200 and (fake.keepalives or fake.trickle)
                if not endless:
                    self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body + (b"event: rollout_finished\ndata: " if fake.trickle else b""))
                while endless:
                    try:
                        self.wfile.write(b": keepalive\n\n" if fake.keepalives else b" ")
                        self.wfile.flush()
                    except OSError:
                        return  # the client left
                    time.sleep(0.05)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Quiet(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client cut at its deadline breaks the pipe: no traceback in the stderr a test reads

        self.server = Quiet(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[Fake]:
    made = Fake()
    try:
        yield made
    finally:
        made.close()


ROW = {
    "name": "api", "environment": "production", "status": "in_progress", "revision": 1, "version": "1.0.0",
    "commit": "c", "image": "i", "rollback": False, "reason": "", "judge": "containers", "started_at": NOW,
    "finished_at": None, "duration_seconds": None, "healthy": True, "health_checks": {"containers_running": True},
    "instances": {"current": 1, "running": 1}, "cpu_seconds": 0.5, "memory_bytes": 1024.0, "rollbacks": 0,
    "gone_since": None, "last_versions": ["1.0.0"], "removed": False,
}  # fmt: skip
CHECK = {"name": "error_rate", "query": "q", "min": None, "max": 0.02, "max_increase": None, "baseline": "+Inf",
         "current": 0.5, "measurements": {"pass": 0, "fail": 1, "nodata": 0, "error": 0}, "last": "fail"}  # fmt: skip
ANALYSIS = {"mode": "gate", "status": "running", "measuring_since": NOW, "ends_at": NOW + 300, "reason": "",
            "failures": 1, "failure_limit": 2, "rollback": False, "rollback_done": False, "checks": [CHECK]}  # fmt: skip
DETAIL = "/api/v1/deployments/production/api"
LIST = "/api/v1/deployments"


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def cannot_tell(code: int, err: str) -> None:
    """Exit 4 and one line saying why, no traceback."""
    assert code == 4, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "cannot tell" in err


def cli_quietly(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        (DETAIL, Answer(body=as_json({"name": "api"}))),
        (DETAIL, Answer(body=b"<html>a proxy's page</html>")),
        (DETAIL, Answer(body=as_json({**ROW, "revision": "1"}))),
        (DETAIL, Answer(body=as_json({**ROW, "rollback": None}))),
        (DETAIL, Answer(body=as_json({**ROW, "analysis": {"mode": "gate", "status": "running"}}))),
        (DETAIL, Answer(body=as_json({**ROW, "analysis": {**ANALYSIS, "checks": [{**CHECK, "current": "lots"}]}}))),
        (DETAIL, Answer(body=as_json([ROW]))),
        (DETAIL, Answer(404, b"<html>Not Found</html>")),
        (DETAIL, Answer(body=as_json(ROW), headers={"Deployment-Watcher-Max-Value-Length": "many"})),
        (DETAIL, Answer(body=as_json(ROW), headers={"Deployment-Watcher-Ready": "perhaps"})),
        (LIST, Answer(body=as_json({"deployments": "api"}))),
        (LIST, Answer(body=as_json({"deployments": [{**ROW, "version": 1.0}]}))),
        (LIST, Answer(body=as_json({"deployments": ["api"]}))),
        (LIST, Answer(body=as_json({}))),
        (LIST, Answer(body=b"\xff\xfe")),
    ],
)
def test_an_answer_that_cannot_be_read_is_exit_4(fake: Fake, path: str, answer: Answer) -> None:
    """Valid JSON missing fields, wrong types, not JSON: `rollout status` cannot tell, exit 4 in one line (a
    traceback and exit 1, "failed", before)."""
    fake.answers[path] = answer
    environment = ("--environment", "production") if path == DETAIL else ()
    cannot_tell(*cli_quietly("rollout", "status", "api", *environment, "--url", fake.url, "--timeout", "5")[::2])


@pytest.mark.parametrize(
    "data",
    [
        b'{"event":"rollout_finished","environment":"production","deployment":"api"}',
        b'{"event":"rollout_finished","environment":"production"}',
        b'{"event":"rollout_finished","environment":7,"deployment":null}',
        b"not json",
        b"[1, 2]",
    ],
)
def test_an_event_that_cannot_be_read_is_exit_4(fake: Fake, data: bytes) -> None:
    """On the stream too: `deployment` a string, missing, the environment a number, data not a JSON object."""
    fake.answers[DETAIL] = Answer(body=as_json(ROW))
    fake.stream = b"id: r.1\nevent: rollout_finished\ndata: " + data + b"\n\n"
    cannot_tell(*cli_quietly("rollout", "status", "api", "--environment", "production", "--url", fake.url,
                             "--timeout", "5")[::2])  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [
        as_json({"deployments": [{"name": "api"}]}),
        as_json({"deployments": [{**ROW, "health_checks": ["containers_running"]}]}),
        as_json({"deployments": [{**ROW, "last_versions": [1]}]}),
        as_json({"deployments": [{**ROW, "started_at": "yesterday"}]}),
        b'{"deployments": [' + as_json(ROW)[:-1] + b', "cpu_seconds": NaN}]}',
        as_json({"deployments": {}}),
        b"<html>",
    ],
)
def test_a_list_that_cannot_be_read_is_exit_4_for_status(fake: Fake, body: bytes) -> None:
    """`status` too: exit 4 in one line, no traceback."""
    fake.answers[LIST] = Answer(body=body)
    cannot_tell(*cli_quietly("status", "--url", fake.url)[::2])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(
    st.one_of(
        JSON,
        st.builds(lambda key, value: {**ROW, key: value}, st.sampled_from(sorted(ROW)), JSON),
        st.builds(lambda key: {k: v for k, v in ROW.items() if k != key}, st.sampled_from(sorted(ROW))),
    )
)
@settings(max_examples=examples(300), deadline=None)
def test_any_json_is_a_summary_a_row_or_unparseable(value: Any) -> None:
    """Whatever JSON a watcher (or a proxy) answers: a typed value or Unparseable, never another exception."""
    for parse in (lambda v: answers.summary(v, "it"), lambda v: status.parse(answers.an_object(v, "it"), "it"),
                  lambda v: answers.rows(v, "it")):  # fmt: skip
        with contextlib.suppress(reader.Unparseable):
            parse(value)


def test_any_answer_to_the_cli_is_a_verdict_or_exit_4(fake: Fake) -> None:
    """Through the command line: any JSON as one deployment, or as the list, ends in one line on stderr, exit 4
    (or, for a well-formed answer, a verdict or the timeout); never a traceback."""

    @given(body=JSON, mutated=st.builds(lambda key, value: {**ROW, key: value}, st.sampled_from(sorted(ROW)), JSON))
    @settings(max_examples=examples(40), deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def answers_cleanly(body: Any, mutated: dict[str, Any]) -> None:
        fake.answers[DETAIL] = Answer(body=as_json(mutated))
        fake.answers[LIST] = Answer(body=as_json(body))
        code, _, err = cli_quietly("rollout", "status", "api", "--environment", "production", "--url", fake.url,
                                   "--timeout", "0.2")  # fmt: skip
        assert code in (0, 1, 3, 4) and "Traceback" not in err, err
        if "cannot tell" in err:
            cannot_tell(code, err)
        code, _, err = cli_quietly("status", "--url", fake.url)
        assert code in (0, 4) and "Traceback" not in err, err
        if code == 4:
            assert len(err.splitlines()) == 1, err

    answers_cleanly()


# -- names as the watcher makes them


def from_labels(cid: str, at: float, settings: Settings, **given: str) -> InstanceSeen:
    """A started container whose identity the watcher made of its labels (cleaned, cut to the limit)."""
    parsed = labels.parse(
        {f"deployment.{k}": v for k, v in given.items()}, image="shop/api:x", image_id="sha256:0", created_at=at,
        now=at, settings=settings.labels,
    )  # fmt: skip
    assert parsed.identity is not None
    return InstanceSeen(at, Instance(id=cid, identity=parsed.identity, running=True, running_since=at))


@pytest.mark.parametrize("environment", [(), ("--environment", "production")], ids=["the list", "one deployment"])
async def test_a_name_longer_than_the_labels_limit_is_found(aiohttp_client: AiohttpClient,
                                                            environment: tuple[str, ...]) -> None:  # fmt: skip
    """The watcher cuts label values to labels.max_value_length (here 16): the gate asks with the whole name and
    version, and finds the deployment the watcher made of them (it waited for ever before)."""
    short = dataclasses.replace(SETTINGS, labels=dataclasses.replace(SETTINGS.labels, max_value_length=16))
    url, side = await served(aiohttp_client, settings=short)
    name, version = "checkout-payments-eu-west", "2024.06.01-build.1234"
    side.submit(from_labels("a", NOW, short, name=name, version=version, environment="production"))
    assert [key.name for key in side.core.state.deployments] == ["checkout-payment"]
    waiting = asyncio.create_task(
        run_cli("rollout", "status", name, *environment, "--version", version, "--url", url, "--timeout", "10")
    )
    await later(side, Tick(NOW + 11))
    code, out, err = await waiting
    assert code == 0, err
    assert out.splitlines()[-1] == "checkout-payment/production: revision 1 (2024.06.01-build) succeeded"

"""`rollout status` and `status` against an in-process watcher: the verdicts and their exit codes,
the lines printed, the gate's logic; the real process and daemon are in tests/integration/test_read_side.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from pytest_aiohttp import AiohttpClient

from tests.conftest import free_port
from tests.polling import poll_async
from tests.unit.readside import NOW, ReadSide, read_side
from tests.unit.test_state import reported, started
from watcher import cli
from watcher.clients import reader, rollout, status
from watcher.config.webconfig import WebConfig
from watcher.domain.model import DeploymentKey
from watcher.domain.observations import InstanceExited, InstanceGone, Tick
from watcher.web import views


def summary(revision: int, version: str, state: str, *, rollback: bool = False, reason: str = "") -> dict[str, Any]:
    return {"revision": revision, "version": version, "status": state, "rollback": rollback, "reason": reason}


def test_the_gate_waits_for_the_current_rollout() -> None:
    """Without --version: the rollout current at the first read; its verdict decides."""
    gate = rollout.Gate(None)
    assert gate.judge(summary(3, "1.0", "in_progress")) is None and gate.revision == 3
    assert gate.judge(summary(3, "1.0", "success")) == rollout.Verdict(0, "revision 3 (1.0) succeeded")
    assert gate.judge(summary(3, "1.0", "failed", reason="boom")) == rollout.Verdict(1, "revision 3 (1.0) failed: boom")


def test_the_gate_waits_for_the_version_asked_for() -> None:
    """With --version: older rollouts are not it; the first rollout of that version is."""
    gate = rollout.Gate("2.0")
    assert gate.judge(None) is None
    assert gate.judge(summary(1, "1.0", "success")) is None and gate.revision is None
    assert gate.judge(summary(2, "2.0", "in_progress")) is None and gate.revision == 2
    assert gate.judge(summary(2, "2.0", "success")).code == 0  # type: ignore[union-attr]


def test_replaced_or_rolled_back_or_gone_is_a_failure() -> None:
    """A later rollout before the verdict: 1, saying whether it was a rollback; the deployment gone: 1."""
    gate = rollout.Gate(None)
    gate.judge(summary(3, "2.0", "in_progress"))
    assert gate.judge(summary(4, "1.0", "in_progress", rollback=True)) == rollout.Verdict(
        1, "rolled back to 1.0 (revision 4)"
    )
    assert gate.judge(summary(4, "3.0", "in_progress")) == rollout.Verdict(
        1, "replaced by 3.0 (revision 4) before it succeeded"
    )
    assert gate.judge(None).code == 1  # type: ignore[union-attr]
    assert gate.judge(summary(2, "1.0", "success")) is None  # an older read: not a verdict


def test_server_sent_events_are_parsed() -> None:
    """Fields, multi-line data, comments and the blank line that ends an event."""
    raw = b'retry: 2000\n\n: keepalive\n\nid: r.1\nevent: rollout_started\ndata: {"a":\ndata: 1}\n\nid: r.2\n'
    response: Any = io.BytesIO(raw)
    events = list(reader.Events(connection=None, response=response))  # type: ignore[arg-type]
    assert events == [reader.Event("r.1", "rollout_started", {"a": 1})]


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
    """A rollout in progress that then succeeds: a line per change, exit 0."""
    url, side = await served(aiohttp_client)
    side.submit(started("a", "1.0.0", NOW))
    waiting = asyncio.create_task(run_cli("rollout", "status", "api", "--url", url, "--timeout", "10"))
    await later(side, Tick(NOW + 11))
    code, out, err = await waiting
    assert code == 0, err
    assert out.splitlines() == [
        "api/production: revision 1 (1.0.0) in progress",
        "api/production: revision 1 (1.0.0) success",
        "api/production: revision 1 (1.0.0) succeeded",
    ]


async def test_failure_exits_1(aiohttp_client: AiohttpClient) -> None:
    """A crash: exit 1 with the reason."""
    url, side = await served(aiohttp_client)
    side.submit(started("a", "1.0.0", NOW))
    waiting = asyncio.create_task(
        run_cli("rollout", "status", "api", "--environment", "production", "--url", url, "--timeout", "10")
    )
    await later(side, InstanceExited(NOW + 1, "a", 3))
    code, out, _ = await waiting
    assert code == 1
    assert out.splitlines()[-1] == "api/production: revision 1 (1.0.0) failed: container a exited with code 3"


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
    code, _, err = await run_cli("rollout", "status", "api", "--url", url, "--timeout", "0.5")
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
    for name in views.EVENT_NAMES:
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

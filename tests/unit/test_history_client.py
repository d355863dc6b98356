"""`rollout history`, `status --watch` and tables cut to the terminal's width, against an in-process watcher
(and a fake one for a lost stream); the real process is in tests/integration/test_history.py."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import time
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from tests.polling import poll_async
from tests.unit.builders import reported, started
from tests.unit.readside import NOW
from tests.unit.test_rollout_client import LIST, ROW, Answer, Fake, as_json, fake, run_cli, served
from watcher import cli
from watcher.clients import columns, history, reader, status
from watcher.domain.model import DeploymentKey
from watcher.domain.observations import InstanceExited, Tick

__all__ = ["fake"]  # the fixture, used by name

LONG = "a-deployment-with-a-name-much-longer-than-any-terminal-would-want-to-show-in-one-row"


def test_a_table_is_cut_to_the_width_the_columns_that_may_give_way_first() -> None:
    """Cut columns end in "…"; the others keep their width; without a width nothing is cut."""
    rows = [(LONG, "production", "success"), ("api", "staging", "failed")]
    whole = columns.table(("NAME", "ENVIRONMENT", "STATUS"), rows, width=None, shrink=(0,))
    assert LONG in whole
    cut = columns.table(("NAME", "ENVIRONMENT", "STATUS"), rows, width=40, shrink=(0,))
    assert all(len(line) <= 40 for line in cut.splitlines())
    assert cut.splitlines()[1].split()[0].endswith("…") and "production" in cut
    assert columns.table(("A",), [("x" * 50,)], width=12).splitlines()[1] == "x" * 11 + "…"
    assert columns.cut("abc", 3) == "abc" and columns.cut("abcd", 3) == "ab…"


def test_not_a_terminal_has_no_width() -> None:
    assert columns.terminal_width(io.StringIO()) is None


def test_durations() -> None:
    assert [history.duration(s) for s in (None, 3, 2.5, 11.4, 150, 3725)] == ["-", "3s", "2.5s", "11s", "2m30s",
                                                                             "1h02m"]  # fmt: skip


async def three_rollouts(aiohttp_client: AiohttpClient) -> str:
    """A watcher that saw 1.0.0 succeed, 2.0.0 fail and 1.0.0 again, in progress."""
    url, side = await served(aiohttp_client)
    side.submit(started("a", "1.0.0", NOW), Tick(NOW + 11))
    side.submit(started("b", "2.0.0", NOW + 20), InstanceExited(NOW + 25, "b", 3))
    side.submit(started("c", "1.0.0", NOW + 30))
    return url


async def test_rollout_history_lists_every_revision_newest_first(aiohttp_client: AiohttpClient) -> None:
    """`rollout history NAME`: a line per revision (a version deployed again is a new one), exit 0."""
    url = await three_rollouts(aiohttp_client)
    code, out, err = await run_cli("rollout", "history", "api", "--url", url)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "api/production"
    assert lines[1].split() == list(history.HEADINGS)
    assert [line.split()[:4] for line in lines[2:]] == [
        ["3", "1.0.0", "in_progress", "(rollback)"], ["2", "2.0.0", "failed", "5s"], ["1", "1.0.0", "success", "11s"],
    ]  # fmt: skip
    assert lines[3].endswith("container b exited with code 3")
    code, again, _ = await run_cli("rollout", "history", "api", "--environment", "production", "--url", url)
    assert code == 0 and again.splitlines()[2:] == lines[2:]


async def test_rollout_history_of_an_unknown_deployment(aiohttp_client: AiohttpClient) -> None:
    """Not shown by the watcher: exit 1 and one line, as `rollout` says its errors; in several environments and
    none given: exit 2, as `rollout status`."""
    url, side = await served(aiohttp_client)
    side.submit(reported("1.0", "success", NOW), reported("1.0", "success", NOW, key=DeploymentKey("api", "staging")))
    code, out, err = await run_cli("rollout", "history", "nope", "--url", url)
    assert (code, out) == (1, "") and err == "deployment-watcher rollout: no deployment 'nope'\n"
    code, _, err = await run_cli("rollout", "history", "api", "--environment", "qa", "--url", url)
    assert code == 1 and err == "deployment-watcher rollout: no deployment 'api' in environment 'qa'\n"
    code, _, err = await run_cli("rollout", "history", "api", "--url", url)
    assert code == 2 and "several environments (production, staging): pass --environment" in err


def test_rollout_history_that_cannot_be_read_is_exit_4(fake: Fake) -> None:
    fake.answers[LIST] = Answer(body=as_json({"deployments": [ROW]}))
    fake.answers["/api/v1/deployments/production/api"] = Answer(body=as_json(ROW))  # no revisions: an older watcher
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["rollout", "history", "api", "--url", fake.url])
    assert code == 4 and "has no 'revisions'" in err.getvalue()


async def test_names_are_cut_to_the_terminal_width(
    aiohttp_client: AiohttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal of 80 columns `status` and `rollout history` fit it, a long name cut with "…"; to a pipe,
    the name is whole."""
    url, side = await served(aiohttp_client)
    side.submit(reported("1.0.0", "failed", NOW, key=DeploymentKey(LONG, "production")))
    _, piped, _ = await run_cli("status", "--url", url)
    assert LONG in piped
    monkeypatch.setattr(columns, "terminal_width", lambda stream=None: 80)
    _, out, _ = await run_cli("status", "--url", url)
    assert all(len(line) <= 80 for line in out.splitlines()) and LONG not in out and "…" in out
    _, out, _ = await run_cli("rollout", "history", LONG, "--url", url)
    assert all(len(line) <= 80 for line in out.splitlines()) and out.splitlines()[0].endswith("…")


class Stopping(status.Watch):
    """A watch that stops (as SIGTERM does) once ``enough()`` says so after a draw or a connection."""

    def __init__(self, *args: Any, enough: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.enough = enough

    def _draw(self) -> None:
        super()._draw()
        if self.enough(self):
            raise status.Stopped

    def _follow(self) -> bool:
        if self.enough(self):
            raise status.Stopped
        return super()._follow()


async def test_status_watch_redraws_on_stream_events(aiohttp_client: AiohttpClient) -> None:
    """`status --watch`: the table once, then again at each change the stream tells of (no polling), until stopped."""
    url, side = await served(aiohttp_client)
    side.submit(started("a", "1.0.0", NOW))
    out = io.StringIO()
    args = status.parser().parse_args(["--watch", "--url", url])
    watch = Stopping(reader.Watcher.from_flags(args), None, timeout=5, out=out, clock=lambda: NOW + 20,
                     enough=lambda w: "success" in w.shown and "staging" in w.shown)  # fmt: skip
    watching = asyncio.create_task(asyncio.to_thread(status.until_stopped, watch))

    async def following() -> bool:
        return bool(side.stream.clients)

    await poll_async("the watch following the stream", following, timeout=60, interval=0.01)
    side.submit(Tick(NOW + 11))
    side.submit(reported("9.0", "in_progress", NOW + 12, key=DeploymentKey("web", "staging")))
    assert await asyncio.wait_for(watching, 30) == 0
    tables = [t for t in out.getvalue().split("\n\n") if t.strip()]
    assert tables[0].splitlines()[1].split()[:3] == ["api", "production", "in_progress"]
    assert tables[-1].splitlines()[1].split()[:3] == ["api", "production", "success"]
    assert tables[-1].splitlines()[2].split()[:3] == ["web", "staging", "in_progress"]


EVENT = (b"id: r1.7\nevent: rollout_finished\ndata: "
         + as_json({"event": "rollout_finished", "name": "api", "environment": "production",
                    "deployment": {**ROW, "status": "success"}}) + b"\n\n")  # fmt: skip


def test_status_watch_reconnects_with_the_last_event_id(fake: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    """A stream that ends is reconnected to with Last-Event-ID: the id of the last event applied."""
    fake.answers[LIST] = Answer(body=as_json({"deployments": [ROW]}), headers={"Deployment-Watcher-Event-Id": "r1.5"})
    fake.stream = EVENT
    out = io.StringIO()
    watcher = reader.Watcher.from_flags(status.parser().parse_args(["--url", fake.url]))
    watch = Stopping(watcher, None, timeout=5, out=out, retry_seconds=0.01, enough=lambda w: fake.stream_requests >= 3)
    assert status.until_stopped(watch) == 0
    assert fake.last_event_ids[:3] == ["r1.5", "r1.7", "r1.7"]
    assert "reconnecting" in capsys.readouterr().err
    assert "success" in out.getvalue().split("\n\n")[1]


def test_status_watch_ends_cleanly_on_sigterm_and_ctrl_c() -> None:
    """SIGTERM and Ctrl-C end a watch with exit 0 (and the previous SIGTERM handler is back)."""
    before = signal.getsignal(signal.SIGTERM)

    def terminated() -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return 9

    def interrupted() -> int:
        raise KeyboardInterrupt

    began = time.monotonic()
    assert status.until_stopped(terminated) == 0 and time.monotonic() - began < 4  # type: ignore[arg-type]
    assert status.until_stopped(interrupted) == 0  # type: ignore[arg-type]
    assert signal.getsignal(signal.SIGTERM) == before


def test_status_watch_of_an_unreachable_watcher_is_exit_4(fake: Fake) -> None:
    fake.close()
    watcher = reader.Watcher.from_flags(status.parser().parse_args(["--url", fake.url]))
    assert status.until_stopped(status.Watch(watcher, None, timeout=1)) == 4

"""Log lines that stay few under a flood, and the event loop's accept errors counted and told once."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from watcher.selfmetrics import SelfMetrics
from watcher.web.limits import ACCEPT_MESSAGE, OncePerKind, accept_errors, accept_errors_counted


def test_a_kind_is_logged_once_then_once_a_minute_with_its_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    lines = OncePerKind(logging.getLogger("test"), logging.WARNING, clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, "test")
    for at in (0, 1, 2, 30, 59.9, 60, 61, 200):
        now[0] = at
        lines.log("a", "refused %s", "x")
    lines.log("b", "refused %s", "y")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "refused x", "refused x (4 more since the last such line)", "refused x (1 more since the last such line)",
        "refused y",
    ]  # fmt: skip
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 5


def context(error: BaseException, message: str = ACCEPT_MESSAGE) -> dict[str, Any]:
    return {"message": message, "exception": error, "socket": "<the listening socket>"}


async def test_accept_errors_are_counted_and_told_once(caplog: pytest.LogCaptureFixture) -> None:
    """EMFILE from the accept loop, 300 times: one ERROR line without a traceback, a count of 300; anything
    else goes to the loop's default handler as before."""
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)
    loop = asyncio.get_running_loop()
    emfile = OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    with accept_errors_counted(metrics.accept_errors):
        for _ in range(300):
            loop.call_exception_handler(context(emfile))
        loop.call_exception_handler(context(ValueError("other"), message="Exception in callback"))
    assert loop.get_exception_handler() is None
    assert registry.get_sample_value("deployment_watcher_http_accept_errors_total", {"kind": "EMFILE"}) == 300
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().splitlines()[0].split(";")[0] for r in errors] == [
        "cannot accept connections: Too many open files (EMFILE)", "Exception in callback",
    ]  # fmt: skip
    assert errors[0].exc_info is None and errors[1].exc_info is not None


def test_other_accept_errors_go_to_the_default_handler() -> None:
    """An accept error of no known kind is the loop's default handler's, as before."""
    seen: list[dict[str, Any]] = []

    class Loop:
        def default_exception_handler(self, context: dict[str, Any]) -> None:
            seen.append(context)

    handle = accept_errors(SelfMetrics(CollectorRegistry()).accept_errors)
    odd = context(OSError(errno.EPERM, "Operation not permitted"))
    handle(Loop(), odd)  # type: ignore[arg-type]
    assert seen == [odd]

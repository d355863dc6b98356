"""The tests' one polling helper: it returns the value that will do, or fails saying what it waited for."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.polling import poll, poll_async


def test_poll_returns_the_first_value_that_will_do() -> None:
    """Values that will not do are polled past; the one that does is returned."""
    counter = itertools.count()
    assert poll("three", lambda: next(counter), timeout=5, interval=0.001, until=lambda n: n >= 3) == 3


def test_poll_fails_with_what_the_timeout_and_the_last_value() -> None:
    """At the deadline the failure names what was awaited, the timeout and the value seen last."""
    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s waiting for a miracle; last seen: 'no'"):
        poll("a miracle", lambda: "no", timeout=0.05, interval=0.01, until=lambda answer: answer == "yes")


def test_poll_retries_only_the_given_errors() -> None:
    """An error in ``retry_on`` counts as not yet, and is the last thing seen; any other fails at once."""

    def refused() -> bool:
        raise ConnectionRefusedError("not listening")

    with pytest.raises(AssertionError, match=r"last error: ConnectionRefusedError\('not listening'\)"):
        poll("a server", refused, timeout=0.05, interval=0.01, retry_on=(OSError,))
    with pytest.raises(ConnectionRefusedError):
        poll("a server", refused, timeout=5)


async def test_poll_async_cancels_a_check_that_hangs() -> None:
    """An async check still running at the deadline is cancelled, and the wait fails."""

    async def hangs() -> bool:
        await asyncio.sleep(3600)
        return True

    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s waiting for an answer; nothing yet"):
        await poll_async("an answer", hangs, timeout=0.05)

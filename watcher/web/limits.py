"""What the HTTP server does when clients ask for more than it can give: log lines that stay few
under a flood, and the event loop's accept errors (a descriptor limit reached) told once, without
a traceback per connection.

Python's accept loop (``asyncio.selector_events``) reports each failed ``accept()`` to the loop's
exception handler, whose default logs a traceback, and on EMFILE keeps trying the rest of its
backlog: 128 tracebacks per wake-up, tens of thousands a minute, while the listening socket
retries every second. Counted and logged here instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import Counter

from watcher.selfmetrics import ACCEPT_ERRORS

log = logging.getLogger(__name__)

ACCEPT_MESSAGE = "socket.accept() out of system resource"  # asyncio's context message for them
REPEAT_SECONDS = 60.0  # a kind that keeps happening is logged again at most this often, with its count
# Descriptors the watcher needs besides event streams: its own files and sockets (about 20 idle),
# scrapes, API calls, board loads, the Docker connections (inspects, stats), the state file's saves.
DESCRIPTORS_BESIDES_STREAMS = 64


class OncePerKind:
    """The first line of each kind at ``level``, then at most one per REPEAT_SECONDS with how many
    there were meanwhile (the others at debug): a flood makes a few lines, not one per request."""

    def __init__(
        self, logger: logging.Logger, level: int, *, repeat: float = REPEAT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._log = logger
        self._level = level
        self._repeat = repeat
        self._clock = clock
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def log(self, kind: str, message: str, *args: object) -> None:
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._repeat:
            self._since[kind] = self._since.get(kind, 0) + 1
            self._log.debug(message, *args)
            return
        self._last[kind] = now
        more = self._since.pop(kind, 0)
        suffix = f" ({more} more since the last such line)" if more else ""
        self._log.log(self._level, message + suffix, *args)


def accept_errors(counter: Counter) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event loop exception handler: accept errors counted by kind and logged once per kind (as
    OncePerKind says); everything else to the loop's default handler."""
    lines = OncePerKind(log, logging.ERROR)

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        kind = errno.errorcode.get(error.errno or 0, "") if isinstance(error, OSError) else ""
        if not isinstance(error, OSError) or context.get("message") != ACCEPT_MESSAGE or kind not in ACCEPT_ERRORS:
            loop.default_exception_handler(context)
            return
        counter.labels(kind).inc()
        lines.log(kind, "cannot accept connections: %s (%s); new clients wait until descriptors are free "
                  "(see deployment_watcher_http_accept_errors_total)", error.strerror, kind)  # fmt: skip

    return handle


@contextlib.contextmanager
def accept_errors_counted(counter: Counter) -> Iterator[None]:
    """``accept_errors`` as the running loop's exception handler meanwhile."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(accept_errors(counter))
    try:
        yield
    finally:
        loop.set_exception_handler(previous)


def check_descriptors(max_stream_clients: int) -> None:
    """Warn at start-up when full event streams would leave the rest of the watcher too few descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and max_stream_clients + DESCRIPTORS_BESIDES_STREAMS > soft:
        log.warning("web.max_stream_clients (%d) leaves fewer than %d of the process's %d file descriptors "
                    "(ulimit -n) for everything else: lower it or raise the limit", max_stream_clients,
                    DESCRIPTORS_BESIDES_STREAMS, soft)  # fmt: skip

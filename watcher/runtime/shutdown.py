"""Stopping within a bound: the signals, the bounded shutdown, and a report of what did not end.

An always-on service must stop when told to, whatever hangs: a task that ignores its
cancellation, a thread stuck in a system call, a client that never finishes its request. The
first SIGTERM, SIGINT or SIGHUP starts the shutdown; if it has not finished after its bound, or SIGINT
arrives meanwhile (Ctrl-C again), ``bounded`` logs at ERROR every task still pending with the
chain of awaits it is stuck in (and the stack of each busy thread) and raises
``ShutdownIncomplete``. Only the process can then end: whatever is stuck would also hang
``asyncio.run``'s own cleanup and the interpreter's exit, which wait for every task and thread.
SIGTERM while stopping never forces: supervisors repeat it (``timeout`` signals the process and
then its whole process group), and the bound ends the stop anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Collection, Coroutine, Iterable, Iterator
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

# SIGHUP (a closed terminal, a "reload") stops too: its default action kills the process before
# the final save. There is nothing to reload: settings are read once, and a restart reads them.
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
FORCING = signal.SIGINT  # while stopping: a person at a terminal, pressing Ctrl-C again


class ShutdownIncomplete(Exception):
    """The shutdown did not finish: its bound passed, or SIGINT while stopping forced the exit."""


@contextlib.contextmanager
def signals(*, stop: asyncio.Event, force: asyncio.Event) -> Iterator[None]:
    """While inside: SIGTERM, SIGINT or SIGHUP sets ``stop``; SIGINT once ``stop`` is set sets ``force``."""
    loop = asyncio.get_running_loop()

    def received(signum: signal.Signals) -> None:
        if not stop.is_set():
            log.info("%s received", signum.name)
            stop.set()
        elif signum == FORCING:
            log.warning("%s received while stopping: forcing the exit", signum.name)
            force.set()
        else:
            log.info("%s received while stopping: the stop goes on (%s forces the exit)", signum.name, FORCING.name)

    installed = []
    for signum in SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(signum, received, signum)
            installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


async def bounded(
    shutdown: Coroutine[Any, Any, None],
    *,
    timeout: float,
    force: asyncio.Event,
    busy_threads: Callable[[], Iterable[threading.Thread]] = tuple,
) -> None:
    """Run ``shutdown`` for at most ``timeout`` seconds, or until ``force`` is set.

    Raises what ``shutdown`` raised; ``ShutdownIncomplete`` after logging what is still pending
    (every other task, and ``busy_threads()``) when it did not finish. It is then cancelled,
    but not awaited: it may not end.
    """
    task = asyncio.create_task(shutdown, name="shutdown")
    forced = asyncio.create_task(force.wait(), name="second signal")
    try:
        await asyncio.wait((task, forced), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        forced.cancel()
    if task.done():
        return task.result()
    why = "was forced by a second signal" if force.is_set() else f"did not finish within {timeout:g} s"
    log.error("the shutdown %s; still pending:\n%s", why, report(busy_threads(), besides=(forced,)))
    task.cancel()
    raise ShutdownIncomplete(f"the shutdown {why}")


def report(threads: Iterable[threading.Thread], *, besides: Collection[asyncio.Task[Any]] = ()) -> str:
    """Every task but the current one and ``besides``, with the chain of awaits it is suspended
    in; then the stack of each of ``threads``."""
    skip = {asyncio.current_task(), *besides}
    parts = [
        f"task {task.get_name()!r}:\n{_awaits(task)}"
        for task in sorted(asyncio.all_tasks(), key=asyncio.Task.get_name)
        if task not in skip
    ]
    frames = sys._current_frames()
    for thread in threads:
        frame = frames.get(thread.ident) if thread.ident is not None else None
        stack = traceback.format_stack(frame) if frame is not None else ["  (not running)\n"]
        parts.append(f"thread {thread.name!r}:\n{''.join(stack)}")
    return "".join(parts).rstrip("\n") or "nothing"


def _awaits(task: asyncio.Task[Any]) -> str:
    """The frames from the task's coroutine down to its innermost await.

    ``Task.get_stack`` gives only the outermost frame of a suspended coroutine: where it waits
    is at the end of the ``cr_await`` chain.
    """
    frames: list[tuple[FrameType, int]] = []
    awaitable: Any = task.get_coro()
    while (frame := getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)) is not None:
        frames.append((frame, frame.f_lineno))
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return "".join(traceback.StackSummary.extract(frames).format())

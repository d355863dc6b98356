"""The state saver: the state file loaded at start, saved on change (debounced), at stop, and retried.

Saves run in one writer thread, so a save still running when the watcher stops ends before the
final one, and the event loop never waits for a disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import NoReturn

from watcher import heap
from watcher.config import StorageSettings
from watcher.domain.machine import NO_CHANGES, Changes, Step
from watcher.domain.model import State
from watcher.persistence.statefile import StateFile, state_directory
from watcher.selfmetrics import SelfMetrics

log = logging.getLogger(__name__)

SAVE_RETRY_SECONDS = 5.0  # after a failed save (full or read-only disk), even with no new change
WRITER_THREAD = "state-file"


class StateSaver:
    """Where the state is kept across restarts, if anywhere (``storage.directory``)."""

    def __init__(self, storage: StorageSettings, *, metrics: SelfMetrics) -> None:
        self._storage = storage
        directory = state_directory(storage.directory)
        self.state_file = StateFile(directory, metrics=metrics, max_bytes=storage.max_file_bytes) if directory else None
        if self.state_file:
            log.info("state file: %s", self.state_file.path)
            self.state_file.lock()  # DirectoryInUse: another watcher saves there
        else:
            log.info("no state file (storage.directory %r): nothing is kept across restarts", storage.directory)
        self.saved: State | None = None  # the state the file holds
        self._changes = NO_CHANGES  # what changed since ``saved``: the keys the next save writes
        self._snapshot: Callable[[], State] = State
        self._changed = asyncio.Event()
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=WRITER_THREAD)
        self._writing: concurrent.futures.Future[bool] | None = None  # the newest save handed to it

    def load(self) -> State | None:
        """The saved state, loaded before any source starts: the first resyncs reconcile it."""
        return self.state_file.load() if self.state_file else None

    def follow(self, snapshot: Callable[[], State]) -> Callable[[Step], None]:
        """Save what ``snapshot()`` says from now on; the listener to call with each step that changed it."""
        self._snapshot = snapshot
        self.saved = snapshot()
        return self._note

    def _note(self, step: Step) -> None:
        # The steps say which keys changed: no walk of 5,000 deployments against the saved state to find
        # the few a save writes. (immutables' maps offer no diff, and a walk of identities costs O(n).)
        self._changes |= step.changes
        self._changed.set()

    async def save_forever(self) -> NoReturn:
        """Save after a change, at most once per debounce period: changes meanwhile ride along.
        After a failed save, try again every SAVE_RETRY_SECONDS even when nothing changes."""
        while True:
            if self._snapshot() is self.saved:
                await self._changed.wait()
            else:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
                # arrives in the same instant as the change it waits for, and the loop goes on.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SAVE_RETRY_SECONDS):
                        await self._changed.wait()
            await asyncio.sleep(self._storage.debounce_seconds)
            await self.save()

    async def save(self, *, final: bool = False) -> None:
        """Save the current state, if it changed; ``final``: and fold the journal into the file (a
        watcher of an older version, which reads the file alone, may start next)."""
        self._changed.clear()
        state = self._snapshot()
        if self.state_file is None or (state is self.saved and not (final and self.state_file.journal_saves)):
            return
        changes, self._changes = self._changes, NO_CHANGES
        self._writing = self._writer.submit(self._write, self.state_file, state, changes, final)
        if await asyncio.wrap_future(self._writing):
            self.saved = state
        else:
            self._changes |= changes  # the next save writes them (it compacts: the journal was closed)

    def all_saved(self) -> bool:
        """The file holds the current state (or no state is kept)."""
        return self.state_file is None or self._snapshot() is self.saved

    def outcome(self) -> str:
        """What the saves left on disk, for the watcher's last log line."""
        if self.state_file is None:
            return f"no state kept (storage.directory: {self._storage.directory})"
        state = self._snapshot()
        if not self.all_saved():
            return f"the final save to {self.state_file.path} failed or did not finish: the state was NOT saved"
        count = len(state.deployments)
        deployments = f"{count} deployment{'' if count == 1 else 's'}"
        if not self.state_file.path.exists():  # nothing ever changed: no save was needed
            return f"nothing to save ({deployments}): {self.state_file.path} not written"
        return f"state saved to {self.state_file.path} ({deployments})"

    def close(self) -> None:
        """After the last save: nothing left for the writer to wait for."""
        self._writer.shutdown(wait=False)

    def release(self) -> None:
        """Saved for the last time: another watcher may take over the directory."""
        if self.state_file:
            self.state_file.unlock()

    def busy_threads(self) -> list[threading.Thread]:
        """What the shutdown may wait for in a thread: the writer, while it saves."""
        if self._writing is None or self._writing.done():
            return []
        return [thread for thread in threading.enumerate() if thread.name.startswith(WRITER_THREAD)]

    @staticmethod
    def _write(state_file: StateFile, state: State, changes: Changes, compact: bool) -> bool:
        """In the writer thread: the save, then a compaction's temporaries (megabytes at 1,000
        deployments) handed back to the OS, neither on the event loop."""
        compactions = state_file.compactions
        try:
            return state_file.save(state, changes, compact=compact)
        finally:
            if state_file.compactions != compactions:
                heap.release_free_memory()

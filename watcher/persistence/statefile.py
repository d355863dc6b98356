"""The state file on disk: where it lives, saves (a journal appended, the file compacted atomically now
and then), and a file that cannot be used moved aside, never a crash."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

from watcher.config.settings import StorageSettings
from watcher.domain.machine import Changes
from watcher.domain.model import State
from watcher.persistence import journal
from watcher.persistence.codec import DecodeError, Document, decode_document, encode_pieces, load
from watcher.selfmetrics import SelfMetrics

FILE_NAME = "state.json"
CLAMPED_SHOWN = 5  # numbers out of range named in the load's warning (a file may hold thousands)
LOCK_NAME = "state.lock"  # beside it: flock'ed by the watcher using the directory, with its pid and host
AUTO = "auto"  # storage.directory: the system directory when usable, else the user's state directory
DISABLED = ("", "none")  # storage.directory: keep no state across restarts
SYSTEM_DIRECTORY = Path("/var/lib/deployment-watcher")
XDG_NAME = "deployment-watcher"
# The journal is folded into a fresh state.json when it would outgrow it, or this size for a small
# fleet (whose file is kilobytes: rewriting it every few saves would cost little, but gain nothing).
MIN_JOURNAL_BYTES = 1 << 20
# What a state.json that is no regular file is, for the log line (anything else: "a special file").
_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}  # fmt: skip

log = logging.getLogger(__name__)


def state_directory(
    setting: str,
    *,
    environ: Mapping[str, str] = os.environ,
    system: Path = SYSTEM_DIRECTORY,
    home: Callable[[], Path] = Path.home,
) -> Path | None:
    """The absolute directory of the state file for ``storage.directory``; None: keep no state.

    ``auto`` is ``system`` when it is a writable directory or its parent lets it be created
    (not created here: the first save does that), else ``$XDG_STATE_HOME/deployment-watcher``,
    by default ``~/.local/state/deployment-watcher``: never the directory the watcher happened
    to start in. Any other value is that directory, relative to the working directory.
    """
    if setting.lower() in DISABLED:
        return None
    if setting != AUTO:
        return Path(setting).absolute()
    if _usable(system):
        return system
    # The XDG Base Directory spec: a relative XDG_STATE_HOME is invalid and must be ignored.
    xdg = environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else home() / ".local" / "state"
    return base.absolute() / XDG_NAME


def saved_document(directory: Path) -> Document:
    """What ``directory``'s state file and journal hold, as one JSON document (the journal's saves
    replayed, a torn end dropped), for whatever reads a running watcher's state without loading it
    (tests, tools): nothing is checked beyond JSON, moved or removed. OSError, DecodeError."""
    document = load((directory / FILE_NAME).read_bytes())
    with suppress(FileNotFoundError):
        document = journal.replay(document, (directory / journal.FILE_NAME).read_bytes()).document
    return document


class DirectoryInUse(Exception):
    """Another watcher holds the state directory: two would overwrite each other's state."""

    def __init__(self, directory: Path, holder: str) -> None:
        super().__init__(
            f"the state directory {directory} is in use by another watcher ({holder}): two watchers on one "
            "directory would overwrite each other's state; stop the other one, or give this one a "
            "storage.directory of its own"
        )


class _NotAStateFile(Exception):
    """state.json is something the watcher never writes: not a regular file, or too large to load."""


def _usable(directory: Path) -> bool:
    """A directory we may write in, or one we may create (its parent exists and is writable)."""
    if directory.is_dir():
        return os.access(directory, os.W_OK | os.X_OK)
    return not directory.exists() and directory.parent.is_dir() and os.access(directory.parent, os.W_OK | os.X_OK)


class StateFile:
    """``state.json`` and its journal (``watcher.persistence.journal``) in a data directory. Neither
    ``load`` nor ``save`` raises: problems are logged with the path, counted, and the watcher goes on
    (it never crash-loops on its file).

    ``save`` is blocking I/O, meant for one worker thread at a time.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        metrics: SelfMetrics,
        clock: Callable[[], float] = time.time,
        max_bytes: int = StorageSettings().max_file_bytes,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self.journal_path = self.directory / journal.FILE_NAME
        self._metrics = metrics
        self._clock = clock
        self._max_bytes = max_bytes
        self._failing = ""  # the last save error, so a lasting one is logged once, not at every change
        self._lock: BinaryIO | None = None  # the open lock file while this process holds the directory
        # The journal this process appends to, open from its first save (which compacts) on.
        self._journal: BinaryIO | None = None
        self._base_bytes = 0  # of the state.json the journal continues
        self._journal_bytes = 0
        self._journal_head = 0  # the length of its first line
        self.written = 0  # bytes the last save wrote
        self.compactions = 0  # saves that wrote state.json whole

    def lock(self) -> None:
        """Hold the directory for this process (until ``unlock``, or its end): DirectoryInUse while
        another process holds it, naming that one's pid and host (a container's pid is its own
        namespace's: the host, its container id, says which).

        flock, not a pid file: the kernel drops the lock with the process, however it ends, so a
        watcher killed with -9 leaves nothing stale behind. Where no lock file can be made (a
        read-only directory: no save can happen there either), the watcher goes on with a warning.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self._not_locked(exc)
            return
        lock = os.fdopen(fd, "r+b", buffering=0)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock.read(200).decode("utf-8", "replace").split()  # "<pid> <host>", or nothing yet
            lock.close()
            host = holder[1] if len(holder) > 1 else "?"
            raise DirectoryInUse(
                self.directory, f"pid {holder[0]} on host {host}" if holder else "pid unknown"
            ) from None
        except OSError as exc:  # ENOLCK: a network file system without locks
            lock.close()
            self._not_locked(exc)
            return
        with suppress(OSError):  # a full disk: locked all the same, the pid stays unknown
            lock.truncate(0)
            lock.write(f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._lock = lock

    def _not_locked(self, exc: OSError) -> None:
        log.warning("cannot lock the state directory %s (%s): another watcher using it would not be noticed",
                    self.directory, exc.strerror or exc)  # fmt: skip

    def unlock(self) -> None:
        """Let another watcher have the directory (after the final save)."""
        self._close_journal()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def load(self) -> State:
        """The saved state; a fresh one when there is none or it cannot be used (moved aside)."""
        self._remove_temp_files()
        try:
            data = self._read(self.path)
        except FileNotFoundError:
            log.info("no state file at %s: starting fresh", self.path)
            return State()
        except (_NotAStateFile, OSError) as exc:
            return self._unusable(_problem(exc))
        try:
            document, saves = self._replay(load(data))
            clamped: list[str] = []
            state = decode_document(document, clamped=clamped)
        except DecodeError as exc:
            return self._unusable(str(exc))
        if clamped:
            shown = "; ".join(clamped[:CLAMPED_SHOWN]) + ("; …" if len(clamped) > CLAMPED_SHOWN else "")
            log.warning("the state file %s holds %d numbers out of their ranges, read as the nearest bound "
                        "(the rest is loaded): %s", self.path, len(clamped), shown)  # fmt: skip
        replayed = f" ({saves} saves replayed from {self.journal_path})" if saves else ""
        log.info("loaded the state file %s: %d deployments%s", self.path, len(state.deployments), replayed)
        return state

    def _replay(self, document: Document) -> tuple[Document, int]:
        """``document`` with the journal's saves replayed, and how many. A torn or garbled line is
        dropped with what follows it (a WARNING, counted); a journal that cannot be read at all is
        moved aside (an ERROR, counted as an unusable file) and the file loads alone."""
        try:
            data = self._read(self.journal_path)
        except FileNotFoundError:
            return document, 0
        except (_NotAStateFile, OSError) as exc:
            self._metrics.state_load_errors.inc()
            log.error("the state file's journal %s is unusable (%s): %s; loading %s without the changes saved "
                      "since it was written", self.journal_path, _problem(exc), self._move_aside(self.journal_path),
                      self.path)  # fmt: skip
            return document, 0
        replayed = journal.replay(document, data)
        if replayed.dropped:
            self._metrics.state_journal_dropped.inc(replayed.dropped)
            log.warning("the state file's journal %s: %s; dropped %d line(s) from there on, the last saves "
                        "before the watcher stopped (the %d before them are loaded)", self.journal_path,
                        replayed.problem, replayed.dropped, replayed.saves)  # fmt: skip
        elif replayed.problem:
            log.info("ignored the journal %s: %s", self.journal_path, replayed.problem)
        return replayed.document, replayed.saves

    def _read(self, path: Path) -> bytes:
        """The file's bytes, when it is a regular file of at most ``max_bytes``.

        The watcher writes nothing else there. O_NONBLOCK: opening a FIFO would wait for a writer,
        before anything is served; O_NOFOLLOW: a link (to /dev/zero, which never ends) is none of
        its files. The read is bounded too: the file may grow after the fstat.
        """
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise _NotAStateFile(f"not a regular file ({_KINDS.get(stat.S_IFMT(info.st_mode), 'a special file')})")
            data = b""
            if info.st_size <= self._max_bytes:
                with os.fdopen(fd, "rb", closefd=False) as fh:
                    data = fh.read(self._max_bytes + 1)
        finally:
            os.close(fd)
        size = max(info.st_size, len(data))
        if size > self._max_bytes:
            raise _NotAStateFile(f"{size} bytes, more than storage.max_file_bytes ({self._max_bytes})")
        return data

    def save(self, state: State, changes: Changes | None = None, *, compact: bool = False) -> bool:
        """Save ``state``; False on failure. ``changes``: what changed since the last save (None: not
        known). Its line is appended to the journal and fsync'd: the cost of what changed. The file is
        written whole instead (compacted: temp file, fsync, rename, fsync of the directory, then a new
        journal the same way) at the first save, when the journal would outgrow it, and when ``compact``."""
        try:
            line = None if changes is None or compact or self._journal is None else journal.record(state, changes)
            if (
                line is None
                or self._journal_bytes + len(line) > min(max(self._base_bytes, MIN_JOURNAL_BYTES), self._max_bytes)
                or self._journal_removed()
            ):
                self._compact(state)
            else:
                self._append(line)
        except (OSError, ValueError) as exc:  # ValueError: a number JSON cannot hold (a bug; never crash on it)
            self._close_journal()  # an append cut short may have left part of a line: the next save compacts
            self._metrics.state_save_errors.inc()
            problem = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            level = logging.ERROR if problem != self._failing else logging.DEBUG
            log.log(level, "cannot save the state file %s: %s; the watcher keeps running and keeps trying",
                    self.path, problem)  # fmt: skip
            self._failing = problem
            return False
        if self._failing:
            log.info("saved the state file %s again", self.path)
            self._failing = ""
        self._metrics.state_saves.inc()
        self._metrics.state_last_save.set(self._clock())
        return True

    @property
    def journal_saves(self) -> bool:
        """Whether the journal holds saves of this process not yet compacted."""
        return self._journal is not None and self._journal_bytes > self._journal_head

    def _journal_removed(self) -> bool:
        """The open journal is no longer state.journal (removed or replaced by hand): appends would be lost."""
        assert self._journal is not None
        try:
            return os.fstat(self._journal.fileno()).st_ino != os.stat(self.journal_path).st_ino
        except FileNotFoundError:
            return True

    def _append(self, line: bytes) -> None:
        assert self._journal is not None
        self._journal.write(line)
        self._journal.flush()
        os.fsync(self._journal.fileno())
        self._journal_bytes += len(line)
        self.written = len(line)

    def _compact(self, state: State) -> None:
        """state.json written whole, with a new journal id, then an empty journal of that id. The old
        journal applies to the old file only: a stop between the two renames leaves the new file and
        the old journal, which the load then ignores."""
        self._close_journal()
        journal_id = secrets.token_hex(8)
        with self._replace(self.path, encode_pieces(state, journal=journal_id)) as base:
            size = base.tell()
        head = journal.header(journal_id)
        self._journal = self._replace(self.journal_path, [head])  # kept open: the next saves append to it
        self._base_bytes, self._journal_bytes, self._journal_head = size, len(head), len(head)
        self.written = size + len(head)
        self.compactions += 1

    def _replace(self, path: Path, pieces: Iterable[bytes]) -> BinaryIO:
        """``path`` replaced by ``pieces`` atomically and durably; the new file, open for appending."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=f".{path.name}.", suffix=".tmp")
        fh = os.fdopen(fd, "wb")
        try:
            fh.writelines(pieces)
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(temp, path)
        except BaseException:
            fh.close()
            with suppress(OSError):
                os.unlink(temp)
            raise
        # The rename is durable only once the directory entry is on disk; and the file's before the
        # journal's: a new journal beside the old file would be ignored, and the old journal lost.
        directory = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return fh

    def _close_journal(self) -> None:
        if self._journal is not None:
            with suppress(OSError):
                self._journal.close()
            self._journal = None

    def _unusable(self, reason: str) -> State:
        self._metrics.state_load_errors.inc()
        kept = self._move_aside(self.path)
        if self.journal_path.exists():
            kept += f" (its journal: {self._move_aside(self.journal_path)})"
        log.error(
            "the state file %s is unusable (%s): %s and starting fresh from what Docker reports now "
            "(revisions, rollback counts and version history start over)",
            self.path, reason, kept,
        )  # fmt: skip
        return State()

    def _move_aside(self, path: Path) -> str:
        """``path`` renamed ``<name>.corrupt-<UTC time>``; what became of it, for the log line."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        try:
            os.replace(path, aside)
        except OSError as exc:
            return f"could not move it aside ({exc.strerror or exc}); the next save replaces it"
        return f"moved it to {aside}"

    def _remove_temp_files(self) -> None:
        """Temp files of a save that was killed midway; the files themselves are whole either way."""
        with suppress(OSError):
            for name in (FILE_NAME, journal.FILE_NAME):
                for temp in self.directory.glob(f".{name}.*.tmp"):
                    with suppress(OSError):
                        temp.unlink()
                        log.debug("removed %s, left by an interrupted save", temp)


def _problem(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return (
            "a symbolic link, not a regular file"
            if exc.errno == errno.ELOOP
            else f"cannot read it: {exc.strerror or exc}"
        )
    return str(exc)

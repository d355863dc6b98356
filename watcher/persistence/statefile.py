"""The state file on disk: where it lives, atomic saves, and a file that cannot be used moved aside, never a crash."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

from watcher.config.settings import StorageSettings
from watcher.domain.model import State
from watcher.persistence.codec import DecodeError, Encoder, decode
from watcher.selfmetrics import SelfMetrics

FILE_NAME = "state.json"
CLAMPED_SHOWN = 5  # numbers out of range named in the load's warning (a file may hold thousands)
LOCK_NAME = "state.lock"  # beside it: flock'ed by the watcher using the directory, with its pid and host
AUTO = "auto"  # storage.directory: the system directory when usable, else the user's state directory
DISABLED = ("", "none")  # storage.directory: keep no state across restarts
SYSTEM_DIRECTORY = Path("/var/lib/deployment-watcher")
XDG_NAME = "deployment-watcher"
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
    """``state.json`` in a data directory. Neither ``load`` nor ``save`` raises: problems are
    logged with the path, counted, and the watcher goes on (it never crash-loops on its file).

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
        self._metrics = metrics
        self._clock = clock
        self._max_bytes = max_bytes
        self._failing = ""  # the last save error, so a lasting one is logged once, not at every change
        self._lock: BinaryIO | None = None  # the open lock file while this process holds the directory
        # Each deployment's piece of the file, kept from one save to the next: a save encodes what changed.
        self.encoder = Encoder()

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
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def load(self) -> State:
        """The saved state; a fresh one when there is none or it cannot be used (moved aside)."""
        self._remove_temp_files()
        try:
            data = self._read()
        except FileNotFoundError:
            log.info("no state file at %s: starting fresh", self.path)
            return State()
        except _NotAStateFile as exc:
            return self._unusable(str(exc))
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return self._unusable("a symbolic link, not a regular file")
            return self._unusable(f"cannot read it: {exc.strerror or exc}")
        clamped: list[str] = []
        try:
            state = decode(data, clamped=clamped)
        except DecodeError as exc:
            return self._unusable(str(exc))
        if clamped:
            shown = "; ".join(clamped[:CLAMPED_SHOWN]) + ("; …" if len(clamped) > CLAMPED_SHOWN else "")
            log.warning("the state file %s holds %d numbers out of their ranges, read as the nearest bound "
                        "(the rest is loaded): %s", self.path, len(clamped), shown)  # fmt: skip
        log.info("loaded the state file %s: %d deployments", self.path, len(state.deployments))
        return state

    def _read(self) -> bytes:
        """The file's bytes, when it is a regular file of at most ``max_bytes``.

        The watcher writes nothing else there. O_NONBLOCK: opening a FIFO would wait for a writer,
        before anything is served; O_NOFOLLOW: a link (to /dev/zero, which never ends) is none of
        its files. The read is bounded too: the file may grow after the fstat.
        """
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
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

    def save(self, state: State) -> bool:
        """Write ``state`` atomically (temp file, fsync, rename, fsync of the directory); False on failure.
        Only the deployments changed since the last save are encoded; the file is written whole."""
        try:
            self._write(self.encoder.encode(state))
        except (OSError, ValueError) as exc:  # ValueError: a number JSON cannot hold (a bug; never crash on it)
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

    def _write(self, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=f".{FILE_NAME}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with suppress(OSError):
                os.unlink(temp)
            raise
        # The rename is durable only once the directory entry is on disk.
        directory = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _unusable(self, reason: str) -> State:
        self._metrics.state_load_errors.inc()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        aside = self.path.with_name(f"{FILE_NAME}.corrupt-{stamp}")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            kept = f"could not move it aside ({exc.strerror or exc}); the next save replaces it"
        else:
            kept = f"moved it to {aside}"
        log.error(
            "the state file %s is unusable (%s): %s and starting fresh from what Docker reports now "
            "(revisions, rollback counts and version history start over)",
            self.path, reason, kept,
        )  # fmt: skip
        return State()

    def _remove_temp_files(self) -> None:
        """Temp files of a save that was killed midway; the state file itself is whole either way."""
        with suppress(OSError):
            for temp in self.directory.glob(f".{FILE_NAME}.*.tmp"):
                with suppress(OSError):
                    temp.unlink()
                    log.debug("removed %s, left by an interrupted save", temp)

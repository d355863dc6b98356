"""The client side of the read API: JSON over HTTP(S) and the event stream, with the stdlib only.

Shared by ``rollout status`` and ``status``: the flags that reach a watcher (URL, basic auth,
a CA), one GET, and a Server-Sent Events reader that gives up on a connection silent for
longer than the watcher's heartbeat allows, and at a deadline whatever the stream sends.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watcher import __version__
from watcher.domain.settings import LabelSettings
from watcher.wire import EVENT_ID_HEADER, EVENTS_PATH, MAX_LENGTH_HEADER, READY_HEADER

DEFAULT_URL = "http://localhost:9102"
PASSWORD_ENV = "DEPLOYMENT_WATCHER_PASSWORD"  # not WATCHER_*: the watcher refuses unknown variables of its own
USER_ENV = "DEPLOYMENT_WATCHER_USER"
# The watcher sends a comment every 15 s; this much silence is a connection that died unseen.
SILENCE_SECONDS = 40.0


class Unreachable(Exception):
    """The watcher did not answer (connection refused, reset, timed out, not HTTP), or asked to be
    asked again later (``retry_after`` seconds: its event stream is full)."""

    def __init__(self, message: str, *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# A Retry-After beyond this is not waited for whole: the gate's own deadline bounds the wait anyway.
MAX_RETRY_AFTER_SECONDS = 60.0


def retry_after(value: str | None) -> float:
    """A Retry-After header's delay in seconds (0 when absent or not a number of seconds)."""
    try:
        seconds = float(value or 0)
    except ValueError:
        return 0.0
    return min(MAX_RETRY_AFTER_SECONDS, seconds) if seconds > 0 else 0.0  # NaN compares false: 0


class Refused(Exception):
    """The watcher refused the credentials (401) or the request (403)."""


class Unparseable(Exception):
    """An answer that is not what the read API describes: the client cannot tell what it means."""


class UsageError(Exception):
    """A flag that cannot work (unreadable password file, a URL that is not http(s))."""


# Exit code 4 in the --help of both clients, which read the watcher with these flags.
CANNOT_TELL = "4 cannot tell (watcher unreachable, credentials refused, an answer that cannot be read)"


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=DEFAULT_URL, help=f"the watcher's base URL (default {DEFAULT_URL})")
    p.add_argument("--user", help=f"basic auth user, when the watcher's web config has users (or ${USER_ENV})")
    p.add_argument("--password-file", metavar="PATH", help=f"file holding the basic auth password (or ${PASSWORD_ENV})")
    p.add_argument("--ca-file", metavar="PATH", help="CA certificate(s) to trust for an https:// URL")


@dataclass
class Watcher:
    """A watcher's read API, reached with the flags of ``add_flags``."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    ssl_context: ssl.SSLContext | None = None
    # The sockets of the requests in flight, for ``cut()`` from another thread.
    _open: set[socket.socket] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_flags(cls, args: argparse.Namespace) -> Watcher:
        parts = urllib.parse.urlsplit(args.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--url must be an http:// or https:// URL, got {args.url!r}")
        headers = {"User-Agent": f"deployment-watcher-client/{__version__}", "Accept": "application/json"}
        user = args.user or os.environ.get(USER_ENV, "")
        if user:
            try:
                password = (
                    Path(args.password_file).read_text(encoding="utf-8").rstrip("\r\n")
                    if args.password_file
                    else os.environ.get(PASSWORD_ENV, "")
                )
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"cannot read --password-file {args.password_file}: {exc}") from None
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        context = None
        if parts.scheme == "https":
            try:
                context = ssl.create_default_context(cafile=args.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"cannot use --ca-file {args.ca_file}: {exc}") from None
        return cls(args.url.rstrip("/"), headers, context)

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme == "https":
            return http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout,
                                               context=self.ssl_context)  # fmt: skip
        return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)

    def _path(self, path: str, query: dict[str, str] | None = None) -> str:
        prefix = urllib.parse.urlsplit(self.url).path
        return prefix + path + ("?" + urllib.parse.urlencode(query) if query else "")

    def cut(self) -> None:
        """Shut every request in flight: a read blocked in one returns now, however the server trickles bytes
        (each read's timeout bounds a silence, not a slow answer)."""
        for sock in list(self._open):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def get(self, path: str, *, query: dict[str, str] | None = None, timeout: float = 10.0) -> Reply:
        """The answer to a GET; raises Unreachable, Refused."""
        connection = self._connect(timeout)
        sock = None
        try:
            connection.request("GET", self._path(path, query), headers=self.headers)
            sock = connection.sock
            if sock is not None:
                self._open.add(sock)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            raise Unreachable(f"cannot reach the watcher at {self.url}: {exc}") from None
        finally:
            self._open.discard(sock)
            connection.close()
        _refused(response.status)
        return Reply(path, response.status, {k.lower(): v for k, v in response.getheaders()}, body)

    def events(self, *, query: dict[str, str], last_event_id: str, timeout: float) -> Events:
        """The event stream, opened; ``timeout`` bounds the connect and the whole reading (``Events.set_timeout``)."""
        connection = self._connect(min(timeout, SILENCE_SECONDS))
        headers = {**self.headers, "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        sock = None
        try:
            connection.request("GET", self._path(EVENTS_PATH, query), headers=headers)
            # Kept: a response that closes the connection when done (HTTP/1.0, a proxy's "Connection: close")
            # takes the socket away from the connection, and each read's timeout is set on it.
            sock = connection.sock
            if sock is not None:
                self._open.add(sock)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            self._open.discard(sock)
            connection.close()
            raise Unreachable(f"cannot reach the watcher at {self.url}: {exc}") from None
        if response.status != 200:
            self._open.discard(sock)
            connection.close()
            _refused(response.status)
            delay = retry_after(response.getheader("Retry-After")) if response.status == 503 else 0.0
            raise Unreachable(f"the watcher's event stream answered {response.status}", retry_after=delay)
        events = Events(connection, response, sock, on_close=lambda: self._open.discard(sock))
        events.set_timeout(timeout)
        return events


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer of the read API: its status, headers (names in lower case) and body."""

    path: str
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:  # UnicodeDecodeError is one
            raise Unparseable(f"the answer to {self.path} ({self.status}) is not JSON") from None

    @property
    def event_id(self) -> str:
        """The newest event id (``<run>.<sequence>``) of the state the answer was made from; "" when not said."""
        return self.headers.get(EVENT_ID_HEADER.lower(), "")

    @property
    def run(self) -> str:
        """The watcher's run (new at each start of it) that answered."""
        return self.event_id.partition(".")[0]

    @property
    def ready(self) -> bool:
        """Whether the watcher had synced with the Docker Engine: until then a deployment missing may be one not
        seen yet. A watcher that does not say (an older one) is taken at its word."""
        value = self.headers.get(READY_HEADER.lower(), "true")
        if value not in ("true", "false"):
            raise Unparseable(f"the answer to {self.path} has {READY_HEADER}: {value!r}, not true or false")
        return value == "true"

    @property
    def max_value_length(self) -> int:
        """The length the watcher cuts label values (names, versions) to."""
        value = self.headers.get(MAX_LENGTH_HEADER.lower())
        if value is None:
            return LabelSettings().max_value_length
        if not (value.isascii() and value.isdigit()) or int(value) < 1:
            raise Unparseable(f"the answer to {self.path} has {MAX_LENGTH_HEADER}: {value!r}, not a length")
        return int(value)


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    name: str
    data: dict[str, Any]


class Events:
    """Server-Sent Events from one connection; ``close()`` it when done."""

    def __init__(
        self,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        sock: socket.socket | None,
        *,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self._connection = connection
        self._response = response
        self._sock = sock
        self._on_close = on_close
        self._deadline = time.monotonic() + SILENCE_SECONDS

    def set_timeout(self, seconds: float) -> None:
        """Stop reading ``seconds`` from now, whatever arrives meanwhile (keepalive comments included)."""
        self._deadline = time.monotonic() + seconds

    def __iter__(self) -> Iterator[Event]:
        """Each event as it arrives; ends when the connection does. Raises TimeoutError on a silence longer
        than the heartbeat allows, and at the deadline."""
        fields: dict[str, str] = {}
        data: list[str] = []
        while True:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the deadline passed")
            # Per read, never beyond the deadline: a line (a keepalive) must not extend the wait.
            if self._sock is not None:
                self._sock.settimeout(min(left, SILENCE_SECONDS))
            try:
                raw = self._response.readline()
            except TimeoutError:
                raise  # silence: not a reset (TimeoutError is an OSError too)
            except (OSError, http.client.HTTPException, ValueError):
                return  # reset, or the chunked encoding cut off midway
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if data:
                    name = fields.get("event", "message")
                    try:
                        payload = json.loads("\n".join(data))
                    except ValueError:
                        raise Unparseable(f"the data of a {name!r} event on the stream is not JSON") from None
                    if not isinstance(payload, dict):
                        raise Unparseable(f"the data of a {name!r} event on the stream is not a JSON object")
                    yield Event(fields.get("id", ""), name, payload)
                fields, data = {}, []
                continue
            if line.startswith(":"):
                continue  # a comment: the heartbeat
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name in ("id", "event"):
                fields[name] = value

    def close(self) -> None:
        self._on_close()
        self._response.close()
        self._connection.close()


def _refused(status: int) -> None:
    if status == 401:
        raise Refused("the watcher refused the credentials (401): check --user and the password")
    if status == 403:
        raise Refused("the watcher refused the request (403)")

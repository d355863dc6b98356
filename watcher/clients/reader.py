"""The client side of the read API: JSON over HTTP(S) and the event stream, with the stdlib only.

Shared by ``rollout status`` and ``status``: the flags that reach a watcher (URL, basic auth,
a CA), one GET, and a Server-Sent Events reader that gives up on a connection silent for
longer than the watcher's heartbeat allows.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import ssl
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watcher import __version__
from watcher.wire import EVENTS_PATH

DEFAULT_URL = "http://localhost:9102"
PASSWORD_ENV = "DEPLOYMENT_WATCHER_PASSWORD"  # not WATCHER_*: the watcher refuses unknown variables of its own
USER_ENV = "DEPLOYMENT_WATCHER_USER"
# The watcher sends a comment every 15 s; this much silence is a connection that died unseen.
SILENCE_SECONDS = 40.0


class Unreachable(Exception):
    """The watcher did not answer (connection refused, reset, timed out, not HTTP)."""


class Refused(Exception):
    """The watcher refused the credentials (401) or the request (403)."""


class UsageError(Exception):
    """A flag that cannot work (unreadable password file, a URL that is not http(s))."""


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

    def get(self, path: str, *, query: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, Any]:
        """Status and decoded JSON of a GET (None for a body that is not JSON); raises Unreachable, Refused."""
        connection = self._connect(timeout)
        try:
            connection.request("GET", self._path(path, query), headers=self.headers)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            raise Unreachable(f"cannot reach the watcher at {self.url}: {exc}") from None
        finally:
            connection.close()
        _refused(response.status)
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, None

    def events(self, *, query: dict[str, str], last_event_id: str, timeout: float) -> Events:
        """The event stream, opened (``timeout`` bounds the connect and each silence)."""
        connection = self._connect(min(timeout, SILENCE_SECONDS))
        headers = {**self.headers, "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        try:
            connection.request("GET", self._path(EVENTS_PATH, query), headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            connection.close()
            raise Unreachable(f"cannot reach the watcher at {self.url}: {exc}") from None
        _refused(response.status)
        if response.status != 200:
            connection.close()
            raise Unreachable(f"the watcher's event stream answered {response.status}")
        return Events(connection, response)


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    name: str
    data: dict[str, Any]


class Events:
    """Server-Sent Events from one connection; ``close()`` it when done."""

    def __init__(self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._connection = connection
        self._response = response

    def set_timeout(self, seconds: float) -> None:
        """How long the next read may wait for a line."""
        if self._connection.sock is not None:
            self._connection.sock.settimeout(max(0.01, min(seconds, SILENCE_SECONDS)))

    def __iter__(self) -> Iterator[Event]:
        """Each event as it arrives; ends when the connection does. Raises TimeoutError on silence."""
        fields: dict[str, str] = {}
        data: list[str] = []
        while True:
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
                    try:
                        payload = json.loads("\n".join(data))
                    except ValueError:
                        payload = None
                    if isinstance(payload, dict):
                        yield Event(fields.get("id", ""), fields.get("event", "message"), payload)
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
        self._connection.close()


def _refused(status: int) -> None:
    if status == 401:
        raise Refused("the watcher refused the credentials (401): check --user and the password")
    if status == 403:
        raise Refused("the watcher refused the request (403)")

"""Prometheus's HTTP API for instant queries: an answer is a number, no data, or why not, never an exception.

A check must say one number: a vector of one sample or a scalar. An empty vector (no traffic yet,
a series not there) and NaN (0/0: no requests in the window) are no data; several series, a range
vector, an error status, an answer that is not Prometheus's JSON, a timeout or a refused connection
are errors, whose text says which.
"""

from __future__ import annotations

import base64
import json
import math
import ssl
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiohttp

from watcher.domain.settings import AnalysisSettings

# A one-sample answer is a few hundred bytes; a runaway query's answer (every series) is not read whole.
MAX_ANSWER_BYTES = 1 << 20
MAX_ERROR_CHARS = 300  # an error text goes to the state, the API and the logs


@dataclass(frozen=True, slots=True)
class Answer:
    """What one query said: ``value`` (None: no data) or ``error``."""

    value: float | None = None
    error: str = ""
    answered: bool = True  # an HTTP response came back (False: unreachable, a timeout, unreadable credentials)

    @property
    def result(self) -> str:
        """``deployment_watcher_analysis_queries_total``'s ``result``."""
        return "error" if self.error else "nodata" if self.value is None else "ok"


def failed(error: str, *, answered: bool = True) -> Answer:
    error = " ".join(error.split())  # one line, whatever the server wrote
    if len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 1] + "…"
    return Answer(error=error, answered=answered)


def parse(body: bytes | None, *, status: int = 200) -> Answer:
    """The answer in an HTTP response's ``body`` (None: over ``MAX_ANSWER_BYTES``) with this ``status``."""
    if body is None:
        return failed(f"an answer over {MAX_ANSWER_BYTES} bytes: the query must return one series")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting
        return failed(f"HTTP {status}" if status != 200 else "an answer that is not JSON")
    if not isinstance(document, dict):
        return failed(f"HTTP {status}" if status != 200 else "an answer that is not Prometheus's")
    if document.get("status") == "error":
        return failed(f"{_text(document.get('errorType'))}: {_text(document.get('error'))}")
    if status != 200:
        return failed(f"HTTP {status}")
    data = document.get("data")
    if document.get("status") != "success" or not isinstance(data, dict):
        return failed("an answer that is not Prometheus's")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _sample(result)
    if kind != "vector":
        return failed(f"the query must return an instant vector or a scalar, got {_text(kind)}")
    if not isinstance(result, list):
        return failed("an answer that is not Prometheus's")
    if not result:
        return Answer(None)
    if len(result) > 1:
        return failed(f"the query must return one series, got {len(result)} (aggregate them, e.g. with sum)")
    sample = result[0]
    if isinstance(sample, dict) and "histogram" in sample:
        return failed("the query must return a number, got a native histogram")
    return _sample(sample.get("value") if isinstance(sample, dict) else None)


def _sample(pair: object) -> Answer:
    """``[time, "value"]``: Prometheus writes each value as a string (NaN and ±Inf included)."""
    if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str) and len(pair[1]) < 64):
        return failed("an answer that is not Prometheus's")
    try:
        value = float(pair[1])
    except ValueError:
        return failed(f"a sample value that is not a number: {pair[1]!r}")
    return Answer(None if math.isnan(value) else value)


def _text(value: object) -> str:
    return value if isinstance(value, str) else repr(value)[:80]


async def _read(content: aiohttp.StreamReader) -> bytes | None:
    """The body, or None past ``MAX_ANSWER_BYTES`` (after decompression: a gzip bomb is cut short too)."""
    chunks, size = [], 0
    async for chunk in content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class Prometheus:
    """The instant queries of one Prometheus (``analysis`` settings), over one pool of connections.

    The password and token files are read for each query: a rotated secret is used at once.
    """

    def __init__(self, settings: AnalysisSettings) -> None:
        self._settings = settings
        self._url = settings.prometheus_url.rstrip("/") + "/api/v1/query"
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Prometheus:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def query(self, promql: str, *, at: float | None = None) -> Answer:
        """``promql`` evaluated now, or at unix time ``at``."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        timeout = self._settings.timeout_seconds
        try:
            headers = self._headers()
            session = self._open()
            async with session.get(self._url, params=params, headers=headers) as response:
                return parse(await _read(response.content), status=response.status)
        except TimeoutError:
            return failed(f"no answer within {timeout:g} s", answered=False)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # ClientError: refused, reset, TLS; OSError: a credential or CA file; ValueError: a bad URL.
            return failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, answered=False)

    def _headers(self) -> dict[str, str]:
        settings = self._settings
        headers = {"Accept": "application/json"}
        if settings.bearer_token_file:
            headers["Authorization"] = f"Bearer {_secret(settings.bearer_token_file)}"
        elif settings.username:
            password = _secret(settings.password_file) if settings.password_file else ""
            pair = base64.b64encode(f"{settings.username}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {pair}"
        return headers

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            context: ssl.SSLContext | bool = True
            if self._settings.ca_file:
                context = ssl.create_default_context(cafile=self._settings.ca_file)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context, limit=0),  # the source bounds its queries
                timeout=aiohttp.ClientTimeout(total=self._settings.timeout_seconds),
            )
        return self._session


def _secret(path: str) -> str:
    """A secret file's contents, without the line end an editor adds."""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text") from exc
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror}") from exc

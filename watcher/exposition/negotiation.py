"""Content negotiation for ``/metrics``: the format from ``Accept``, gzip or not from ``Accept-Encoding``.

prometheus-client's ``choose_encoder`` takes the first media type it supports in the header's
order and ``gzip_accepted`` looks for ``gzip`` anywhere: both ignore the weights, so
``gzip;q=0`` got gzip and ``application/openmetrics-text;q=0`` got OpenMetrics. Neither aiohttp
nor prometheus-client parses weights, so this module does, as RFC 9110 (sections 12.4 and 12.5)
says:

- A weight ``q=0`` means not acceptable; a missing weight is 1; the highest weight wins, and
  among equal weights the header's order (so headers without weights are served exactly as
  before). An element whose weight is not a valid qvalue is ignored.
- ``Accept``: each media range, best first, is handed to ``choose_encoder`` alone, so a format it
  picks is exactly what client_python would serve. Wildcards stand for the formats they cover
  (``*/*`` and ``text/*``: the classic text format first, as client_python serves ``*/*``;
  ``application/*``: OpenMetrics). A format is skipped when the most specific range that matches
  it has ``q=0`` (``*/*, text/plain;q=0`` gets OpenMetrics). When nothing acceptable is left, the
  header is disregarded and the classic text format served, as section 12.5.1 allows and as
  ``Accept: application/json`` always got.
- ``Accept-Encoding``: gzip when ``gzip`` (or ``x-gzip``, or else ``*``) has a weight above 0
  and not below that of ``identity``. Identity is acceptable unless ``identity;q=0`` or, without an
  ``identity`` element, ``*;q=0``; a header refusing both is disregarded (identity is served).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import NamedTuple

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.registry import Collector

Encoder = Callable[[Collector], bytes]

_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


class MediaRange(NamedTuple):
    """One element of ``Accept``: as sent, and parsed."""

    text: str
    type: str
    subtype: str
    params: frozenset[tuple[str, str]]  # without q; names lowercased
    q: float


# The formats wildcards stand for, in the server's preference; as choose_encoder reads them.
_CLASSIC = "text/plain;version=0.0.4"
_OPENMETRICS = "application/openmetrics-text;version=1.0.0"


def _params(parts: list[str]) -> tuple[frozenset[tuple[str, str]], float | None]:
    """The parameters but q, and the weight (1 when absent, None when invalid)."""
    params: set[tuple[str, str]] = set()
    q: float | None = 1.0
    for part in parts:
        name, _, value = part.partition("=")
        name, value = name.strip().lower(), value.strip().strip('"')
        if name == "q":
            q = float(value) if _QVALUE.fullmatch(value) else None
        elif name:
            params.add((name, value))
    return frozenset(params), q


def media_ranges(accept: str) -> list[MediaRange]:
    """The media ranges of an ``Accept`` value in the header's order; malformed ones left out."""
    ranges = []
    for element in accept.split(","):
        media, *parts = element.split(";")
        kind, slash, subkind = media.strip().lower().partition("/")
        params, q = _params(parts)
        if slash and kind and subkind and q is not None and (kind != "*" or subkind == "*"):
            ranges.append(MediaRange(element.strip(), kind, subkind, params, q))
    return ranges


def _weight(ranges: list[MediaRange], media_type: str) -> float | None:
    """The weight the most specific matching range gives ``media_type``, a full type (None: no range matches)."""
    found = media_ranges(media_type)[0]
    best: tuple[tuple[bool, bool, int], float] | None = None
    for r in ranges:
        if r.type in ("*", found.type) and r.subtype in ("*", found.subtype) and r.params <= found.params:
            specificity = (r.type != "*", r.subtype != "*", len(r.params))
            if best is None or specificity > best[0]:
                best = (specificity, r.q)
    return best[1] if best is not None else None


def _stands_for(r: MediaRange) -> list[str]:
    """What choose_encoder should read for this range: itself, or the formats its wildcard covers."""
    if r.type == "*":
        return [_CLASSIC, _OPENMETRICS]
    if r.subtype == "*":
        return {"text": [_CLASSIC], "application": [_OPENMETRICS]}.get(r.type, [])
    return [r.text]


@functools.lru_cache(maxsize=64)
def choose_format(accept: str) -> tuple[Encoder, str]:
    """The encoder and Content-Type for an ``Accept`` value: the best acceptable format that client_python serves."""
    ranges = media_ranges(accept)
    for r in sorted((r for r in ranges if r.q > 0), key=lambda r: -r.q):  # stable: ties keep the header's order
        for text in _stands_for(r):
            encoder, content_type = choose_encoder(text)
            if content_type == CONTENT_TYPE_PLAIN_0_0_4 and _weight([r], _CLASSIC) is None:
                continue  # choose_encoder's fallback: a type (or version) it does not serve
            if _weight(ranges, content_type) != 0:
                return encoder, content_type
    return choose_encoder("")


@functools.lru_cache(maxsize=64)
def gzip_wanted(accept_encoding: str) -> bool:
    """Whether to answer an ``Accept-Encoding`` value with gzip."""
    weights: dict[str, float] = {}
    for element in accept_encoding.split(","):
        coding, *parts = element.split(";")
        _, q = _params(parts)
        coding = coding.strip().lower()
        if coding and q is not None:
            weights.setdefault("gzip" if coding == "x-gzip" else coding, q)
    gzip = weights.get("gzip", weights.get("*", 0.0))
    identity = weights.get("identity", weights.get("*"))
    return gzip > 0 and (identity is None or gzip >= identity)

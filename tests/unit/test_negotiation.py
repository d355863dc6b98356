"""Content negotiation on /metrics: q-values in Accept and Accept-Encoding, as RFC 9110 says."""

from __future__ import annotations

import pytest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from pytest_aiohttp import AiohttpClient

from tests.unit.builders import PROMETHEUS_2, app_for, scenario
from watcher.exposition.negotiation import MediaRange, choose_format, gzip_wanted, media_ranges
from watcher.web.app import make_app

OPENMETRICS_1 = "application/openmetrics-text;version=1.0.0"
TEXT_1 = "text/plain;version=1.0.0;escaping=underscores"


@pytest.mark.parametrize(
    ("accept", "served"),
    [
        # without weights, or with weights in falling order: as client_python
        ("", ""),
        ("*/*", ""),
        ("text/plain", ""),
        ("application/json", ""),
        (PROMETHEUS_2, PROMETHEUS_2),
        (OPENMETRICS_1, OPENMETRICS_1),
        (f"{TEXT_1},{OPENMETRICS_1}", TEXT_1),
        # q=0 refuses
        ("application/openmetrics-text;q=0", ""),
        ("application/openmetrics-text;version=1.0.0;q=0, */*", ""),
        ("application/openmetrics-text;q=0, text/plain;version=0.0.4", ""),
        ("text/plain;q=0, */*", OPENMETRICS_1),
        ("text/plain;version=0.0.4;q=0, text/*, application/*;q=0.1", OPENMETRICS_1),
        (f"application/openmetrics-text, {OPENMETRICS_1};q=0", ""),  # the most specific range decides
        (f"{OPENMETRICS_1};q=0, {OPENMETRICS_1};escaping=underscores", OPENMETRICS_1),
        # the highest weight wins, not the first
        (f"{TEXT_1};q=0.5, {OPENMETRICS_1};q=0.9", OPENMETRICS_1),
        (f"text/plain;version=0.0.4;q=0.2, {OPENMETRICS_1};q=0.1", ""),
        (f"*/*;q=0.1, {TEXT_1};q=0.3", TEXT_1),
        ("application/*;q=0.9, text/plain;q=0.5", OPENMETRICS_1),
        # nothing acceptable: the header is disregarded
        ("text/plain;q=0, application/openmetrics-text;q=0", ""),
        ("*/*;q=0", ""),
        # malformed elements are ignored
        (f"{OPENMETRICS_1};q=2, {TEXT_1}", TEXT_1),
        (f"{OPENMETRICS_1};q=0.0001, {TEXT_1};q=0.5", TEXT_1),
        (f"{OPENMETRICS_1};q=abc, text/plain", ""),
        (",,;, /, */json", ""),
    ],
)
def test_choose_format(accept: str, served: str) -> None:
    """Each Accept value gets what client_python serves for its best acceptable media range."""
    assert choose_format(accept)[1] == choose_encoder(served)[1]


def test_formats_render_like_client_python() -> None:
    """The chosen encoder is client_python's for that type, with its version and escaping."""
    encoder, content_type = choose_format(f"{TEXT_1};q=0.4, {OPENMETRICS_1};q=0")
    expected = choose_encoder(TEXT_1)
    assert content_type == expected[1] and content_type != CONTENT_TYPE_PLAIN_0_0_4
    assert encoder.func is expected[0].func and encoder.keywords == expected[0].keywords  # type: ignore[attr-defined]


def test_media_ranges_parse_parameters_and_weights() -> None:
    """Types and parameter names are case-insensitive; quotes around values go; q is the weight, not a parameter."""
    assert media_ranges('Text/Plain; Version="0.0.4" ;q=0.50, */*') == [
        MediaRange('Text/Plain; Version="0.0.4" ;q=0.50', "text", "plain", frozenset({("version", "0.0.4")}), 0.5),
        MediaRange("*/*", "*", "*", frozenset(), 1.0),
    ]
    assert media_ranges("*/plain, text, text/plain;q=1.5, text/plain;q=") == []


@pytest.mark.parametrize(
    ("accept_encoding", "gzip"),
    [
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("br, gzip;q=0.5", True),
        ("deflate, gzip, br, zstd", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip; q=0, *", False),
        ("*", True),
        ("*;q=0", False),
        ("*;q=0.5, identity", False),
        ("gzip;q=0.5, identity", False),
        ("gzip;q=0.5, identity;q=0.5", True),
        ("gzip, identity;q=0", True),
        ("identity", False),
        ("br", False),
        ("gzip;q=7", False),
        ("gzip;q=0, gzip", False),
    ],
)
def test_gzip_wanted(accept_encoding: str, gzip: bool) -> None:
    """gzip when it is acceptable and no less wanted than identity."""
    assert gzip_wanted(accept_encoding) is gzip


async def test_gzip_q0_is_served_plain(aiohttp_client: AiohttpClient) -> None:
    """Accept-Encoding: gzip;q=0 gets an uncompressed body."""
    client = await aiohttp_client(make_app(exposition=app_for(scenario().state), ready=lambda: True))
    response = await client.get("/metrics", headers={"Accept-Encoding": "gzip;q=0"}, auto_decompress=False)
    assert response.status == 200
    assert "Content-Encoding" not in response.headers
    assert (await response.read()).startswith(b"# HELP ")


async def test_openmetrics_q0_is_not_served(aiohttp_client: AiohttpClient) -> None:
    """Accept: application/openmetrics-text;q=0 gets the classic text format."""
    client = await aiohttp_client(make_app(exposition=app_for(scenario().state), ready=lambda: True))
    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text;q=0"})
    assert response.headers["Content-Type"] == CONTENT_TYPE_PLAIN_0_0_4
    assert "# EOF" not in await response.text()

"""The Prometheus client of the analysis source: every answer is a number, no data or an error text,
never an exception; its credentials and TLS, against a small local server."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.pki import Pki, make_pki
from watcher import cli
from watcher.config import Settings
from watcher.domain.analysis import Check
from watcher.domain.settings import AnalysisSettings
from watcher.sources.analysis import prometheus as client
from watcher.sources.analysis.prometheus import MAX_ANSWER_BYTES, MAX_ERROR_CHARS, Answer, Prometheus, parse
from watcher.sources.analysis.trial import try_checks

Server = Callable[..., Awaitable[TestServer]]


def vector(*values: str) -> dict[str, Any]:
    result = [{"metric": {"job": f"j{i}"}, "value": [1700000000.5, v]} for i, v in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("answer", "status", "expected"),
    [
        (body(vector("0.041")), 200, Answer(0.041)),
        (body(vector("0")), 200, Answer(0.0)),
        (body(vector()), 200, Answer(None)),
        (body(vector("NaN")), 200, Answer(None)),  # 0/0: no requests in the window
        (body(vector("+Inf")), 200, Answer(float("inf"))),
        (body(vector("-Inf")), 200, Answer(float("-inf"))),
        (body({"status": "success", "data": {"resultType": "scalar", "result": [1.5, "3"]}}), 200, Answer(3.0)),
        (body(vector("1", "2")), 200, client.failed("the query must return one series, got 2 (aggregate them, e.g. with sum)")),
        (body({"status": "success", "data": {"resultType": "matrix", "result": []}}), 200,
         client.failed("the query must return an instant vector or a scalar, got matrix")),
        (body({"status": "success", "data": {"resultType": "string", "result": [1, "x"]}}), 200,
         client.failed("the query must return an instant vector or a scalar, got string")),
        (body({"status": "error", "errorType": "bad_data", "error": "1:5: parse error"}), 400,
         client.failed("bad_data: 1:5: parse error")),
        (body({"status": "error", "errorType": "timeout", "error": "query timed out"}), 503,
         client.failed("timeout: query timed out")),
        (b"<html>502 Bad Gateway</html>", 502, client.failed("HTTP 502")),
        (b"Unauthorized\n", 401, client.failed("HTTP 401")),
        (b'"just a string"', 401, client.failed("HTTP 401")),
        (body({"status": "success"}), 404, client.failed("HTTP 404")),
        (b"", 200, client.failed("an answer that is not JSON")),
        (b"\xff\xfe\x00garbage", 200, client.failed("an answer that is not JSON")),
        (b'{"status": "success", "data": {"resultType": "vector", "result": [', 200,
         client.failed("an answer that is not JSON")),
        (b"[" * 100_000 + b"]" * 100_000, 200, client.failed("an answer that is not JSON")),  # nesting: too deep
        (b"[" * 100_000, 200, client.failed("an answer that is not JSON")),
        (b"null", 200, client.failed("an answer that is not Prometheus's")),
        (body([1, 2]), 200, client.failed("an answer that is not Prometheus's")),
        (body({"status": "success", "data": None}), 200, client.failed("an answer that is not Prometheus's")),
        (body({"status": "maybe", "data": {}}), 200, client.failed("an answer that is not Prometheus's")),
        (body({"status": "success", "data": {"resultType": "vector", "result": {}}}), 200,
         client.failed("an answer that is not Prometheus's")),
        (body({"status": "success", "data": {"resultType": "vector", "result": ["x"]}}), 200,
         client.failed("an answer that is not Prometheus's")),
        (body({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}}), 200,
         client.failed("an answer that is not Prometheus's")),
        (body({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, 2.5]}]}}), 200,
         client.failed("an answer that is not Prometheus's")),  # Prometheus writes values as strings
        (body({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "9" * 400]}]}}), 200,
         client.failed("an answer that is not Prometheus's")),
        (body({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "one"]}]}}), 200,
         client.failed("a sample value that is not a number: 'one'")),
        (body({"status": "success", "data": {"resultType": "vector", "result": [{"histogram": [1, {}]}]}}), 200,
         client.failed("the query must return a number, got a native histogram")),
        (body({"status": "success", "data": {"resultType": "scalar", "result": "3"}}), 200,
         client.failed("an answer that is not Prometheus's")),
        (body({"status": "success", "data": {"resultType": {"a": 1}, "result": []}}), 200,
         client.failed("the query must return an instant vector or a scalar, got {'a': 1}")),
        (None, 200, client.failed(f"an answer over {MAX_ANSWER_BYTES} bytes: the query must return one series")),
    ],
)  # fmt: skip
def test_answers(answer: bytes | None, status: int, expected: Answer) -> None:
    assert parse(answer, status=status) == expected


def test_an_error_text_is_one_bounded_line() -> None:
    answer = parse(body({"status": "error", "errorType": "x", "error": "a\nb\r\n" + "z" * 10_000}), status=422)
    assert answer.error.startswith("x: a b zzz") and len(answer.error) == MAX_ERROR_CHARS
    assert "\n" not in answer.error


@pytest.mark.parametrize(
    ("answer", "result"), [(Answer(1.0), "ok"), (Answer(None), "nodata"), (client.failed("x"), "error")]
)
def test_result_labels(answer: Answer, result: str) -> None:
    assert answer.result == result


class FakePrometheus:
    """Answers /api/v1/query with what the test says, and remembers each request."""

    def __init__(self) -> None:
        self.requests: list[web.Request] = []
        self.answer: Callable[[web.Request], Awaitable[web.StreamResponse]] = self.one

    async def one(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(vector("0.5"))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        return await self.answer(request)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/prefix/api/v1/query", self.handle)
        return app


@pytest.fixture
def fake() -> FakePrometheus:
    return FakePrometheus()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def serve(fake: FakePrometheus, aiohttp_server: Server, **kwargs: Any) -> tuple[TestServer, str]:
    server = await aiohttp_server(fake.app(), **kwargs)
    scheme = "https" if "ssl" in kwargs else "http"
    return server, f"{scheme}://127.0.0.1:{server.port}/prefix/"


async def test_a_query_is_sent_with_its_time(fake: FakePrometheus, aiohttp_server: Server) -> None:
    _, url = await serve(fake, aiohttp_server)
    async with Prometheus(AnalysisSettings(prometheus_url=url)) as prometheus:
        assert await prometheus.query('sum(rate(x{job="a"}[1m]))') == Answer(0.5)
        assert await prometheus.query("up", at=1700000000.25) == Answer(0.5)
    first, second = fake.requests
    assert dict(first.query) == {"query": 'sum(rate(x{job="a"}[1m]))'}
    assert dict(second.query) == {"query": "up", "time": "1700000000.250"}
    assert "Authorization" not in first.headers


async def test_basic_auth_reads_the_password_file_each_time(
    fake: FakePrometheus, aiohttp_server: Server, tmp_path: Path
) -> None:
    _, url = await serve(fake, aiohttp_server)
    password = tmp_path / "password"
    password.write_text("s3cret:with colon\n")
    settings = AnalysisSettings(prometheus_url=url, username="watcher", password_file=str(password))
    async with Prometheus(settings) as prometheus:
        await prometheus.query("up")
        password.write_text("rotated")
        await prometheus.query("up")
        password.unlink()
        missing = await prometheus.query("up")
    assert [r.headers["Authorization"] for r in fake.requests] == [
        "Basic d2F0Y2hlcjpzM2NyZXQ6d2l0aCBjb2xvbg==", "Basic d2F0Y2hlcjpyb3RhdGVk",
    ]  # fmt: skip
    assert missing.result == "error" and not missing.answered
    assert f"cannot read {password}: No such file or directory" in missing.error


async def test_a_bearer_token_file(fake: FakePrometheus, aiohttp_server: Server, tmp_path: Path) -> None:
    _, url = await serve(fake, aiohttp_server)
    token = tmp_path / "token"
    token.write_text("abc.def\n")
    async with Prometheus(AnalysisSettings(prometheus_url=url, bearer_token_file=str(token))) as prometheus:
        assert await prometheus.query("up") == Answer(0.5)
    assert fake.requests[0].headers["Authorization"] == "Bearer abc.def"


async def test_tls_verified_with_the_ca_file(fake: FakePrometheus, aiohttp_server: Server, pki: Pki) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    _, url = await serve(fake, aiohttp_server, ssl=context)
    async with Prometheus(AnalysisSettings(prometheus_url=url, ca_file=str(pki.ca))) as prometheus:
        assert await prometheus.query("up") == Answer(0.5)
    async with Prometheus(AnalysisSettings(prometheus_url=url, ca_file=str(pki.rogue_ca))) as prometheus:
        untrusted = await prometheus.query("up")
    async with Prometheus(AnalysisSettings(prometheus_url=url)) as prometheus:
        system_cas = await prometheus.query("up")
    async with Prometheus(AnalysisSettings(prometheus_url=url, ca_file="/nonexistent/ca.pem")) as prometheus:
        no_ca = await prometheus.query("up")
    assert len(fake.requests) == 1
    for answer in (untrusted, system_cas, no_ca):
        assert answer.result == "error" and not answer.answered
    assert "certificate verify failed" in untrusted.error
    assert "No such file" in no_ca.error


async def test_a_slow_answer_times_out(fake: FakePrometheus, aiohttp_server: Server) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return await fake.one(request)

    fake.answer = slow
    _, url = await serve(fake, aiohttp_server)
    async with Prometheus(AnalysisSettings(prometheus_url=url, timeout_seconds=0.2)) as prometheus:
        assert await prometheus.query("up") == client.failed("no answer within 0.2 s", answered=False)


async def test_a_huge_answer_is_not_read_whole(fake: FakePrometheus, aiohttp_server: Server) -> None:
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"status":"success","data":{"resultType":"vector","result":[')
        try:
            while sent < 50 * MAX_ANSWER_BYTES:
                await response.write(b'{"metric":{},"value":[1,"1"]},' * 1000)
                sent += 30_000
        except (ConnectionError, RuntimeError):
            pass  # the client went away: what this test wants
        return response

    fake.answer = endless
    _, url = await serve(fake, aiohttp_server)
    async with Prometheus(AnalysisSettings(prometheus_url=url)) as prometheus:
        answer = await prometheus.query("{__name__=~'.+'}")
    assert answer.error.startswith(f"an answer over {MAX_ANSWER_BYTES} bytes")
    assert sent < 50 * MAX_ANSWER_BYTES


async def test_nothing_listening_is_an_error_not_an_exception(unused_tcp_port: int) -> None:
    for url in (f"http://127.0.0.1:{unused_tcp_port}", "http://[bad", "ftp://127.0.0.1/"):
        async with Prometheus(AnalysisSettings(prometheus_url=url)) as prometheus:
            answer = await prometheus.query("up")
        assert answer.result == "error" and not answer.answered, (url, answer)


async def test_check_config_tries_every_query_with_a_sample(fake: FakePrometheus, aiohttp_server: Server) -> None:
    async def by_query(request: web.Request) -> web.StreamResponse:
        query = request.query["query"]
        if "(" not in query:
            return web.json_response({"status": "error", "errorType": "bad_data", "error": "parse error"}, status=400)
        return web.json_response(vector("1", "2") if "by" in query else vector())

    fake.answer = by_query
    _, url = await serve(fake, aiohttp_server)
    checks = (
        Check(name="good", query='sum(rate(x{job="{{deployment}}",env="{{environment}}"}[1m]))', max=1),
        Check(name="broken", query='x{job="{{deployment}}"', max=1),
        Check(name="several", query="sum by (job) (rate(x[1m]))", max=1),
    )
    settings = Settings(analysis=AnalysisSettings(prometheus_url=url, checks=checks))
    tried = await try_checks(settings)
    assert tried.problems == [
        "analysis.checks broken: its query (with a sample deployment) failed: bad_data: parse error",
        "analysis.checks several: its query (with a sample deployment) failed: the query must return one series, "
        "got 2 (aggregate them, e.g. with sum)",
    ]
    assert not tried.unreachable
    sent = sorted(r.query["query"] for r in fake.requests)
    assert 'sum(rate(x{job="sample",env="production"}[1m]))' in sent


async def test_check_config_with_prometheus_away_says_so(unused_tcp_port: int) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}"
    checks = (Check(name="a", query="up", max=1),)
    tried = await try_checks(Settings(analysis=AnalysisSettings(prometheus_url=url, checks=checks)))
    assert tried.problems == [] and tried.unreachable.startswith(f"Prometheus at {url} did not answer: ")
    assert await try_checks(Settings()) == type(tried)()


def test_cli_check_config_reports_every_failing_query(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], unused_tcp_port: int
) -> None:
    class Refusing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer = body({"status": "error", "errorType": "bad_data", "error": "parse error"})
            self.send_response(400)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    checks = (Check(name="a", query="x(", max=1), Check(name="b", query="y(", max=1))
    codes = []
    for url in (f"http://127.0.0.1:{server.server_address[1]}", f"http://127.0.0.1:{unused_tcp_port}"):
        settings = Settings(analysis=AnalysisSettings(prometheus_url=url, checks=checks))
        monkeypatch.setattr("watcher.config.load", lambda settings=settings, **_: settings)
        codes.append(cli.main(["--check-config"]))
    server.shutdown()
    server.server_close()
    assert codes == [2, 0]
    refused, unreachable = capsys.readouterr().err.split("invalid configuration:\n")[1].split("note: ")
    assert refused.splitlines() == [
        "  - analysis.checks a: its query (with a sample deployment) failed: bad_data: parse error",
        "  - analysis.checks b: its query (with a sample deployment) failed: bad_data: parse error",
        "deployment-watcher: ",
    ]
    assert unreachable.startswith("Prometheus at http://127.0.0.1:") and "queries were not tried" in unreachable

"""The read API of a real watcher checked against its own description by schemathesis: every answer
to generated requests has a documented status, content type and shape. The event stream never
ends, so it is checked in test_read_side.py instead."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.schemas import BaseSchema

from tests.conftest import Containers, WatcherProcess, WatcherSetup

TOKEN = "openapi-token-" + uuid.uuid4().hex

pytestmark = pytest.mark.docker


# Analysis on, against a Prometheus that is not there: every query an error, never a crash; the
# deployments that ask for it show an analysis in their answers.
ANALYSIS_CONFIG = """
analysis:
  prometheus_url: http://127.0.0.1:9
  interval_seconds: 1
  window_seconds: 3600
  checks:
    - name: error_rate
      query: sum(rate(errors{job="{{deployment}}"}[1m]))
      max: 0.02
      max_increase: 0.5
"""


@pytest.fixture(scope="module")
def watcher_setup(tmp_path_factory: pytest.TempPathFactory) -> WatcherSetup:
    config = tmp_path_factory.mktemp("config") / "watcher.yml"
    config.write_text(ANALYSIS_CONFIG)
    return WatcherSetup(
        ("--rollout.stable-seconds=1", "--stats.enabled=false"),
        env={"WATCHER_API_TOKEN": TOKEN, "WATCHER_CONFIG_FILE": str(config)},
    )


@pytest.fixture(scope="module")
def api_schema(watcher: WatcherProcess, busybox_image: str) -> Iterator[BaseSchema]:
    """The description the watcher serves, over a watcher that knows a few deployments (one with a container)."""
    containers = Containers(busybox_image)
    try:
        containers.run(labels={"deployment.name": "shop", "deployment.environment": "test",
                               "deployment.version": "1.0.0"})  # fmt: skip
        for name, status in (("api", "success"), ("web", "failed"), ("a b <c>", "in_progress")):
            body = json.dumps({"deployment": name, "environment": "production", "version": "2.0", "status": status,
                               "analysis": ["error_rate"]})  # fmt: skip
            request = urllib.request.Request(watcher.url + "/api/v1/deployments", data=body.encode(), method="POST",
                                             headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
            urllib.request.urlopen(request, timeout=10).close()
        watcher.wait_for("the container's deployment", lambda: watcher.get("/api/v1/deployments/test/shop")[0] == 200)
        schema = schemathesis.openapi.from_url(watcher.url + "/api/v1/openapi.json")
        yield schema.exclude(path="/api/v1/events")
    finally:
        containers.cleanup()


def test_the_api_answers_as_described(api_schema: BaseSchema) -> None:
    """Generated requests to every operation (the deployments' paths and filters among them) get
    answers with a documented status, content type and shape."""
    operations = [result.ok() for result in api_schema.get_all_operations()]  # type: ignore[union-attr]
    # Schemathesis leaves out the operation that serves the description it was loaded from.
    assert {(op.method.upper(), op.path) for op in operations} >= {
        ("GET", "/api/v1/deployments"), ("GET", "/api/v1/deployments/{environment}/{name}"),
        ("GET", "/api/v1/rollouts"),
    }  # fmt: skip
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def answers_as_described(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            case.call_and_validate()

        answers_as_described()


def test_known_deployments_validate(watcher: WatcherProcess, api_schema: BaseSchema) -> None:
    """The deployments that exist (not only generated names, mostly unknown) answer 200 in the documented shape."""
    operation = api_schema["/api/v1/deployments/{environment}/{name}"]["GET"]
    for environment, name in (("test", "shop"), ("production", "api"), ("production", "a b <c>")):
        case = operation.Case(path_parameters={"environment": environment, "name": name})
        response = case.call()
        assert response.status_code == 200, (environment, name)
        case.validate_response(response)
    listed = api_schema["/api/v1/deployments"]["GET"].Case(query={"environment": "production"})
    response = listed.call()
    listed.validate_response(response)
    # Other tests may run beside this one on the same daemon (pytest-xdist): count only this module's.
    assert {d["name"] for d in response.json()["deployments"]} >= {"api", "web", "a b <c>"}
    analysed = {d["name"]: d["analysis"] for d in response.json()["deployments"]}
    feed = api_schema["/api/v1/rollouts"]["GET"].Case(query={"since": 0, "limit": 5000})
    response = feed.call()
    feed.validate_response(response)
    assert {r["deployment"] for r in response.json()["rollouts"]} >= {"shop", "api", "web", "a b <c>"}
    bad = api_schema["/api/v1/rollouts"]["GET"].Case(query={"limit": 0})
    response = bad.call()
    assert response.status_code == 400
    bad.validate_response(response)
    assert analysed["api"]["mode"] == "gate" and analysed["api"]["checks"][0]["name"] == "error_rate"

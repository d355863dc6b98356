"""The compose files in deploy/ with Debian 12's own Compose (the `docker-compose` package, 1.29):
what docs/getting-started.md tells a Debian user to run.

`docker-compose config` validates each file against Compose 1.29's schema and resolves it; the
last test builds the watcher's service with it and brings it up against the real daemon.
"""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, docker, require_binary
from tests.polling import poll

pytestmark = pytest.mark.compose

DEPLOY = ROOT / "deploy"
STACK = DEPLOY / "docker-compose.yml"
EXAMPLE_APP = DEPLOY / "example-app" / "docker-compose.yml"
SOCKET = Path("/var/run/docker.sock")
GETTING_STARTED = ROOT / "docs" / "getting-started.md"
# The Debian commands as docs/getting-started.md gives them.
DOCUMENTED = (
    "apt-get install -y docker-compose",
    "cd deploy && DOCKER_GID=$(stat -c %g /var/run/docker.sock) docker-compose up -d --build",
)
# The host ports the stack publishes (the docs' addresses), by service.
PORTS = {"deployment-watcher": 9102, "prometheus": 9090, "alertmanager": 9093, "grafana": 3000}


def compose(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """docker-compose with only ``env`` of the variables the files read (none inherited by accident)."""
    binary = require_binary("docker-compose")
    clean = {key: value for key, value in os.environ.items() if key not in ("DOCKER_GID", "APP_VERSION", "GIT_SHA")}
    return subprocess.run([binary, *args], env={**clean, **env}, capture_output=True, text=True, timeout=timeout)


def resolved(file: Path, env: dict[str, str]) -> dict[str, Any]:
    """The file as `docker-compose config` resolves it; it must say nothing on stderr (Compose 1.29 warns
    there about keys it ignores)."""
    result = compose("-f", str(file), "config", env=env)
    assert result.returncode == 0, f"docker-compose config {file}:\n{result.stderr}"
    assert not result.stderr.strip(), f"docker-compose config {file} warned:\n{result.stderr}"
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def socket_gid() -> str:
    return str(SOCKET.stat().st_gid)


def test_getting_started_gives_the_debian_commands() -> None:
    """The commands these tests stand for are the ones the docs give."""
    text = GETTING_STARTED.read_text()
    for command in DOCUMENTED:
        assert command in text, command


def test_stack_resolves_with_debian_compose() -> None:
    """deploy/docker-compose.yml: its four services on the documented ports, the watcher built from the
    repository, reading the socket read-only through DOCKER_GID, Grafana's mounts where its provisioning looks."""
    config = resolved(STACK, {"DOCKER_GID": socket_gid()})
    services = config["services"]
    assert set(services) == set(PORTS)
    for name, port in PORTS.items():
        assert [(p["published"], p["target"]) for p in services[name]["ports"]] == [(port, port)], name

    watcher = services["deployment-watcher"]
    assert Path(watcher["build"]["context"]) == ROOT
    assert (ROOT / watcher["build"]["dockerfile"]).is_file()
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in watcher["volumes"]
    assert watcher["group_add"] == [socket_gid()]
    assert watcher["environment"]["WATCHER_WEB_LISTEN_ADDRESS"] == ":9102"

    prometheus_mounts = dict(volume.split(":")[:2] for volume in services["prometheus"]["volumes"])
    assert prometheus_mounts[str(DEPLOY / "prometheus")] == "/etc/prometheus"
    grafana_mounts = dict(volume.split(":")[:2] for volume in services["grafana"]["volumes"])
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/deployments.yml").read_text())
    assert grafana_mounts[str(DEPLOY / "grafana/dashboards")] == provider["providers"][0]["options"]["path"]
    assert grafana_mounts[str(DEPLOY / "grafana/provisioning")] == "/etc/grafana/provisioning"


def test_example_app_resolves_with_debian_compose() -> None:
    """deploy/example-app: the deployment labels take APP_VERSION and GIT_SHA, and Compose 1.29 keeps its
    two replicas (deploy.replicas)."""
    config = resolved(EXAMPLE_APP, {"APP_VERSION": "1.4.2", "GIT_SHA": "abc1234"})
    web = config["services"]["web"]
    assert web["labels"] == {
        "deployment.name": "example-web", "deployment.environment": "staging", "deployment.version": "1.4.2",
        "deployment.commit": "abc1234",
    }  # fmt: skip
    assert web["deploy"]["replicas"] == 2


def test_example_app_refuses_a_missing_version() -> None:
    """Without APP_VERSION, Compose 1.29 stops with the file's own message rather than deploy no version."""
    result = compose("-f", str(EXAMPLE_APP), "config", env={})
    assert result.returncode != 0
    assert "set APP_VERSION" in result.stderr, result.stderr


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def docker_up(port: int) -> float | None:
    """deployment_watcher_docker_up as the watcher on this port serves it; None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    except OSError:
        return None
    samples = [s for family in text_string_to_metric_families(body) for s in family.samples]
    return next((s.value for s in samples if s.name == "deployment_watcher_docker_up"), None)


@pytest.mark.docker
def test_watcher_service_builds_and_runs_with_debian_compose(
    debian_python_image: str, wheelhouse: str, tmp_path: Path
) -> None:
    """`docker-compose build` and `up` bring the watcher's service up from deploy/docker-compose.yml: it
    answers on :9102, connected to the daemon through the socket's group (DOCKER_GID), and turns healthy.

    Offline here, so the build gets the tests' local base image and wheelhouse as build arguments (the same
    as the watcher_image fixture's: its layers are reused), and the image a tag of its own (an override file)
    rather than the user's deployment-watcher:local.
    """
    port = PORTS["deployment-watcher"]
    assert not port_taken(port), f"port {port} is taken: the compose file publishes the watcher there"
    suffix = uuid.uuid4().hex[:10]
    image = f"deployment-watcher-test/watcher:compose-{suffix}"
    override = tmp_path / "override.yml"
    override.write_text(yaml.safe_dump({"services": {"deployment-watcher": {"image": image}}}))
    project = ["-p", f"dwcompose{suffix}", "-f", str(STACK), "-f", str(override)]
    env = {"DOCKER_GID": socket_gid()}

    def run(*args: str, timeout: float = 60) -> str:
        result = compose(*project, *args, env=env, timeout=timeout)
        assert result.returncode == 0, f"docker-compose {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result.stdout

    try:
        build_args = [f"BASE_IMAGE={debian_python_image}", f"WHEELHOUSE={wheelhouse}", "VERSION=0.0.0-test"]
        run("build", *(arg for value in build_args for arg in ("--build-arg", value)), "deployment-watcher",
            timeout=300)  # fmt: skip
        run("up", "-d", "--no-build", "deployment-watcher")
        [container] = run("ps", "-q", "deployment-watcher").split()

        def state() -> tuple[float | None, str]:
            assert docker("inspect", "--format", "{{.State.Running}}", container) == "true", "the watcher exited"
            return docker_up(port), docker("inspect", "--format", "{{.State.Health.Status}}", container)

        try:
            poll("the watcher connected to Docker (docker_up 1) and healthy", state, timeout=60, interval=0.5,
                 until=lambda seen: seen == (1.0, "healthy"))  # fmt: skip
        except AssertionError as error:
            logs = subprocess.run(["docker", "logs", "--tail", "40", container], capture_output=True, text=True)
            raise AssertionError(f"{error}\n{logs.stdout}{logs.stderr}") from None
    finally:
        compose(*project, "down", "-v", "--remove-orphans", env=env)
        docker("rmi", "-f", image, check=False)

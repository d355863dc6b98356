"""End to end: build the container image from the Dockerfile, offline, and run it against the
real Docker Engine next to a labelled container.

No registry is reachable here, so the base image is made locally with debootstrap (Debian 12
with its python3, cached across runs by tag) and the dependencies come from a wheelhouse
downloaded on the host into build/wheelhouse (the ``watcher_image`` fixture in tests/conftest.py,
shared with the Swarm stack test).
"""

from __future__ import annotations

import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Containers, docker, free_port, require_binary
from tests.pki import make_pki
from tests.polling import poll

pytestmark = pytest.mark.docker

SOCKET = Path("/var/run/docker.sock")


def http_get(url: str) -> tuple[int, str]:
    """Status and body of a GET; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def container_logs(name: str) -> str:
    """The last lines a container wrote, stdout and stderr (the watcher logs to stderr)."""
    result = subprocess.run(["docker", "logs", "--tail", "40", name], capture_output=True, text=True, timeout=30)
    return result.stdout + result.stderr


@contextmanager
def logs_on_failure(name: str) -> Iterator[None]:
    """A failed assertion inside says what the container logged."""
    try:
        yield
    except AssertionError as error:
        raise AssertionError(f"{error}\n{container_logs(name)}") from None


def test_image_runs_as_non_root_and_exports_a_labelled_deployment(watcher_image: str, containers: Containers) -> None:
    """The built image reads the socket read-only as uid 10001, exports a labelled container, turns healthy,
    and writes its state file into its volume."""
    require_binary("docker")
    assert SOCKET.is_socket(), f"{SOCKET} is not a socket: the test mounts the local Docker socket"
    labels = docker("image", "inspect", "--format", "{{json .Config.Labels}}", watcher_image)
    assert '"org.opencontainers.image.version":"0.0.0-test"' in labels
    assert docker("image", "inspect", "--format", "{{.Config.User}}", watcher_image) == "watcher"

    deployment = f"image-e2e-{uuid.uuid4().hex[:8]}"
    containers.run(labels={"deployment.name": deployment, "deployment.version": "1.2.3"})

    name = f"dw-image-{uuid.uuid4().hex[:10]}"
    port = free_port()
    try:
        docker(
            "run",
            "-d",
            "--name",
            name,
            "-v",
            f"{SOCKET}:{SOCKET}:ro",
            "--group-add",
            str(SOCKET.stat().st_gid),
            "-p",
            f"127.0.0.1:{port}:9102",
            watcher_image,
        )
        assert docker("exec", name, "id", "-u") == "10001"

        def exported() -> bool:
            status, body = http_get(f"http://127.0.0.1:{port}/metrics")
            if status != 200:
                return False
            return any(
                sample.name == "deployment_info"
                and sample.labels.get("deployment") == deployment
                and sample.labels.get("version") == "1.2.3"
                for family in text_string_to_metric_families(body)
                for sample in family.samples
            )

        def healthy() -> bool:
            return docker("inspect", "--format", "{{.State.Health.Status}}", name) == "healthy"

        def saved() -> bool:
            owner = docker("exec", name, "stat", "-c", "%u", "/var/lib/deployment-watcher/state.json", check=False)
            return owner == "10001"

        seen: set[str] = set()

        def progress() -> set[str]:
            assert docker("inspect", "--format", "{{.State.Running}}", name) == "true", "the container exited"
            seen.update({"metrics"} if exported() else set(), {"healthy"} if healthy() else set())
            if "metrics" in seen and saved():
                seen.add("saved by uid 10001")
            return seen

        with logs_on_failure(name):
            poll(
                f"/metrics showing {deployment}, the HEALTHCHECK healthy, the state file saved by uid 10001",
                progress, timeout=60, interval=0.5, until=lambda s: len(s) == 3,
            )  # fmt: skip
    finally:
        docker("rm", "-f", "-v", name, check=False)  # -v: the image's anonymous data volume


def test_image_healthcheck_speaks_https(watcher_image: str, tmp_path: Path) -> None:
    """With a web config (TLS, basic auth) given by environment, the HEALTHCHECK still turns healthy."""
    pki = make_pki(tmp_path)
    (tmp_path / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: {pki.server_cert.name}\n  key_file: {pki.server_key.name}\n"
        f"basic_auth_users:\n  prometheus: {bcrypt.hashpw(b'secret', bcrypt.gensalt(4)).decode()}\n"
    )
    tmp_path.chmod(0o755)  # readable by the image's user (uid 10001); test files only
    name = f"dw-image-tls-{uuid.uuid4().hex[:10]}"
    port = free_port()
    try:
        docker("run", "-d", "--name", name, "-v", f"{tmp_path}:/etc/watcher:ro", "-v", f"{SOCKET}:{SOCKET}:ro",
               "--group-add", str(SOCKET.stat().st_gid),
               "-e", "WATCHER_WEB_CONFIG_FILE=/etc/watcher/web.yml", "-p", f"127.0.0.1:{port}:9102",
               watcher_image)  # fmt: skip

        def health() -> str:
            assert docker("inspect", "--format", "{{.State.Running}}", name) == "true", "the container exited"
            return docker("inspect", "--format", "{{.State.Health.Status}}", name)

        with logs_on_failure(name):
            poll("the HEALTHCHECK healthy", health, timeout=60, interval=0.5, until=lambda s: s == "healthy")
        context = ssl.create_default_context(cafile=str(pki.ca))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", timeout=5, context=context)
        assert refused.value.code == 401
    finally:
        docker("rm", "-f", "-v", name, check=False)

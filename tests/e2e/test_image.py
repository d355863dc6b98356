"""End to end: build the container image from the Dockerfile, offline, and run it against the
real Docker Engine next to a labelled container.

No registry is reachable here, so the base image is made locally with debootstrap (Debian 12
with its python3, cached across runs by tag) and the dependencies come from a wheelhouse
downloaded on the host into build/wheelhouse.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
import tomllib
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

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "deployment-watcher-test/debian-python:12"
WHEELHOUSE = "build/wheelhouse"  # relative to ROOT, the build context
SOCKET = Path("/var/run/docker.sock")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PATH_ENV = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses for its main suite (not security)."""
    candidates: list[str] = []
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.exists():
        for stanza in deb822.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#")
            )
            suites = fields.get("Suites", "").split()
            if any("-" not in suite for suite in suites):
                candidates += fields.get("URIs", "").split()
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.exists():
        for line in sources_list.read_text().splitlines():
            match = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
            if match and "-" not in match.group(2):
                candidates.append(match.group(1))
    return next((uri for uri in candidates if "security" not in uri), DEFAULT_MIRROR)


@pytest.fixture(scope="session")
def debian_python_image(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Debian 12 image with python3 and python3-venv, made with debootstrap once and kept."""
    if docker("images", "-q", BASE_IMAGE):
        return BASE_IMAGE
    if shutil.which("debootstrap") is None:
        if os.geteuid() != 0:
            pytest.fail("debootstrap is missing and installing it needs root: apt-get install debootstrap")
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "debootstrap"], check=True, timeout=300)
    if os.geteuid() != 0:
        pytest.fail(f"making {BASE_IMAGE} with debootstrap needs root")
    rootfs = tmp_path_factory.mktemp("debian-rootfs")
    try:
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(rootfs),
                debian_mirror(),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "import", "-c", PATH_ENV, "-", BASE_IMAGE], stdin=tar.stdout, check=True, capture_output=True
        )
        assert tar.stdout is not None
        tar.stdout.close()
        assert tar.wait() == 0, "tar of the debootstrap root failed"
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def wheelhouse() -> str:
    """build/wheelhouse: the project's dependencies and build backend as CPython 3.11 x86_64 wheels."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    platform_args = ["--python-version", "3.11", "--implementation", "cp"]
    platform_args += [arg for abi in ("cp311", "abi3", "none") for arg in ("--abi", abi)]
    platform_args += [
        arg for tag in ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "any") for arg in ("--platform", tag)
    ]
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:"]
    result = subprocess.run(
        [*pip, "--dest", str(ROOT / WHEELHOUSE), *platform_args, *requirements],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"pip download failed:\n{result.stderr[-3000:]}"
    return WHEELHOUSE


@pytest.fixture(scope="module")
def watcher_image(debian_python_image: str, wheelhouse: str) -> Iterator[str]:
    """The image built from the Dockerfile on the Debian base, offline; removed afterwards."""
    tag = f"deployment-watcher-test/watcher:ci-{uuid.uuid4().hex[:10]}"
    try:
        docker(
            "build",
            "--build-arg",
            f"BASE_IMAGE={debian_python_image}",
            "--build-arg",
            f"WHEELHOUSE={wheelhouse}",
            "--build-arg",
            "VERSION=0.0.0-test",
            "-t",
            tag,
            str(ROOT),
            timeout=300,
        )
        yield tag
    finally:
        docker("rmi", "-f", tag, check=False)


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

"""Fixtures and helpers shared by the integration and end-to-end tests: the real Docker Engine, a
busybox image made locally, the project's image built offline (once per session), containers
with random names removed afterwards, a real watcher process (one per module: the ``watcher``
fixture, configured by ``watcher_setup``), and the Hypothesis profiles of every test.

A test that needs the engine or a binary fails (never skips) when it is missing: the README
test command installs and starts everything.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.engines import TRIXIE_ROOT, PodmanService, TrixieDockerd
from tests.polling import poll
from tests.private_dockerd import PrivateDockerd

# Every property test: few examples by default, a fresh draw each run, so the unit tests are a quick
# loop; 150 derandomised under CI, so a run there is thorough and repeatable; HYPOTHESIS_PROFILE=thorough
# to hunt. No example database: no files left behind. Here rather than in a test module, so a module
# run alone draws as many examples as in the whole suite.
settings.register_profile("dev", max_examples=30, deadline=None, database=None, print_blob=True)
settings.register_profile("ci", settings.get_profile("dev"), max_examples=150, derandomize=True)
settings.register_profile("thorough", settings.get_profile("dev"), max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


def examples(under_ci: int) -> int:
    """The examples of a property test that draws ``under_ci`` under CI: scaled with the profile loaded."""
    return max(1, under_ci * settings().max_examples // settings.get_profile("ci").max_examples)


BUSYBOX_IMAGE = "deployment-watcher-test/busybox:latest"
# The CI/CD API token of the watchers that report_service reports to.
API_TOKEN = "test-token-" + uuid.uuid4().hex
# A container that turns healthy once /tmp/ok exists (SERVE makes it at once), and one that burns a CPU.
HEALTHY_WHEN_FILE = (
    "--health-cmd", "test -f /tmp/ok", "--health-interval", "1s", "--health-retries", "1", "--health-timeout", "2s",
)  # fmt: skip
SERVE = "touch /tmp/ok; exec sleep 600"
BURN = "while :; do :; done"
OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run the README test command, which installs it")
    return path


def docker(*args: str, check: bool = True, timeout: float = 60) -> str:
    """Run the docker CLI, as a user of the watcher would."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def promtool(*args: str) -> None:
    """Run promtool from the repository root; fail on a non-zero exit or any warning."""
    binary = require_binary("promtool")
    result = subprocess.run([binary, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} exited {result.returncode}:\n{output}"
    assert "warning" not in output.lower(), f"promtool {' '.join(args)} warned:\n{output}"


def notify(url: str, *args: str, token: str) -> subprocess.CompletedProcess[str]:
    """`deployment-watcher notify` as a deploy script runs it."""
    return subprocess.run(
        [sys.executable, "-m", "watcher", "notify", "--url", url, *args],
        env={**os.environ, "WATCHER_API_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A Docker Engine that answers; fails the test when there is none."""
    require_binary("docker")
    result = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=30)
    if result.returncode != 0:
        pytest.fail(f"no Docker Engine answers: {result.stderr.decode().strip()}")


def busybox_tarball() -> bytes:
    """A root filesystem for `docker import`: /bin/busybox, its applet links and /tmp."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.fail("/bin/busybox is missing: install busybox-static")
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(tmp)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def busybox_image(docker_engine: None) -> str:
    """A busybox image made here (no registry is reachable)."""
    if not docker("images", "-q", BUSYBOX_IMAGE):
        subprocess.run(
            ["docker", "import", "-", BUSYBOX_IMAGE], input=busybox_tarball(), check=True, capture_output=True
        )
    return BUSYBOX_IMAGE


ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = "deployment-watcher-test/debian-python:12"
WHEELHOUSE = "build/wheelhouse"  # relative to ROOT, the build context
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


@pytest.fixture(scope="session")
def watcher_image(debian_python_image: str, wheelhouse: str) -> Iterator[str]:
    """The image built from the Dockerfile on the Debian base, offline, once per session; removed afterwards."""
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


@pytest.fixture
def private_dockerd(tmp_path: Path) -> Iterator[PrivateDockerd]:
    """A Docker daemon of the test's own, not started yet (the test picks live restore or not).

    Never restart the shared daemon: other tests use it at the same time.
    """
    require_binary("docker")
    require_binary("dockerd")
    if os.geteuid() != 0:
        pytest.fail("a private dockerd needs root: run the README test command as root")
    daemon = PrivateDockerd(log=tmp_path / "dockerd.log", image=BUSYBOX_IMAGE, image_tarball=busybox_tarball())
    try:
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture(scope="session")
def trixie_dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrixieDockerd]:
    """Docker Engine 26.1 (Debian 13's), started for the session in namespaces of its own."""
    require_binary("docker")
    if os.geteuid() != 0:
        pytest.fail("Docker Engine 26.1 in its own namespaces needs root: run tests/run-all.sh as root")
    log = tmp_path_factory.mktemp("dockerd-26") / "dockerd.log"
    daemon = TrixieDockerd(root=TRIXIE_ROOT, log=log, image=BUSYBOX_IMAGE, image_tarball=busybox_tarball())
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture(scope="session")
def podman_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanService]:
    """Podman 4.3's Docker-compatible API, started for the session with a storage of its own."""
    require_binary("docker")
    if os.geteuid() != 0:
        pytest.fail("the Podman service needs root: run tests/run-all.sh as root")
    log = tmp_path_factory.mktemp("podman") / "podman.log"
    service = PodmanService(log=log, image=BUSYBOX_IMAGE, image_tarball=busybox_tarball())
    try:
        service.start()
        yield service
    finally:
        service.cleanup()


def unique(prefix: str) -> str:
    """A name no other test, or run, uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def labels(name: str, version: str, environment: str = "test", **extra: str) -> dict[str, str]:
    """The labels of a tracked container of ``name`` at ``version`` (commit ``sha-<version>``)."""
    return {
        "deployment.name": name,
        "deployment.environment": environment,
        "deployment.version": version,
        "deployment.commit": f"sha-{version}",
        **extra,
    }


@dataclass
class Containers:
    """Starts containers with random names and removes every one of them at the end."""

    image: str
    names: list[str] = field(default_factory=list)

    def run(self, *, labels: dict[str, str], command: str = "sleep 600", options: tuple[str, ...] = ()) -> str:
        name = f"dw-test-{uuid.uuid4().hex[:10]}"
        self.names.append(name)
        label_args = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
        docker("run", "-d", "--name", name, *label_args, *options, self.image, "sh", "-c", command)
        return name

    def remove(self, name: str) -> None:
        docker("rm", "-f", name)

    def cleanup(self) -> None:
        if self.names:
            docker("rm", "-f", "-v", *self.names, check=False)


@pytest.fixture
def containers(busybox_image: str) -> Iterator[Containers]:
    made = Containers(busybox_image)
    try:
        yield made
    finally:
        made.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class WatcherProcess:
    """A real `python -m watcher` process and an HTTP client for it."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path
    ssl_context: ssl.SSLContext | None = None  # set: talk https with this client context
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request, e.g. Authorization

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def get(self, path: str, *, accept: str = "") -> tuple[int, str, str]:
        """Status, content type and body of a GET."""
        headers = {**self.headers, **({"Accept": accept} if accept else {})}
        request = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.ssl_context) as response:
                return response.status, response.headers["Content-Type"], response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()

    def samples(self) -> list[Sample]:
        _, _, body = self.get("/metrics")
        return [s for family in text_string_to_metric_families(body) for s in family.samples]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample with this name and these labels (a subset), or None."""
        found = [s.value for s in self.samples() if s.name == name and labels.items() <= s.labels.items()]
        assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
        return found[0] if found else None

    def expect(self, name: str, expected: float, *, timeout: float = 10, **labels: str) -> None:
        """Wait until /metrics shows ``expected`` for that sample (renderings lag a change by up to a second)."""
        self.wait_for(f"{name}{labels} == {expected}", lambda: self.value(name, **labels) == expected, timeout=timeout)

    def fresh(self) -> None:
        """Wait until /metrics shows the watcher's own counters as they are now (two renderings later)."""
        own = {"part": "own"}
        start = self.value("deployment_watcher_exposition_renders_total", **own) or 0
        self.wait_for(
            "a fresh rendering",
            lambda: (self.value("deployment_watcher_exposition_renders_total", **own) or 0) >= start + 2,
        )

    def wait_for(self, what: str, check: Callable[[], bool], *, timeout: float = 30) -> None:
        """Poll ``check`` until true; fail at once if the watcher exits, with its log tail either way."""

        def running_check() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the watcher exited ({self.process.returncode}) while waiting for {what}")
            return check()

        try:
            poll(what, running_check, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def stop_cleanly(self) -> None:
        """SIGTERM, and the watcher must exit 0 (its log tail when not)."""
        code = self.stop()
        assert code == 0, f"the watcher did not stop cleanly on SIGTERM ({code}):\n{self.tail()}"

    def wait_ready(self, what: str = "/ready") -> None:
        """Until /ready says the watcher is connected to Docker and synced."""
        self.wait_for(what, lambda: self.get("/ready")[0] == 200)


def report_service(watcher: WatcherProcess, n: int) -> None:
    """A rollout of `service-<n>` reported done to the CI/CD API of a watcher started with API_TOKEN."""
    body = {
        "deployment": f"service-{n:04d}", "environment": "production", "version": "1.0.0",
        "commit": f"{n:040x}", "status": "success", "started_at": 1_700_000_000, "finished_at": 1_700_000_042,
    }  # fmt: skip
    assert post_report(watcher, body, token=API_TOKEN) in (200, 201)


def post_report(watcher: WatcherProcess, body: dict[str, object], *, token: str) -> int:
    """A report POSTed to the CI/CD API of ``watcher`` (started with ``token``): the answer's status."""
    request = urllib.request.Request(
        f"{watcher.url}/api/v1/deployments", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def head(client: socket.socket) -> str:
    """The status line and headers of the answer on ``client``."""
    received = b""
    with contextlib.suppress(TimeoutError):
        while b"\r\n\r\n" not in received:
            chunk = client.recv(4096)
            if not chunk:
                break
            received += chunk
    return received.partition(b"\r\n\r\n")[0].decode(errors="replace")


def stream(port: int, source: str) -> tuple[socket.socket, str]:
    """A GET /api/v1/events from ``source``, left open; with the head of its answer."""
    client = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    client.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return client, head(client)


def _limit_open_files(count: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


def start_watcher(
    tmp: Path,
    *flags: str,
    env: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
    port: int | None = None,
    open_files: int | None = None,
) -> WatcherProcess:
    """Start the watcher on ``port`` (default: a free one) and wait until it serves /health (over https
    with ``ssl_context``); with ``open_files``, under that limit of file descriptors (``ulimit -n``).

    Its state file goes to a directory of its own unless ``flags`` give ``--storage.directory``.
    """
    port = port or free_port()
    log = tmp / f"watcher-{port}.log"
    defaults = [
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=debug",
        f"--storage.directory={tmp}/data-{port}",
        "--exposition.max-staleness-seconds=1",  # the watcher's own counters lag by at most this
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "watcher", *defaults, *flags],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        preexec_fn=None if open_files is None else lambda: _limit_open_files(open_files),
    )
    watcher = WatcherProcess(port, process, log, ssl_context, headers or {})

    def healthy() -> bool:
        try:
            return watcher.get("/health")[0] == 200
        except OSError:
            return False

    watcher.wait_for("/health", healthy, timeout=20)
    return watcher


@dataclass(frozen=True)
class WatcherSetup:
    """The flags and environment of a module's shared watcher (the ``watcher`` fixture)."""

    flags: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def watcher_setup() -> WatcherSetup:
    """A module that uses ``watcher`` overrides this fixture with its flags (it may use other fixtures)."""
    return WatcherSetup()


@pytest.fixture(scope="module")
def watcher(
    watcher_setup: WatcherSetup, tmp_path_factory: pytest.TempPathFactory, docker_engine: None
) -> Iterator[WatcherProcess]:
    """One watcher for the module's tests, ready (connected and synced); it must stop cleanly at the end,
    and the CI/CD API token it was given must never show in its log."""
    process = start_watcher(tmp_path_factory.mktemp("watcher"), *watcher_setup.flags, env=watcher_setup.env)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop_cleanly()
        token = watcher_setup.env.get("WATCHER_API_TOKEN")
        assert not token or token not in process.log.read_text(), "the token leaked into the log"


@dataclass
class Prometheus:
    """A real Prometheus server started by a test, and its HTTP API."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else [data]
        return result

    def rule_iterations(self) -> dict[str, float]:
        """How often Prometheus has evaluated each rule group (its own counter), by group."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            text = response.read().decode()
        families = text_string_to_metric_families(text)
        name = "prometheus_rule_group_iterations_total"
        return {s.labels["rule_group"]: s.value for family in families for s in family.samples if s.name == name}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run_prometheus(tmp: Path, config_file: Path, *flags: str) -> Prometheus:
    """Start ``prometheus`` with this config (and ``flags``) on a free port, its data under ``tmp``; wait until ready."""
    binary = require_binary("prometheus")
    port = free_port()
    log = tmp / "prometheus.log"
    process = subprocess.Popen(
        [binary, f"--config.file={config_file}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", *flags],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    prometheus = Prometheus(port, process, log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited ({process.returncode})")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    try:
        poll("prometheus /-/ready", ready, timeout=60, interval=0.5, retry_on=(OSError,))
    except AssertionError as exc:
        prometheus.stop()
        raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from None
    return prometheus

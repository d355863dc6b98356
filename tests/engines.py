"""The container engines the engine-matrix tests run the watcher against.

- Docker Engine 20.10 (Debian 12's docker.io): the shared daemon at /var/run/docker.sock.
- Docker Engine 26.1 (Debian 13's docker.io): its ``dockerd`` from a ``debootstrap trixie``
  root (``TRIXIE_ROOT``, made by tests/run-all.sh), in a mount and a network namespace of its
  own. The root is made the namespace's root by ``pivot_root``, not entered by ``chroot``:
  under a chroot, ``docker exec`` (so every health check) joins the container's mount
  namespace at the host's root instead of the container's. Its own network namespace
  because ``--bridge=none`` deletes the host's docker0.
- Podman 4.3 (Debian 12's podman): ``podman system service``, its Docker-compatible socket,
  with a storage, run directory and containers.conf of its own. Without systemd nothing runs
  its health checks on a timer, so ``PodmanService`` plays the timer.

Each removes what it made (containers, processes, mounts, files) in ``cleanup``, also after a
failure half-way. The docker CLI (20.10, API 1.41) talks to every engine.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.polling import poll

TRIXIE_ROOT = Path("/var/cache/deployment-watcher-tests/trixie")
SHARED_HOST = "unix:///var/run/docker.sock"
STOP_TIMEOUT = 30  # seconds a daemon may take to shut down before it is killed
# What the tests' health-checked containers use; on Podman the fixture runs the checks at this interval.
HEALTH_INTERVAL = 1.0


def require(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run tests/run-all.sh, which installs it")
    return path


@dataclass
class ContainerEngine:
    """One engine: the DOCKER_HOST-style URL the watcher uses, and the docker CLI against it."""

    name: str  # docker-20.10, docker-26.1, podman-4.3
    host: str
    image: str
    podman: PodmanService | None = None  # set for Podman: runs its health checks
    names: list[str] = field(default_factory=list)  # containers made by `run`, removed by `cleanup`

    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        return cli(self.host, *args, check=check, timeout=timeout)

    def version(self) -> tuple[str, str]:
        """The engine's version and API version, as /version says."""
        version, api = self.docker("version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}").split()
        return version, api

    def run(self, *, labels: dict[str, str], command: str = "sleep 600", options: tuple[str, ...] = ()) -> str:
        """A container with a random name and no network, stopped within a second."""
        name = f"dw-test-{uuid.uuid4().hex[:10]}"
        self.names.append(name)
        label_args = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
        self.docker(
            "run", "-d", "--name", name, "--network=none", "--stop-timeout=1",
            *label_args, *options, self.image, "sh", "-c", command,
        )  # fmt: skip
        if self.podman is not None and "--health-cmd" in options:
            self.podman.check_health_of(name)
        return name

    def remove(self, name: str) -> None:
        self.docker("rm", "-f", name)

    def cleanup(self) -> None:
        """Remove the containers this test made."""
        if self.names:
            self.docker("rm", "-f", "-v", *self.names, check=False)
            self.names.clear()


def cli(host: str, *args: str, check: bool = True, timeout: float = 60) -> str:
    result = subprocess.run(["docker", "-H", host, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker -H {host} {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def _wait_until_answers(what: str, host: str, process: subprocess.Popen[bytes], log: Path) -> None:
    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited during start-up ({process.returncode})")
        return subprocess.run(["docker", "-H", host, "version"], capture_output=True, timeout=10).returncode == 0

    try:
        poll(f"{what} to answer", answers, timeout=60, interval=0.1)
    except AssertionError as exc:
        pytest.fail(f"{exc}\n{tail(log)}")


def tail(log: Path, lines: int = 30) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, as an init system stops a daemon; SIGKILL if it takes longer than STOP_TIMEOUT."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _unmount_under(base: Path) -> None:
    """Unmount what is mounted below ``base`` in this mount namespace, deepest first."""
    prefix = f"{base}/"
    points = [
        point
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if (point := line.split()[4].replace("\\040", " ")).startswith(prefix)
    ]
    for point in sorted(points, key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)


class TrixieDockerd:
    """Debian 13's dockerd (and the containerd it starts) from ``root``, in namespaces of its own.

    The namespace's root is ``root`` itself (mounted on itself, then ``pivot_root``); /proc,
    /sys and /dev are the host's, /run and /tmp fresh tmpfs, the data root and the socket
    directory are bind-mounted from ``base`` so that the host reaches the socket and the test
    deletes the data. Ending every process in the mount namespace ends its mounts.
    """

    def __init__(self, *, root: Path, log: Path, image: str, image_tarball: bytes, address: str | None = None) -> None:
        self.address = address  # on the namespace's loopback, for `swarm init --advertise-addr`
        self.root = root
        self.log = log
        self.image = image
        self._tarball = image_tarball
        self.base = Path(tempfile.mkdtemp(prefix="dw26-", dir="/tmp"))
        self._process: subprocess.Popen[bytes] | None = None
        self._namespace = ""  # the mount namespace, as /proc/PID/ns/mnt reads, once started

    @property
    def host(self) -> str:
        return f"unix://{self.base}/sock/docker.sock"

    def start(self) -> None:
        if not (self.root / "usr/sbin/dockerd").exists():
            pytest.fail(f"no Debian 13 root with docker.io at {self.root}: run tests/run-all.sh, which makes it")
        for directory in (self.base / "sock", self.base / "data", self.root / "var/lib/docker"):
            directory.mkdir(parents=True, exist_ok=True)
        root, base = shlex.quote(str(self.root)), shlex.quote(str(self.base))
        dockerd = (
            "/usr/sbin/dockerd --host=unix:///run/dwtest/docker.sock --bridge=none --iptables=false --ip-masq=false"
        )
        loopback = f"ip link set lo up; ip addr add {shlex.quote(self.address)}/32 dev lo;" if self.address else ""
        script = f"""set -e
            {loopback}
            mount --bind {root} {root}
            mount -t proc proc {root}/proc
            mount --rbind /sys {root}/sys
            mount --rbind /dev {root}/dev
            mount -t tmpfs tmpfs {root}/run
            mount -t tmpfs tmpfs {root}/tmp
            mkdir {root}/run/dwtest
            mount --bind {base}/sock {root}/run/dwtest
            mount --bind {base}/data {root}/var/lib/docker
            cd {root}
            pivot_root . mnt
            exec chroot . sh -c 'umount -l /mnt && exec {dockerd}'
        """
        # unshare, sh and chroot each exec the next: the process is dockerd itself.
        args = [require("unshare"), "--mount", "--net", "--", "sh", "-c", script]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        with contextlib.suppress(OSError):  # exited already: the wait below says so
            self._namespace = os.readlink(f"/proc/{self._process.pid}/ns/mnt")
        _wait_until_answers("dockerd 26.1", self.host, self._process, self.log)
        subprocess.run(
            ["docker", "-H", self.host, "import", "-", self.image],
            input=self._tarball, check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def cleanup(self) -> None:
        """Remove its containers, stop it, end what is left in its namespace, delete its files."""
        try:
            if self._process is not None and self._process.poll() is None:
                ids = cli(self.host, "ps", "-aq", check=False).split()
                if ids:
                    cli(self.host, "rm", "-f", *ids, check=False)
        finally:
            _stop(self._process)
            self._end_namespace()
            shutil.rmtree(self.base, ignore_errors=True)

    def _end_namespace(self) -> None:
        """SIGKILL to what still runs in its mount namespace (containerd, shims); its mounts go with the last."""
        if not self._namespace or self._namespace == os.readlink("/proc/self/ns/mnt"):
            return

        def members() -> list[int]:
            found = []
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        if os.readlink(entry / "ns/mnt") == self._namespace:
                            found.append(int(entry.name))
                    except OSError:
                        continue  # gone meanwhile
            return found

        for pid in members():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        poll("the namespace's processes to end", lambda: not members(), timeout=30)


class PodmanService:
    """``podman system service`` on a socket of its own, with its own storage and configuration."""

    def __init__(self, *, log: Path, image: str, image_tarball: bytes) -> None:
        self.log = log
        self.image = image
        self._tarball = image_tarball
        self.base = Path(tempfile.mkdtemp(prefix="dwpm-", dir="/tmp"))
        self._process: subprocess.Popen[bytes] | None = None
        self._checked: set[str] = set()  # containers whose health checks the timer runs
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._timer = threading.Thread(target=self._run_health_checks, daemon=True)
        base = self.base
        # No systemd: cgroupfs, and events in a file. Everything under base, nothing in /etc or /var.
        # No default ulimits: rootful Podman raises every container's nofile limit above the hard
        # limit, which runc may not do without CAP_SYS_RESOURCE (missing here, as in many CI runners).
        (base / "containers.conf").write_text(
            "[containers]\n"
            "default_ulimits = []\n"
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{base}/events.log"\n'
            f'tmp_dir = "{base}/tmp"\n'
            f'volume_path = "{base}/volumes"\n'
        )
        (base / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\nrunroot = "{base}/run"\ngraphroot = "{base}/root"\n'
        )
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(base / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(base / "storage.conf"),
        }

    @property
    def host(self) -> str:
        return f"unix://{self.base}/podman.sock"

    def podman(self, *args: str, check: bool = True, input_: bytes | None = None) -> str:
        result = subprocess.run([require("podman"), *args], input=input_, capture_output=True, env=self.env, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed: {result.stderr.decode(errors='replace').strip()}")
        return result.stdout.decode(errors="replace").strip()

    def start(self) -> None:
        # A network namespace of its own: nothing it does to networks touches the host's.
        args = [require("unshare"), "--net", "--", require("podman"), "system", "service", "--time=0", self.host]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        _wait_until_answers("podman system service", self.host, self._process, self.log)
        self.podman("import", "-", self.image, input_=self._tarball)
        self._timer.start()

    def check_health_of(self, container: str) -> None:
        """Run this container's health check every HEALTH_INTERVAL, as Podman's systemd timer would."""
        with self._lock:
            self._checked.add(container)

    def _run_health_checks(self) -> None:
        while not self._stopping.wait(HEALTH_INTERVAL):
            with self._lock:
                names = list(self._checked)
            for name in names:
                # Exit 1: unhealthy (that is the point); 125: the container is gone or stopped.
                result = subprocess.run(
                    ["podman", "healthcheck", "run", name], capture_output=True, env=self.env, timeout=30
                )
                if result.returncode not in (0, 1):
                    with self._lock:
                        self._checked.discard(name)

    def cleanup(self) -> None:
        """Stop the health checks, remove every container, stop the service, unmount, delete its files."""
        self._stopping.set()
        if self._timer.is_alive():
            self._timer.join(timeout=STOP_TIMEOUT)
        try:
            self.podman("rm", "--all", "--force", "--time=0", check=False)
        finally:
            _stop(self._process)
            self._end_leftovers()
            _unmount_under(self.base)
            shutil.rmtree(self.base, ignore_errors=True)

    def _end_leftovers(self) -> None:
        """conmon and containers that outlived the service: their command lines name its directory."""
        marker = str(self.base).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ValueError):
                continue  # gone meanwhile

"""A Docker daemon of the test's own, which the test may stop and start.

The shared daemon on /var/run/docker.sock must never be restarted, so daemon restarts are
tested on a private ``dockerd``: its own socket, data root, exec root, pidfile, config file
and containerd namespace, no bridge and no iptables (containers run with ``--network none``).
Paths are short because unix socket paths (containerd's is under the exec root) are limited
to 108 bytes. ``cleanup`` removes everything, also after a failure half-way.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.polling import poll

STOP_TIMEOUT = 30  # seconds dockerd may take to shut down before it is killed


class PrivateDockerd:
    def __init__(
        self, *, log: Path, image: str, image_tarball: bytes, netns: str | None = None, own_socket_path: bool = False
    ) -> None:
        self.netns = netns  # a network namespace made by the caller (ip netns add); None: one of its own
        # True: dockerd runs in a mount namespace of its own where /var/run/docker.sock is its
        # socket, so that its containers mounting that path (a stack's watcher) reach it, not the
        # shared daemon. Its containerd and runc are its children and share that namespace.
        self.own_socket_path = own_socket_path
        self.base = Path(tempfile.mkdtemp(prefix="dwd-", dir="/tmp"))
        self.namespace = f"dwtest-{uuid.uuid4().hex[:8]}"
        self.log = log
        self.image = image
        self._tarball = image_tarball
        self._process: subprocess.Popen[bytes] | None = None
        self._imported = False
        (self.base / "daemon.json").write_text("{}")  # not /etc/docker/daemon.json

    @property
    def host(self) -> str:
        return f"unix://{self.base}/docker.sock"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, *, live_restore: bool) -> None:
        """Start dockerd and wait until it answers; the first start imports the image."""
        assert not self.running, "already running"
        # A network namespace of its own: with --bridge=none dockerd deletes the host's docker0,
        # which the shared daemon (and every other test) needs.
        launcher = (
            # nsenter, not `ip netns exec`: that remounts /sys and hides the cgroup mounts from dockerd.
            ["nsenter", f"--net=/run/netns/{self.netns}", "--"]
            if self.netns
            else [shutil.which("unshare") or pytest.fail("unshare (util-linux) is not installed"), "--net", "--"]
        )
        if self.own_socket_path:
            # private propagation: nothing mounted in there shows on the host.
            # A UTS namespace too: a node of its own has a hostname of its own (the swarm node's).
            launcher += ["unshare", "--mount", "--propagation", "private", "--uts", "--"]
        args = [
            *launcher,
            shutil.which("dockerd") or pytest.fail("dockerd is not installed: run the README test command"),
            f"--host={self.host}",
            f"--config-file={self.base}/daemon.json",
            f"--data-root={self.base}/data",
            f"--exec-root={self.base}/exec",
            f"--pidfile={self.base}/dockerd.pid",
            # A containerd already running at its default address is shared: keep apart in it.
            f"--containerd-namespace={self.namespace}",
            f"--containerd-plugins-namespace={self.namespace}-plugins",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            *(["--live-restore"] if live_restore else []),
        ]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

        def answers() -> bool:
            if not self.running:
                raise AssertionError("dockerd exited during start-up")
            return self.docker("version", check=False, timeout=10) is not None

        try:
            poll("dockerd to answer", answers, timeout=60, interval=0.1)
        except AssertionError as exc:
            pytest.fail(f"{exc}\n{self.tail()}")
        if self.own_socket_path:
            self._mount_socket()
        if not self._imported:
            subprocess.run(
                ["docker", "-H", self.host, "import", "-", self.image],
                input=self._tarball,
                check=True,
                capture_output=True,
                timeout=60,
            )
            self._imported = True

    def _mount_socket(self) -> None:
        """Its socket bind-mounted over /var/run/docker.sock inside its own mount namespace only."""
        assert self._process is not None
        subprocess.run(
            ["nsenter", f"--mount=/proc/{self._process.pid}/ns/mnt", "--",
             "mount", "--bind", f"{self.base}/docker.sock", "/var/run/docker.sock"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip

    def set_hostname(self, name: str) -> None:
        """The hostname in its UTS namespace (own_socket_path only), before it joins a swarm."""
        assert self._process is not None and self.own_socket_path
        subprocess.run(["nsenter", f"--uts=/proc/{self._process.pid}/ns/uts", "--", "hostname", name],
                       check=True, capture_output=True, timeout=30)  # fmt: skip

    def socket_gid(self) -> int:
        """The group of its socket: what its containers need to read it as a non-root user."""
        return (self.base / "docker.sock").stat().st_gid

    def stop(self) -> None:
        """SIGTERM, as an init system stops it; SIGKILL if it takes longer than STOP_TIMEOUT."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> str | None:
        """The docker CLI against this daemon: its output, or None when it failed and check is off."""
        result = subprocess.run(["docker", "-H", self.host, *args], capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            if check:
                raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
            return None
        return result.stdout.strip()

    def run(self, name: str, *, labels: dict[str, str], command: str, options: tuple[str, ...] = ()) -> str:
        """A container with no network that stops within a second (sh ignores SIGTERM as PID 1)."""
        label_args = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
        self.docker(
            "run", "-d", "--name", name, "--network=none", "--stop-timeout=1",
            *label_args, *options, self.image, "sh", "-c", command,
        )  # fmt: skip
        return name

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def cleanup(self) -> None:
        """Remove its containers, stop it, end what it left running, unmount, delete its files."""
        try:
            if not self.running:
                # Containers kept by live-restore need their daemon to be removed.
                self.start(live_restore=False)
            ids = (self.docker("ps", "-aq", check=False) or "").split()
            if ids:
                self.docker("rm", "-f", *ids, check=False)
        except (Exception, pytest.fail.Exception):
            pass  # a daemon that cannot start again: what it left is ended below
        finally:
            self.stop()
            self._end_leftovers()
            self._unmount()
            shutil.rmtree(self.base, ignore_errors=True)

    def _end_leftovers(self) -> None:
        """containerd and shims it started that outlived it: their command lines name its
        containerd directory (the watcher's names only the socket, and has stopped anyway)."""
        marker = f"{self.base}/exec/containerd".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ValueError):
                continue  # gone meanwhile

    def _unmount(self) -> None:
        """dockerd bind-mounts its data root onto itself and leaves it; unmount deepest first."""
        prefix = f"{self.base}/"
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
        for point in sorted(points, key=len, reverse=True):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)

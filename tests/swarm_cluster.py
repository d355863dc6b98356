"""Private Swarm clusters for tests: daemons in network namespaces of their own, joined into a swarm.

The shared daemon must never join a swarm (other tests use it). Each node here is a private
``dockerd`` started with ``ip netns exec`` in a namespace made for it; the namespaces of a
cluster are joined by veth pairs to one bridge namespace, addresses 10.99.<net>.<n>/24.
``cleanup`` leaves the swarm, stops the daemons and deletes namespaces and veths, also after a
failure half-way.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

from tests.polling import poll
from tests.private_dockerd import PrivateDockerd


def _ip(*args: str, check: bool = True) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


class SwarmCluster:
    """``size`` nodes: the first is the manager, the others workers."""

    def __init__(
        self, *, tmp_path: Path, image: str, image_tarball: bytes, size: int = 1, own_socket_path: bool = False
    ) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.net = 99  # 10.99.0.0/24: private to these namespaces, never routed on the host
        self.namespaces = [f"dwsw-{self.tag}-{n}" for n in range(size)]
        self.addresses = [f"10.{self.net}.0.{n + 1}" for n in range(size)]
        self.nodes = [
            PrivateDockerd(
                log=tmp_path / f"dockerd-{n}.log",
                image=image,
                image_tarball=image_tarball,
                netns=ns,
                own_socket_path=own_socket_path,
            )
            for n, ns in enumerate(self.namespaces)
        ]
        self._made: list[str] = []

    @property
    def manager(self) -> PrivateDockerd:
        return self.nodes[0]

    def start(self) -> None:
        """Namespaces and links, the daemons, ``swarm init`` on the first and ``swarm join`` of the others."""
        for n, ns in enumerate(self.namespaces):
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            if len(self.namespaces) == 1:
                _ip("-n", ns, "addr", "add", f"{self.addresses[n]}/32", "dev", "lo")
        if len(self.namespaces) > 1:
            # A veth pair from each node to the first: point to point, the first routes nothing else.
            first = self.namespaces[0]
            _ip("-n", first, "addr", "add", f"{self.addresses[0]}/32", "dev", "lo")
            for n, ns in enumerate(self.namespaces[1:], start=1):
                here, there = f"dw{self.tag}m{n}", f"dw{self.tag}w{n}"
                _ip("link", "add", here, "netns", first, "type", "veth", "peer", "name", there, "netns", ns)
                _ip("-n", ns, "addr", "add", f"{self.addresses[n]}/32", "dev", "lo")
                _ip("-n", first, "link", "set", here, "up")
                _ip("-n", ns, "link", "set", there, "up")
                _ip("-n", first, "route", "add", f"{self.addresses[n]}/32", "dev", here)
                _ip("-n", ns, "route", "add", f"{self.addresses[0]}/32", "dev", there)
        for n, node in enumerate(self.nodes):
            node.start(live_restore=False)
            if node.own_socket_path:
                node.set_hostname(f"node-{n}")
        self.manager.docker("swarm", "init", "--advertise-addr", self.addresses[0], "--listen-addr",
                            f"{self.addresses[0]}:2377")  # fmt: skip
        if len(self.nodes) > 1:
            token = self.manager.docker("swarm", "join-token", "-q", "worker")
            assert token
            for n, node in enumerate(self.nodes[1:], start=1):
                node.docker("swarm", "join", "--token", token, "--advertise-addr", self.addresses[n],
                            "--listen-addr", f"{self.addresses[n]}:2377", f"{self.addresses[0]}:2377")  # fmt: skip

    def node_id(self, n: int) -> str:
        node_id = self.nodes[n].docker("info", "--format", "{{.Swarm.NodeID}}")
        assert node_id
        return node_id

    def tag_image(self, *tags: str) -> None:
        """More tags of the test image on every node (no registry: each node has its own copy)."""
        for node in self.nodes:
            for tag in tags:
                node.docker("tag", node.image, tag)

    def load_image(self, image: str, tarball: Path) -> None:
        """An image of the shared daemon on every node, by ``docker save`` and ``docker load`` (no registry)."""
        subprocess.run(["docker", "save", "-o", str(tarball), image], check=True, capture_output=True, timeout=300)
        try:
            for node in self.nodes:
                node.docker("load", "-i", str(tarball), timeout=300)
        finally:
            tarball.unlink(missing_ok=True)

    def inspect(self, kind: str, name: str) -> Any:
        """``docker KIND inspect NAME`` on the manager, as JSON."""
        return json.loads(self.manager.docker(kind, "inspect", name) or "[]")[0]

    def cleanup(self) -> None:
        """Services removed, every node out of the swarm and stopped, namespaces and links deleted."""
        try:
            if self.manager.running:
                services = (self.manager.docker("service", "ls", "-q", check=False) or "").split()
                if services:
                    self.manager.docker("service", "rm", *services, check=False)
                    # Tasks end, then their networks can go.
                    poll("tasks gone", lambda: not (self.manager.docker("ps", "-q", check=False) or "").split(),
                         timeout=60)  # fmt: skip
                networks = (self.manager.docker("network", "ls", "-q", "--filter", "driver=overlay",
                                                check=False) or "").split()  # fmt: skip
                for network in networks:
                    self.manager.docker("network", "rm", network, check=False)
            for node in reversed(self.nodes):
                if node.running:
                    node.docker("swarm", "leave", "--force", check=False, timeout=30)
        finally:
            for node in self.nodes:
                node.cleanup()
            for ns in self._made:
                _ip("netns", "delete", ns, check=False)  # its veth ends go with it

"""A real two-node swarm: CPU and memory from the worker, the rollout from the manager, and a
Prometheus that finds both watchers itself (``dockerswarm_sd_configs``, role tasks).

Two private daemons, each in a network namespace of its own joined by a veth pair (10.99.0.1
manager, 10.99.0.2 worker). A watcher runs on each node as a process in that node's namespace,
on its node's address, port 9102: where the stack's global service publishes it (host mode,
deploy/swarm/stack.yml). The global service itself is there too, a stand-in task per node
(no registry here to ship the watcher's image), so that Prometheus, running on the manager
with deploy/swarm/prometheus.yml as shipped (only the Docker socket's path differs), discovers
one target per node from the manager's task list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BUSYBOX_IMAGE, busybox_tarball, require_binary
from tests.polling import poll
from tests.swarm_cluster import SwarmCluster

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
PORT = 9102
# Some CPU, then idle: the worker's watcher has CPU seconds to report.
BUSY_THEN_SLEEP = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exec sleep 600"


class InNamespace:
    """A process in a node's network namespace, and HTTP requests made from there."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def command(self, *args: str) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.namespace}", "--", *args]

    def get(self, url: str) -> str | None:
        result = subprocess.run(self.command("curl", "-sf", "--max-time", "5", url), capture_output=True, text=True)
        return result.stdout if result.returncode == 0 else None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SwarmCluster]:
    require_binary("dockerd")
    require_binary("nsenter")
    if os.geteuid() != 0:
        pytest.fail("private daemons need root")
    made = SwarmCluster(tmp_path=tmp_path, image=BUSYBOX_IMAGE, image_tarball=busybox_tarball(), size=2)
    try:
        made.start()
        made.tag_image("app:1.0", "app:1.1")
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Watchers and Prometheus started by the test, stopped at the end."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_watcher(tmp: Path, cluster: SwarmCluster, n: int, started: list[subprocess.Popen[bytes]]) -> InNamespace:
    node = InNamespace(cluster.namespaces[n])
    flags = [
        f"--docker.host={cluster.nodes[n].host}", f"--web.listen-address={cluster.addresses[n]}:{PORT}",
        f"--storage.directory={tmp}/watcher-{n}", "--stats.interval-seconds=1", "--swarm.poll-seconds=0.5",
        "--swarm.leader-check-seconds=1", "--exposition.min-interval-seconds=0.1",
    ]  # fmt: skip
    log = (tmp / f"watcher-{n}.log").open("wb")
    started.append(
        subprocess.Popen(node.command(sys.executable, "-m", "watcher", *flags), stdout=log, stderr=subprocess.STDOUT)
    )
    poll(f"watcher {n}", lambda: node.get(f"http://{cluster.addresses[n]}:{PORT}/ready") is not None, timeout=30)
    return node


def samples(node: InNamespace, address: str) -> list[Any]:
    body = node.get(f"http://{address}:{PORT}/metrics") or ""
    return [s for family in text_string_to_metric_families(body) for s in family.samples]


def value(node: InNamespace, address: str, name: str, **labels: str) -> float | None:
    found = [s.value for s in samples(node, address) if s.name == name and labels.items() <= s.labels.items()]
    return found[0] if len(found) == 1 else None


def prometheus_config(tmp: Path, cluster: SwarmCluster) -> Path:
    """deploy/swarm/prometheus.yml as shipped, but for the manager's socket here and fast."""
    config = yaml.safe_load((ROOT / "deploy/swarm/prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(ROOT / "deploy/prometheus/rules" / Path(f).name) for f in config["rule_files"]]
    (job,) = config["scrape_configs"]
    (sd,) = job["dockerswarm_sd_configs"]
    sd["host"] = cluster.manager.host
    sd["refresh_interval"] = "1s"
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def query(node: InNamespace, address: str, expr: str) -> list[dict[str, Any]]:
    url = f"http://{address}:9090/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    body = node.get(url)
    assert body is not None, f"no answer to {expr}"
    data = json.loads(body)["data"]
    result: list[dict[str, Any]] = data["result"]
    return result


def test_two_nodes(tmp_path: Path, cluster: SwarmCluster, processes: list[subprocess.Popen[bytes]]) -> None:
    """Tasks pinned to the worker: its watcher reports their CPU and memory under the service's
    deployment (and nothing else), the manager's watcher (the leader) the rollout; Prometheus
    discovers both watchers through the manager and every dashboard figure comes once."""
    manager, worker = cluster.addresses
    name = f"svc-{uuid.uuid4().hex[:6]}"
    # The stack's global watcher service (stand-in tasks) on its overlay network: what
    # dockerswarm_sd discovers (a target per network attachment of each task).
    cluster.manager.docker("network", "create", "-d", "overlay", "monitoring")
    cluster.manager.docker(
        "service", "create", "-d", "--name", "deployment-watcher", "--mode", "global", "--no-resolve-image",
        "--network", "monitoring",
        "--label", f"prometheus.scrape.port={PORT}", "--stop-grace-period", "1s", "app:1.0", "sleep", "3600",
    )  # fmt: skip
    on_manager = start_watcher(tmp_path, cluster, 0, processes)
    on_worker = start_watcher(tmp_path, cluster, 1, processes)
    cluster.manager.docker(
        "service", "create", "-d", "--name", name, "--replicas", "2", "--constraint", "node.role==worker",
        "--container-label", f"deployment.name={name}", "--container-label", "deployment.environment=test",
        "--no-resolve-image", "--stop-grace-period", "1s", "--update-monitor", "2s",
        "app:1.0", "sh", "-c", BUSY_THEN_SLEEP,
    )  # fmt: skip
    key = {"deployment": name, "environment": "test"}

    def rollout_done() -> bool:
        return value(on_manager, manager, "deployment_status", **key) == 1

    poll("the manager's watcher: success", rollout_done, timeout=90)
    service = cluster.manager.docker("service", "update", "-d", "--image", "app:1.1", "--no-resolve-image",
                                     "--stop-grace-period", "1s", name)  # fmt: skip
    assert service is not None
    poll(
        "revision 2 success",
        lambda: (
            value(on_manager, manager, "deployment_version", **key) == 2
            and value(on_manager, manager, "deployment_status", **key) == 1
        ),
        timeout=120,
    )
    assert value(on_manager, manager, "deployment_replicas", state="running", **key) == 2

    # The worker: CPU and memory of the tasks, under the service's deployment, and no rollout.
    poll("worker CPU", lambda: (value(on_worker, worker, "deployment_cpu_usage_seconds_total", **key) or 0) > 0,
         timeout=60)  # fmt: skip
    assert (value(on_worker, worker, "deployment_memory_usage_bytes", **key) or 0) > 0
    worker_names = {s.name for s in samples(on_worker, worker) if s.labels.get("deployment") == name}
    assert worker_names == {"deployment_cpu_usage_seconds_total", "deployment_memory_usage_bytes"}
    # The manager runs none of its tasks: its CPU is 0, and it has no second deployment of them.
    assert value(on_manager, manager, "deployment_cpu_usage_seconds_total", **key) == 0
    assert {s.labels.get("deployment") for s in samples(on_manager, manager) if s.name == "deployment_status"} == {name}

    # Prometheus on the manager, finding both watchers through the manager's task list.
    prometheus = InNamespace(cluster.namespaces[0])
    binary = require_binary("prometheus")
    log = (tmp_path / "prometheus.log").open("wb")
    processes.append(
        subprocess.Popen(
            prometheus.command(
                binary, f"--config.file={prometheus_config(tmp_path, cluster)}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address={manager}:9090",
            ),
            stdout=log, stderr=subprocess.STDOUT,
        )
    )  # fmt: skip

    def both_up() -> bool:
        if prometheus.get(f"http://{manager}:9090/-/ready") is None:
            return False  # still starting
        up = query(prometheus, manager, 'up{job="deployment-watcher"} == 1')
        return len(up) == 2

    try:
        poll("both watchers scraped", both_up, timeout=90, interval=1)
    except AssertionError as exc:
        targets = prometheus.get(f"http://{manager}:9090/api/v1/targets?state=any")
        raise AssertionError(
            f"{exc}\ntargets: {targets}\n{(tmp_path / 'prometheus.log').read_text()[-2000:]}"
        ) from None
    time.sleep(3)  # a few scrapes of each
    selector = f'deployment="{name}",environment="test"'
    # The dashboard's figures, each once: status, version, rollbacks from the leader alone;
    # CPU and memory summed over the nodes, from the worker only.
    for family in ("deployment_status", "deployment_version", "deployment_info", "deployment_rollback_count_total"):
        found = query(prometheus, manager, f"{family}{{{selector}}}")
        assert len(found) == 1, (family, found)
        assert (
            found[0]["metric"]["instance"]
            == query(prometheus, manager, f'up{{node_id="{cluster.node_id(0)}"}}')[0]["metric"]["instance"]
        )
    cpu = query(
        prometheus, manager, f"sum by (deployment, environment) (deployment_cpu_usage_seconds_total{{{selector}}})"
    )
    assert len(cpu) == 1 and float(cpu[0]["value"][1]) > 0
    by_node = query(prometheus, manager, f"deployment_memory_usage_bytes{{{selector}}} > 0")
    assert [s["metric"]["node_id"] for s in by_node] == [cluster.node_id(1)]
    alerts = query(prometheus, manager, f"count by (alertname) (ALERTS{{{selector}}})")
    assert all(float(a["value"][1]) == 1 for a in alerts), alerts


def test_two_managers_export_once(
    tmp_path: Path, cluster: SwarmCluster, processes: list[subprocess.Popen[bytes]]
) -> None:
    """Two managers, a watcher on each: only the leader's exports the service; when the leader is
    demoted, the other manager's watcher takes over and the first stops exporting it."""
    cluster.manager.docker("node", "promote", cluster.node_id(1))
    poll(
        "node 1 a manager",
        lambda: cluster.nodes[1].docker("info", "--format", "{{.Swarm.ControlAvailable}}", check=False) == "true",
        timeout=60,
    )
    watchers = [start_watcher(tmp_path, cluster, n, processes) for n in (0, 1)]
    name = f"svc-{uuid.uuid4().hex[:6]}"
    cluster.manager.docker(
        "service", "create", "-d", "--name", name, "--replicas", "1", "--label", f"deployment.name={name}",
        "--no-resolve-image", "--stop-grace-period", "1s", "app:1.0", "sleep", "600",
    )  # fmt: skip

    def exporters() -> list[int]:
        return [
            n for n, node in enumerate(watchers)
            if value(node, cluster.addresses[n], "deployment_status", deployment=name) is not None
        ]  # fmt: skip

    poll("the leader exports it", lambda: exporters() == [0], timeout=60)
    time.sleep(2)  # several leader checks later, still only the leader
    assert exporters() == [0]
    cluster.nodes[1].docker("node", "demote", cluster.node_id(0))
    poll("the new leader exports it, the old one not", lambda: exporters() == [1], timeout=90)
    assert value(watchers[1], cluster.addresses[1], "deployment_status", deployment=name) == 1

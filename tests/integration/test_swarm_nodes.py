"""A real two-node swarm: CPU and memory from the worker, the rollout from the manager, and a
Prometheus that finds both watchers itself (``dockerswarm_sd_configs``, role tasks).

Two private daemons, each in a network namespace of its own joined by a veth pair (10.99.0.1
manager ``node-0``, 10.99.0.2 worker ``node-1``). ``test_stack_on_two_nodes`` deploys the
watcher service of deploy/swarm/stack.yml as shipped (``docker stack deploy``) with the
project's image (built once per session, ``docker save``/``docker load`` into each node: no
registry): each node's daemon owns /var/run/docker.sock in a mount namespace of its own, so
the task there reads its own node's engine, and publishes port 9102 on its node's address
(host mode). Prometheus, a process in the manager's namespace with deploy/swarm/prometheus.yml
as shipped (only the Docker socket's path and the intervals differ), discovers one target per
node from the manager's task list. ``test_two_managers_export_once`` runs watchers as
processes, to demote the leader under them.
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
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests import dashboard
from tests.conftest import BUSYBOX_IMAGE, busybox_tarball, require_binary
from tests.polling import poll
from tests.swarm_cluster import SwarmCluster

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = ROOT / "deploy/swarm/stack.yml"
STACK = "watcher"
WATCHER_SERVICE = f"{STACK}_deployment-watcher"
STACK_IMAGE = "deployment-watcher:local"  # the image deploy/swarm/stack.yml names
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


@pytest.fixture
def stack_cluster(tmp_path: Path, watcher_image: str) -> Iterator[SwarmCluster]:
    """Two nodes whose daemons each own /var/run/docker.sock and a hostname (a mount and a UTS
    namespace of their own), with the project's image as the stack names it."""
    require_binary("dockerd")
    require_binary("nsenter")
    if os.geteuid() != 0:
        pytest.fail("private daemons need root")
    made = SwarmCluster(
        tmp_path=tmp_path, image=BUSYBOX_IMAGE, image_tarball=busybox_tarball(), size=2, own_socket_path=True
    )
    try:
        made.start()
        made.tag_image("app:1.0", "app:1.1")
        made.load_image(watcher_image, tmp_path / "watcher-image.tar")
        for node in made.nodes:
            node.docker("tag", watcher_image, STACK_IMAGE)
        yield made
    finally:
        if made.manager.running:
            made.manager.docker("stack", "rm", STACK, check=False)
        made.cleanup()  # services, networks, daemons with their images and volumes, namespaces


def deploy_stack(tmp: Path, cluster: SwarmCluster) -> None:
    """deploy/swarm/stack.yml's watcher service exactly as shipped (Prometheus and Alertmanager
    left out: their images cannot be pulled here), DOCKER_GID the nodes' socket group."""
    shipped = yaml.safe_load(STACK_FILE.read_text())
    stack = {
        "services": {"deployment-watcher": shipped["services"]["deployment-watcher"]},
        "networks": shipped["networks"],
        "volumes": {"watcher-data": shipped["volumes"]["watcher-data"]},
    }
    path = tmp / "stack.yml"
    path.write_text(yaml.safe_dump(stack))
    assert yaml.safe_load(path.read_text())["services"] == {
        "deployment-watcher": shipped["services"]["deployment-watcher"]
    }
    (gid,) = {node.socket_gid() for node in cluster.nodes}
    result = subprocess.run(
        ["docker", "-H", cluster.manager.host, "stack", "deploy", "-c", str(path), "--resolve-image", "never", STACK],
        capture_output=True, text=True, timeout=120, env={**os.environ, "DOCKER_GID": str(gid)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@contextmanager
def swarm_diagnostics(cluster: SwarmCluster) -> Iterator[None]:
    """A failed assertion inside says where the watcher's tasks are and what they logged."""
    try:
        yield
    except AssertionError as error:
        tasks = cluster.manager.docker("service", "ps", "--no-trunc", WATCHER_SERVICE, check=False)
        logs = [
            node.docker("logs", "--tail", "30", container, check=False, timeout=30)
            for node in cluster.nodes
            for container in (node.docker("ps", "-aq", "--filter",
                              f"label=com.docker.swarm.service.name={WATCHER_SERVICE}", check=False) or "").split()
        ]  # fmt: skip
        raise AssertionError(f"{error}\n{tasks}\n" + "\n".join(str(log) for log in logs)) from None


@contextmanager
def run_prometheus_in(tmp: Path, cluster: SwarmCluster) -> Iterator[InNamespace]:
    """Prometheus in the manager's namespace with deploy/swarm/prometheus.yml, once it scrapes both watchers."""
    manager = cluster.addresses[0]
    prometheus = InNamespace(cluster.namespaces[0])
    log = (tmp / "prometheus.log").open("wb")
    process = subprocess.Popen(
        prometheus.command(
            require_binary("prometheus"), f"--config.file={prometheus_config(tmp, cluster)}",
            f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address={manager}:9090",
        ),
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def both_up() -> bool:
        if prometheus.get(f"http://{manager}:9090/-/ready") is None:
            return False  # still starting
        return len(query(prometheus, manager, 'up{job="deployment-watcher"} == 1')) == 2

    try:
        try:
            poll("both watchers scraped", both_up, timeout=90, interval=1)
        except AssertionError as exc:
            targets = prometheus.get(f"http://{manager}:9090/api/v1/targets?state=any")
            raise AssertionError(f"{exc}\ntargets: {targets}\n{(tmp / 'prometheus.log').read_text()[-2000:]}") from None
        yield prometheus
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def assert_dashboard_once(prometheus: InNamespace, address: str, name: str, *, leader: str, worker: str) -> None:
    """The rollout's series from the leader alone, CPU and memory from the worker alone, and
    every dashboard query about the deployment answering one series."""
    selector = f'deployment="{name}",environment="test"'
    for family in ("deployment_status", "deployment_version", "deployment_info", "deployment_rollback_count_total"):
        found = query(prometheus, address, f"{family}{{{selector}}}")
        assert [s["metric"]["host"] for s in found] == [leader], (family, found)
    for family in ("deployment_cpu_usage_seconds_total", "deployment_memory_usage_bytes"):
        found = query(prometheus, address, f"{family}{{{selector}}} > 0")
        assert [s["metric"]["host"] for s in found] == [worker], (family, found)
    # The analysis panels are left out: this stack runs no rollout analysis (no check, no scraped
    # application); tests/e2e/test_stack.py and test_fleet.py show them answering.
    panels = [(title, expr) for title, expr in dashboard.expressions()
              if "$deployment" in expr and "deployment_analysis_" not in expr]  # fmt: skip
    assert panels

    def answers() -> dict[str, list[dict[str, Any]]]:
        return {
            f"{title}: {expr}": query(prometheus, address, dashboard.substitute(expr, deployment=name,
                                                                                environment="test"))
            for title, expr in panels
        }  # fmt: skip

    # Rates and recording rules need a few scrapes and evaluations.
    answered = poll("every dashboard query answering", answers, timeout=60, interval=1,
                    until=lambda got: all(got.values()))  # fmt: skip
    # Once each; the version history has a row per version, each once.
    history = {panel: series for panel, series in answered.items() if panel.startswith("Version history:")}
    assert [sorted(s["metric"]["version"] for s in series) for series in history.values()] == [["1.0", "1.1"]]
    assert {panel: len(series) for panel, series in answered.items() if len(series) != 1 and panel not in history} == {}
    alerts = query(prometheus, address, f"count by (alertname) (ALERTS{{{selector}}})")
    assert all(float(a["value"][1]) == 1 for a in alerts), alerts


def test_stack_on_two_nodes(tmp_path: Path, stack_cluster: SwarmCluster) -> None:
    """The stack's watcher service, as shipped, deployed with the project's image: one task per
    node; tasks pinned to the worker: its watcher reports their CPU and memory under the
    service's deployment (and nothing else), the manager's watcher (the leader) the rollout;
    Prometheus discovers both watchers through the manager and every dashboard figure comes once."""
    cluster = stack_cluster
    manager, worker = cluster.addresses
    node_ids = [cluster.node_id(0), cluster.node_id(1)]
    deploy_stack(tmp_path, cluster)

    def watcher_tasks() -> list[tuple[str, str]]:
        ids = (cluster.manager.docker("service", "ps", "-q", "--filter", "desired-state=running", WATCHER_SERVICE)
               or "").split()  # fmt: skip
        tasks = json.loads(cluster.manager.docker("inspect", *ids) or "[]") if ids else []
        return sorted((task["NodeID"], task["Status"]["State"]) for task in tasks)

    with swarm_diagnostics(cluster):
        poll("a running watcher task on each node", watcher_tasks, timeout=120,
             until=lambda tasks: tasks == sorted((node, "running") for node in node_ids))  # fmt: skip
        for node in cluster.nodes:
            here = node.docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={WATCHER_SERVICE}")
            assert len((here or "").split()) == 1
        on_manager = InNamespace(cluster.namespaces[0])  # reaches both nodes' published ports
        for address in cluster.addresses:
            poll(f"the watcher on {address} ready", partial(on_manager.get, f"http://{address}:{PORT}/ready"),
                 timeout=60, until=lambda body: body is not None)  # fmt: skip

        name = f"svc-{uuid.uuid4().hex[:6]}"
        cluster.manager.docker(
            "service", "create", "-d", "--name", name, "--replicas", "2", "--constraint", "node.role==worker",
            "--container-label", f"deployment.name={name}", "--container-label", "deployment.environment=test",
            "--no-resolve-image", "--stop-grace-period", "1s", "--update-monitor", "2s",
            "app:1.0", "sh", "-c", BUSY_THEN_SLEEP,
        )  # fmt: skip
        key = {"deployment": name, "environment": "test"}
        # The leader check runs every 10 s by default (the stack sets no interval).
        poll("the manager's watcher: success",
             lambda: value(on_manager, manager, "deployment_status", **key) == 1, timeout=90)  # fmt: skip
        cluster.manager.docker("service", "update", "-d", "--image", "app:1.1", "--no-resolve-image",
                               "--stop-grace-period", "1s", name)  # fmt: skip
        poll(
            "revision 2 success",
            lambda: (
                value(on_manager, manager, "deployment_version", **key) == 2
                and value(on_manager, manager, "deployment_status", **key) == 1
            ),
            timeout=120,
        )
        assert value(on_manager, manager, "deployment_replicas", state="running", **key) == 2
        assert value(on_manager, manager, "deployment_replicas", state="desired", **key) == 2

        # The worker: CPU and memory of the tasks, under the service's deployment, and no rollout
        # (stats every 15 s by default).
        poll("worker CPU", lambda: (value(on_manager, worker, "deployment_cpu_usage_seconds_total", **key) or 0) > 0,
             timeout=90)  # fmt: skip
        assert (value(on_manager, worker, "deployment_memory_usage_bytes", **key) or 0) > 0
        worker_names = {s.name for s in samples(on_manager, worker) if s.labels.get("deployment") == name}
        assert worker_names == {"deployment_cpu_usage_seconds_total", "deployment_memory_usage_bytes"}
        # The manager runs none of its tasks: its CPU is 0, and it has no second deployment of them.
        assert value(on_manager, manager, "deployment_cpu_usage_seconds_total", **key) == 0
        exported = {s.labels.get("deployment") for s in samples(on_manager, manager) if s.name == "deployment_status"}
        assert exported == {name}

        # Prometheus on the manager, finding both watchers through the manager's task list.
        with run_prometheus_in(tmp_path, cluster) as prometheus:
            up = query(prometheus, manager, 'up{job="deployment-watcher"} == 1')
            assert sorted((s["metric"]["host"], s["metric"]["node_id"]) for s in up) == [
                ("node-0", node_ids[0]),
                ("node-1", node_ids[1]),
            ]
            assert_dashboard_once(prometheus, manager, name, leader="node-0", worker="node-1")


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

"""Unit tests of the cgroup source: paths, parsing, fake cgroup trees in tmp_path, source selection."""

from __future__ import annotations

import logging
from pathlib import Path

import aiodocker
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from watcher.domain.model import Usage
from watcher.selfmetrics import SelfMetrics
from watcher.sources.engine import Engine
from watcher.sources.stats.cgroups import (
    CgroupError,
    CgroupFiles,
    CgroupStats,
    Hierarchy,
    cgroup_paths,
    cpu_seconds,
    detect_hierarchy,
    expand_slice,
    layout_problem,
    parse_counter,
    parse_flat_keyed,
    usage_from_files,
)
from watcher.sources.stats.sampling import ApiStats, AutoStats, choose_source, usage_from_stats

ID = "3f2a" * 16  # 64 hex digits, like a container id
OTHER = "b7c1" * 16
GIB = 1 << 30

# --- where Docker puts a container's cgroup -------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("system.slice", "/system.slice"),
        ("machine-app.slice", "/machine.slice/machine-app.slice"),
        ("a-b-c.slice", "/a.slice/a-b.slice/a-b-c.slice"),
        ("-.slice", ""),
        ("plain", None),
        (".slice", None),
        ("a--b.slice", None),
        ("-a.slice", None),
        ("a/b.slice", None),
    ],
)
def test_expand_slice(name: str, expected: str | None) -> None:
    """Slice names expand as runc expands them; invalid names give None."""
    assert expand_slice(name) == expected


@pytest.mark.parametrize(
    ("driver", "parent", "expected"),
    [
        ("cgroupfs", "", [f"/docker/{ID}", f"/libpod_parent/libpod-{ID}"]),
        ("cgroupfs", "/custom", [f"/custom/{ID}", f"/custom/libpod-{ID}"]),
        ("cgroupfs", "team/nested/", [f"/team/nested/{ID}", f"/team/nested/libpod-{ID}"]),
        ("cgroupfs", "../../escape", [f"/escape/{ID}", f"/escape/libpod-{ID}"]),
        ("systemd", "", [f"/system.slice/docker-{ID}.scope", f"/machine.slice/libpod-{ID}.scope"]),
        (
            "systemd", "prod-web.slice",
            [f"/prod.slice/prod-web.slice/docker-{ID}.scope", f"/prod.slice/prod-web.slice/libpod-{ID}.scope"],
        ),
        ("systemd", "/not/a/slice", []),
        (
            "", "",
            [f"/docker/{ID}", f"/libpod_parent/libpod-{ID}",
             f"/system.slice/docker-{ID}.scope", f"/machine.slice/libpod-{ID}.scope"],
        ),
    ],
)  # fmt: skip
def test_cgroup_paths(driver: str, parent: str, expected: list[str]) -> None:
    """Docker's rule, then Podman's: CgroupParent else the driver's default; cgroupfs joins, systemd makes a scope."""
    assert cgroup_paths(driver=driver, parent=parent, container_id=ID) == expected


@pytest.mark.parametrize(
    ("version", "driver", "cpu_mount", "parent", "cpu", "memory_dir", "podman"),
    [
        (
            1, "cgroupfs", "cpuacct", "", f"/r/cpuacct/docker/{ID}/cpuacct.usage", f"/r/memory/docker/{ID}",
            f"libpod_parent/libpod-{ID}",
        ),
        (
            1, "cgroupfs", "cpu,cpuacct", "/ci",
            f"/r/cpu,cpuacct/ci/{ID}/cpuacct.usage", f"/r/memory/ci/{ID}", f"ci/libpod-{ID}",
        ),
        (
            1, "systemd", "cpuacct,cpu", "",
            f"/r/cpuacct,cpu/system.slice/docker-{ID}.scope/cpuacct.usage", f"/r/memory/system.slice/docker-{ID}.scope",
            f"machine.slice/libpod-{ID}.scope",
        ),
        (2, "cgroupfs", "", "", f"/r/docker/{ID}/cpu.stat", f"/r/docker/{ID}", f"libpod_parent/libpod-{ID}"),
        (2, "cgroupfs", "", "batch", f"/r/batch/{ID}/cpu.stat", f"/r/batch/{ID}", f"batch/libpod-{ID}"),
        (
            2, "systemd", "", "", f"/r/system.slice/docker-{ID}.scope/cpu.stat", f"/r/system.slice/docker-{ID}.scope",
            f"machine.slice/libpod-{ID}.scope",
        ),
        (
            2, "systemd", "", "prod-web.slice",
            f"/r/prod.slice/prod-web.slice/docker-{ID}.scope/cpu.stat", f"/r/prod.slice/prod-web.slice/docker-{ID}.scope",
            f"prod.slice/prod-web.slice/libpod-{ID}.scope",
        ),
    ],
)  # fmt: skip
def test_candidate_files(
    version: int, driver: str, cpu_mount: str, parent: str, cpu: str, memory_dir: str, podman: str
) -> None:
    """v1 reads cpuacct and memory controllers' directories, v2 the one unified directory; Docker's, then Podman's."""
    hierarchy = Hierarchy(root="/r", version=version, driver=driver, cpu_mount=cpu_mount or "cpuacct")
    usage_file = "memory.usage_in_bytes" if version == 1 else "memory.current"
    expected = CgroupFiles(version, cpu, f"{memory_dir}/{usage_file}", f"{memory_dir}/memory.stat")
    if version == 1:
        podman_cpu, podman_memory = f"/r/{cpu_mount}/{podman}/cpuacct.usage", f"/r/memory/{podman}"
    else:
        podman_cpu, podman_memory = f"/r/{podman}/cpu.stat", f"/r/{podman}"
    from_podman = CgroupFiles(version, podman_cpu, f"{podman_memory}/{usage_file}", f"{podman_memory}/memory.stat")
    assert hierarchy.candidates(container_id=ID, parent=parent) == [expected, from_podman]


# --- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123\n", 123),
        (" 0 ", 0),
        ("", None),
        ("-1", None),
        ("1_000", None),
        ("12ab", None),
        ("١٢", None),
        ("max", None),
    ],
)
def test_parse_counter(text: str, expected: int | None) -> None:
    """One non-negative ASCII integer, else None."""
    assert parse_counter(text) == expected


def test_parse_flat_keyed_skips_garbage() -> None:
    """Lines that are not `key number` are left out, the rest kept."""
    text = "cache 10\ngarbage\ninactive_file 4\n weird 1\nrss -3\nmapped_file 7 extra\n\n"
    assert parse_flat_keyed(text) == {"cache": 10, "inactive_file": 4}


@pytest.mark.parametrize(
    ("text", "version", "expected"),
    [
        ("2500000000\n", 1, 2.5),
        ("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n", 2, 2.5),
        ("user_usec 2000000\n", 2, None),
        ("", 1, None),
        ("usage_usec 12", 1, None),
    ],
)
def test_cpu_seconds(text: str, version: int, expected: float | None) -> None:
    """v1 cpuacct.usage is nanoseconds, v2 cpu.stat's usage_usec microseconds."""
    assert cpu_seconds(text, version=version) == expected


V1 = CgroupFiles(1, "/r/cpuacct.usage", "/r/memory.usage_in_bytes", "/r/memory.stat")
V2 = CgroupFiles(2, "/r/cpu.stat", "/r/memory.current", "/r/memory.stat")


@pytest.mark.parametrize(
    ("files", "cpu", "usage", "stat", "needle"),
    [
        (V1, "x", "10", "total_inactive_file 1", "/r/cpuacct.usage: no CPU usage"),
        (V1, "10", "", "total_inactive_file 1", "/r/memory.usage_in_bytes: not a byte count"),
        (V1, "10", "10", "inactive_file 1", "/r/memory.stat: no total_inactive_file"),
        (V2, "usage_usec 10", "10", "", "/r/memory.stat: no inactive_file"),
        (V2, "\x00\x00", "10", "inactive_file 1", "/r/cpu.stat: no CPU usage"),
    ],
)
def test_garbled_files_name_the_file(files: CgroupFiles, cpu: str, usage: str, stat: str, needle: str) -> None:
    """A file that does not read as the kernel writes it is a CgroupError naming it."""
    with pytest.raises(CgroupError, match=needle):
        usage_from_files(files, cpu=cpu, memory_usage=usage, memory_stat=stat)


@given(
    usage=st.integers(min_value=0, max_value=1 << 44),
    inactive=st.integers(min_value=0, max_value=1 << 44),
    cpu_ns=st.integers(min_value=0, max_value=1 << 60),
)
def test_same_working_set_as_the_api(usage: int, inactive: int, cpu_ns: int) -> None:
    """The cgroup source and the stats API compute the same usage from the same kernel numbers."""
    stats = {
        "cpu_stats": {"cpu_usage": {"total_usage": cpu_ns}},
        "memory_stats": {"usage": usage, "stats": {"inactive_file": inactive, "total_inactive_file": inactive}},
    }
    stat = f"cache 5\ninactive_file {inactive}\ntotal_inactive_file {inactive}\n"
    from_files = usage_from_files(V1, cpu=str(cpu_ns), memory_usage=str(usage), memory_stat=stat)
    assert from_files == usage_from_stats(stats)
    v2 = usage_from_files(V2, cpu=f"usage_usec {cpu_ns // 1000}\n", memory_usage=str(usage), memory_stat=stat)
    assert v2.memory_bytes == from_files.memory_bytes


# --- fake cgroup trees --------------------------------------------------------------------


def plant(
    root: Path, version: int, path: str, *, cpu_mount: str = "cpuacct", seconds: float, usage: int, inactive: int
) -> None:
    """Write one container's files where the kernel would, at literal paths."""
    if version == 2:
        where = root / path.lstrip("/")
        where.mkdir(parents=True, exist_ok=True)
        (where / "cpu.stat").write_text(f"usage_usec {round(seconds * 1e6)}\nuser_usec 1\nsystem_usec 2\n")
        (where / "memory.current").write_text(f"{usage}\n")
        (where / "memory.stat").write_text(f"anon 100\nfile 200\ninactive_file {inactive}\nactive_file 3\n")
        return
    cpu = root / cpu_mount / path.lstrip("/")
    cpu.mkdir(parents=True, exist_ok=True)
    (cpu / "cpuacct.usage").write_text(f"{round(seconds * 1e9)}\n")
    memory = root / "memory" / path.lstrip("/")
    memory.mkdir(parents=True, exist_ok=True)
    (memory / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (memory / "memory.stat").write_text(
        f"cache 200\nrss 100\ninactive_file {inactive}\ntotal_cache 200\ntotal_inactive_file {inactive}\n"
    )


def tree(root: Path, version: int, cpu_mount: str = "cpuacct") -> Path:
    """An empty cgroup tree of one version (what the layout check looks at)."""
    if version == 2:
        root.mkdir(parents=True, exist_ok=True)
        (root / "cgroup.controllers").write_text("cpu memory pids\n")
    else:
        (root / "memory").mkdir(parents=True, exist_ok=True)
        (root / cpu_mount).mkdir(parents=True, exist_ok=True)
    return root


class Parents:
    """A fake inspect: the CgroupParent of each container; records who was asked."""

    def __init__(self, parents: dict[str, str | None] | None = None) -> None:
        self.parents = parents or {}
        self.asked: list[str] = []

    async def __call__(self, container_id: str) -> str | None:
        self.asked.append(container_id)
        return self.parents.get(container_id, "")


def over(root: str, *, version: str, parents: Parents | None = None) -> CgroupStats:
    """A cgroup source over a fake tree of the cgroupfs driver."""
    hierarchy = detect_hierarchy(root=root, driver="cgroupfs", version=version)
    return CgroupStats(hierarchy=hierarchy, cgroup_parent=parents or Parents())


@pytest.mark.parametrize(
    ("version", "driver", "cpu_mount", "parent", "path"),
    [
        (1, "cgroupfs", "cpuacct", "", f"/docker/{ID}"),
        (1, "cgroupfs", "cpu,cpuacct", "/ci/jobs", f"/ci/jobs/{ID}"),
        (1, "systemd", "cpuacct", "", f"/system.slice/docker-{ID}.scope"),
        (1, "systemd", "cpuacct,cpu", "prod-web.slice", f"/prod.slice/prod-web.slice/docker-{ID}.scope"),
        (2, "cgroupfs", "", "", f"/docker/{ID}"),
        (2, "cgroupfs", "", "batch", f"/batch/{ID}"),
        (2, "systemd", "", "", f"/system.slice/docker-{ID}.scope"),
        (2, "systemd", "", "prod-web.slice", f"/prod.slice/prod-web.slice/docker-{ID}.scope"),
    ],
)
async def test_reads_fake_tree(
    tmp_path: Path, version: int, driver: str, cpu_mount: str, parent: str, path: str
) -> None:
    """v1/v2 × cgroupfs/systemd × CgroupParent: the usage is read; the parent is asked once, only when needed."""
    root = tree(tmp_path / "cg", version, cpu_mount or "cpuacct")
    plant(root, version, path, cpu_mount=cpu_mount, seconds=12.5, usage=GIB, inactive=GIB // 4)
    parents = Parents({ID: parent})
    source = CgroupStats(hierarchy=detect_hierarchy(root=f"{root}/", driver=driver, version=""), cgroup_parent=parents)
    assert source.hierarchy.version == version
    for _ in range(2):
        usage, errors = await source.sample([ID])
        assert (usage, errors) == ({ID: Usage(cpu_seconds=12.5, memory_bytes=GIB * 3 / 4)}, 0)
    assert parents.asked == ([ID] if parent else [])


async def test_unreadable_container_is_an_error_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No files: counted as an error every poll, one warning, one inspect; the others still read."""
    root = tree(tmp_path, 1)
    plant(root, 1, f"/docker/{OTHER}", seconds=1, usage=100, inactive=0)
    parents = Parents()
    source = over(str(root), version="1", parents=parents)
    with caplog.at_level(logging.WARNING, logger="watcher.sources.stats.cgroups"):
        for _ in range(3):
            usage, errors = await source.sample([ID, OTHER])
            assert set(usage) == {OTHER} and errors == 1
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and ID[:12] in warnings[0] and f"docker/{ID}/cpuacct.usage" in warnings[0]
    assert parents.asked == [ID]


async def test_parent_asked_again_when_inspect_did_not_answer(tmp_path: Path) -> None:
    """An unknown CgroupParent (the daemon did not answer) is asked again next poll, then remembered."""
    root = tree(tmp_path, 2)
    parents = Parents({ID: None})
    source = over(str(root), version="2", parents=parents)
    assert await source.sample([ID]) == ({}, 1)
    parents.parents[ID] = "/ci"
    plant(root, 2, f"/ci/{ID}", seconds=1, usage=100, inactive=0)
    for _ in range(2):
        assert await source.sample([ID]) == ({ID: Usage(cpu_seconds=1, memory_bytes=100)}, 0)
    assert parents.asked == [ID, ID]


async def test_garbled_file_is_an_error_not_a_crash(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A garbled memory.current is an error naming the file."""
    root = tree(tmp_path, 2)
    plant(root, 2, f"/docker/{ID}", seconds=1, usage=100, inactive=0)
    (root / "docker" / ID / "memory.current").write_bytes(b"\xff\xfe garbage")
    source = over(str(root), version="2")
    with caplog.at_level(logging.WARNING, logger="watcher.sources.stats.cgroups"):
        assert await source.sample([ID]) == ({}, 1)
    assert "memory.current: not a byte count" in caplog.text


async def test_container_found_again_after_its_files_return(tmp_path: Path) -> None:
    """Files that vanish (a stopped container) are an error; when they return they are read again."""
    root = tree(tmp_path, 2)
    plant(root, 2, f"/docker/{ID}", seconds=1, usage=100, inactive=0)
    source = over(str(root), version="2")
    assert (await source.sample([ID]))[1] == 0
    (root / "docker" / ID / "cpu.stat").unlink()
    assert await source.sample([ID]) == ({}, 1)
    plant(root, 2, f"/docker/{ID}", seconds=2, usage=100, inactive=0)
    assert await source.sample([ID]) == ({ID: Usage(cpu_seconds=2, memory_bytes=100)}, 0)


async def test_no_containers_reads_nothing(tmp_path: Path) -> None:
    """An empty poll is an empty result, not an error."""
    source = over(str(tmp_path), version="1")
    assert await source.sample([]) == ({}, 0)


# --- the tree's layout ------------------------------------------------------------------


def test_detect_hierarchy(tmp_path: Path) -> None:
    """The daemon's version wins; without it the tree tells; the cpuacct mount is found by name."""
    v1 = tree(tmp_path / "v1", 1, cpu_mount="cpu,cpuacct")
    v2 = tree(tmp_path / "v2", 2)
    assert detect_hierarchy(root=str(v1), driver="systemd", version="") == Hierarchy(
        root=str(v1), version=1, driver="systemd", cpu_mount="cpu,cpuacct"
    )
    assert detect_hierarchy(root=str(v2), driver="cgroupfs", version="").version == 2
    assert detect_hierarchy(root=str(v2), driver="cgroupfs", version="1").version == 1
    assert detect_hierarchy(root="/", driver="cgroupfs", version="2").root == ""


@pytest.mark.parametrize(
    ("version", "driver", "planted", "needle"),
    [
        (1, "cgroupfs", 1, None),
        (2, "systemd", 2, None),
        (2, "cgroupfs", 1, "no cgroup v2 tree at"),
        (1, "cgroupfs", 2, "(no memory or cpuacct in it)"),
        (1, "cgroupfs", 0, "no cgroup v1 tree at"),
        (1, "none", 1, "cgroup driver 'none'"),
    ],
)
def test_layout_problem(tmp_path: Path, version: int, driver: str, planted: int, needle: str | None) -> None:
    """A tree that cannot hold the daemon's cgroups says why; a right one says nothing."""
    if planted:
        tree(tmp_path, planted)
    problem = layout_problem(Hierarchy(root=str(tmp_path), version=version, driver=driver))
    assert problem is None if needle is None else needle in (problem or "")


# --- choosing the source ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "problem", "probed", "readable", "expected"),
    [
        ("api", None, 3, 3, "api"),
        ("cgroup", "no cgroup v1 tree", 0, 0, "cgroup"),
        ("auto", "no cgroup v1 tree", 0, 0, "api"),
        ("auto", None, 0, 0, None),
        ("auto", None, 3, 0, "api"),
        ("auto", None, 3, 1, "cgroup"),
    ],
)
def test_choose_source(requested: str, problem: str | None, probed: int, readable: int, expected: str | None) -> None:
    """auto: the API without a tree; undecided without containers; cgroup when any container reads."""
    assert choose_source(requested=requested, layout_problem=problem, probed=probed, readable=readable) == expected


class FakeApi:
    """The stats API source: a fixed answer per container; records the polls."""

    def __init__(self) -> None:
        self.polls: list[list[str]] = []

    async def sample(self, container_ids: list[str]) -> tuple[dict[str, Usage], int]:
        self.polls.append(container_ids)
        return {i: Usage(cpu_seconds=9, memory_bytes=9) for i in container_ids}, 0


async def test_auto_waits_for_containers_then_keeps_cgroup(tmp_path: Path) -> None:
    """auto: no decision on an empty poll; readable files make it cgroup for good, the API is never asked."""
    root = tree(tmp_path, 2)
    plant(root, 2, f"/docker/{ID}", seconds=3, usage=300, inactive=100)
    api, chosen = FakeApi(), list[str]()
    cgroup = over(str(root), version="2")
    auto = AutoStats(cgroup=cgroup, api=api, chosen=chosen.append)
    assert await auto.sample([]) == ({}, 0) and chosen == []
    assert await auto.sample([ID, OTHER]) == ({ID: Usage(cpu_seconds=3, memory_bytes=200)}, 1)
    assert await auto.sample([ID]) == ({ID: Usage(cpu_seconds=3, memory_bytes=200)}, 0)
    assert chosen == ["cgroup"] and api.polls == []


async def test_auto_falls_back_to_the_api(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """auto: when no container's files read (e.g. a remote daemon), the API serves this poll and the next."""
    api, chosen = FakeApi(), list[str]()
    cgroup = over(str(tree(tmp_path, 1)), version="1")
    auto = AutoStats(cgroup=cgroup, api=api, chosen=chosen.append)
    with caplog.at_level(logging.INFO):
        usage, errors = await auto.sample([ID])
        await auto.sample([ID, OTHER])
    assert set(usage) == {ID} and errors == 0
    assert chosen == ["api"] and api.polls == [[ID], [ID, OTHER]]
    assert "using the Docker stats API" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the probe is quiet


async def test_stats_api_error_without_a_body_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """Regression (Podman 4.3): the stats of a container just removed come back 404 with an empty
    JSON body, which aiodocker fails to decode; that container counts as not read, the poll goes on."""

    async def empty(request: web.Request) -> web.Response:
        if request.path.endswith("/version"):
            return web.json_response({"ApiVersion": "1.41"})
        return web.Response(status=404, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", empty)
    runner = web.AppRunner(app)
    await runner.setup()
    socket = tmp_path / "podman.sock"
    await web.UnixSite(runner, str(socket)).start()
    try:
        async with aiodocker.Docker(url=f"unix://{socket}") as client:
            assert await ApiStats(Engine(client, timeout=5), concurrency=1, timeout=5).sample([ID]) == ({}, 1)
    finally:
        await runner.cleanup()


def test_source_metric_pre_created_and_exclusive() -> None:
    """deployment_watcher_stats_source has both sources at 0 until one is chosen, then exactly one at 1."""
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)

    def value(source: str) -> float | None:
        return registry.get_sample_value("deployment_watcher_stats_source", {"source": source})

    assert (value("cgroup"), value("api")) == (0, 0)
    metrics.stats_source_in_use("cgroup")
    assert (value("cgroup"), value("api")) == (1, 0)
    metrics.stats_source_in_use("api")
    assert (value("cgroup"), value("api")) == (0, 1)

"""CPU and memory straight from a container's cgroup files, the way cAdvisor reads them.

The Docker stats API takes about a second per container (the daemon waits for a second
reading) and costs the daemon CPU; the kernel's files answer in microseconds. Where Docker
puts a container's cgroup and how its files read are pure functions; ``CgroupStats`` is the
thin adapter with the same ``sample()`` as the API source.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from watcher.domain.model import Usage

log = logging.getLogger(__name__)

# cgroup v1 mounts the CPU accounting controller alone or together with cpu, under either name.
V1_CPU_MOUNTS = ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")


class CgroupError(Exception):
    """A container's cgroup files are missing or do not read as the kernel writes them."""


@dataclass(frozen=True, slots=True)
class CgroupFiles:
    """The three files one container's usage is read from."""

    version: int  # 1 or 2
    cpu: str  # v1 cpuacct.usage (nanoseconds); v2 cpu.stat (usage_usec)
    memory_usage: str  # v1 memory.usage_in_bytes; v2 memory.current
    memory_stat: str


def expand_slice(name: str) -> str | None:
    """A systemd slice → its cgroup path, as runc expands it: ``a-b.slice`` → ``/a.slice/a-b.slice``; None if invalid."""
    stem = name.removesuffix(".slice")
    if stem == name or not stem or "/" in name:
        return None
    if stem == "-":
        return ""  # the root slice
    path, prefix = "", ""
    for part in stem.split("-"):
        if not part:
            return None
        path += f"/{prefix}{part}.slice"
        prefix += f"{part}-"
    return path


def cgroup_paths(*, driver: str, parent: str, container_id: str) -> list[str]:
    """Where Docker, then Podman, put a container's cgroup, relative to a hierarchy's root,
    e.g. ``/docker/<id>``.

    Docker's rule: the container's HostConfig.CgroupParent, else the driver's default parent;
    cgroupfs joins parent and id, systemd makes ``docker-<id>.scope`` in the parent slice.
    Podman's is the same with ``libpod-<id>``, in ``libpod_parent`` or ``machine.slice`` by
    default. A driver neither named gets both.
    """
    paths = []
    if driver != "systemd":
        for default, name in (("docker", container_id), ("libpod_parent", f"libpod-{container_id}")):
            paths.append(posixpath.normpath(posixpath.join("/", parent or default, name)))
    if driver != "cgroupfs":
        for default, name in (("system.slice", "docker"), ("machine.slice", "libpod")):
            slice_path = expand_slice(parent or default)
            if slice_path is not None:
                paths.append(f"{slice_path}/{name}-{container_id}.scope")
    return paths


@dataclass(frozen=True, slots=True, kw_only=True)
class Hierarchy:
    """How the daemon lays out its containers' cgroups, and where that tree is mounted here."""

    root: str  # without a trailing slash: "/sys/fs/cgroup", or the host's tree mounted elsewhere
    version: int  # 1 or 2
    driver: str  # Docker's CgroupDriver: cgroupfs or systemd
    cpu_mount: str = V1_CPU_MOUNTS[0]  # v1: the directory the cpuacct controller is mounted on

    def files(self, path: str) -> CgroupFiles:
        """The files of the cgroup at ``path`` (relative to the hierarchy's root)."""
        if self.version == 2:
            where = f"{self.root}{path}"
            return CgroupFiles(2, f"{where}/cpu.stat", f"{where}/memory.current", f"{where}/memory.stat")
        memory = f"{self.root}/memory{path}"
        return CgroupFiles(
            1,
            f"{self.root}/{self.cpu_mount}{path}/cpuacct.usage",
            f"{memory}/memory.usage_in_bytes",
            f"{memory}/memory.stat",
        )

    def candidates(self, *, container_id: str, parent: str = "") -> list[CgroupFiles]:
        """The files a container's usage may be in, most likely first."""
        return [self.files(p) for p in cgroup_paths(driver=self.driver, parent=parent, container_id=container_id)]


def parse_counter(text: str) -> int | None:
    """A file holding one non-negative integer (cpuacct.usage, memory.current); None otherwise."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat) → a mapping; lines that are not are left out."""
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        number = parse_counter(value)
        if key and number is not None:
            values[key] = number
    return values


def cpu_seconds(text: str, *, version: int) -> float | None:
    """CPU seconds from v1 cpuacct.usage (nanoseconds) or v2 cpu.stat (usage_usec); None if absent."""
    if version == 2:
        usec = parse_flat_keyed(text).get("usage_usec")
        return None if usec is None else usec / 1e6
    nsec = parse_counter(text)
    return None if nsec is None else nsec / 1e9


def working_set(usage: float, stat: Mapping[str, float]) -> float:
    """Memory as `docker stats` shows it: usage minus inactive file cache (v1 total_inactive_file, v2 inactive_file)."""
    inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
    return usage - inactive if inactive < usage else usage


def usage_from_files(files: CgroupFiles, *, cpu: str, memory_usage: str, memory_stat: str) -> Usage:
    """One container's usage from its files' contents; CgroupError names the file that does not parse."""
    seconds = cpu_seconds(cpu, version=files.version)
    if seconds is None:
        raise CgroupError(f"{files.cpu}: no CPU usage in {cpu[:60]!r}")
    usage = parse_counter(memory_usage)
    if usage is None:
        raise CgroupError(f"{files.memory_usage}: not a byte count: {memory_usage[:60]!r}")
    stat = parse_flat_keyed(memory_stat)
    # The kernel always writes it; without it the working set would silently include the page cache.
    inactive = "total_inactive_file" if files.version == 1 else "inactive_file"
    if inactive not in stat:
        raise CgroupError(f"{files.memory_stat}: no {inactive} in it")
    return Usage(cpu_seconds=seconds, memory_bytes=working_set(float(usage), stat))


# -- the adapter: file reads, about 20 µs each


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError as exc:
        raise CgroupError(f"{path}: {exc.strerror or exc}") from None


def read_usage(files: CgroupFiles) -> Usage:
    """Read one container's files; CgroupError says which one is missing or garbled."""
    return usage_from_files(
        files, cpu=_read(files.cpu), memory_usage=_read(files.memory_usage), memory_stat=_read(files.memory_stat)
    )


def read_first(options: list[CgroupFiles]) -> tuple[CgroupFiles, Usage]:
    """The first of ``options`` that reads, and its usage; else CgroupError for the most likely one."""
    errors = []
    for files in options:
        try:
            return files, read_usage(files)
        except CgroupError as exc:
            errors.append(exc)
    if not errors:
        raise CgroupError("no cgroup path for this cgroup driver and parent")
    more = f" (and {len(errors) - 1} other path{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    raise CgroupError(f"{errors[0]}{more}")


def detect_hierarchy(*, root: str, driver: str, version: str) -> Hierarchy:
    """From /info's CgroupDriver and CgroupVersion; the version from the tree itself when the daemon does not say."""
    root = root.rstrip("/")
    number = {"1": 1, "2": 2}.get(version) or (2 if os.path.exists(f"{root}/cgroup.controllers") else 1)
    cpu_mount = next((m for m in V1_CPU_MOUNTS if os.path.isdir(f"{root}/{m}")), V1_CPU_MOUNTS[0])
    return Hierarchy(root=root, version=number, driver=driver, cpu_mount=cpu_mount)


def layout_problem(hierarchy: Hierarchy) -> str | None:
    """Why the tree at the hierarchy's root cannot hold the daemon's cgroups, or None when it looks right."""
    if hierarchy.driver not in ("cgroupfs", "systemd"):
        return f"the daemon reports cgroup driver {hierarchy.driver!r}, not cgroupfs or systemd"
    root = hierarchy.root
    needed = ["cgroup.controllers"] if hierarchy.version == 2 else ["memory", hierarchy.cpu_mount]
    missing = [name for name in needed if not os.path.exists(f"{root}/{name}")]
    if missing:
        return f"no cgroup v{hierarchy.version} tree at {root or '/'} (no {' or '.join(missing)} in it)"
    return None


class CgroupStats:
    """Samples CPU and memory from cgroup files: the same ``sample()`` as the API source, in milliseconds.

    A container's files are found once (the driver's default path, else its CgroupParent,
    asked by inspect once) and remembered while it is sampled. The reads run in a worker
    thread: hundreds of containers take milliseconds, too long to hold the event loop.
    """

    def __init__(self, *, hierarchy: Hierarchy, cgroup_parent: Callable[[str], Awaitable[str | None]]) -> None:
        self.hierarchy = hierarchy
        self._cgroup_parent = cgroup_parent  # HostConfig.CgroupParent by inspect; None when unknown
        self._files: dict[str, CgroupFiles] = {}
        self._parents: dict[str, str] = {}  # asked once, for containers not at the default path
        self._reported: set[str] = set()

    async def sample(self, container_ids: list[str]) -> tuple[dict[str, Usage], int]:
        """Usage of each container whose files read, and how many did not (each logged once)."""
        return self.report(await self.read(container_ids))

    def report(self, results: Mapping[str, Usage | CgroupError]) -> tuple[dict[str, Usage], int]:
        """The usage read, and how many containers could not be read; one warning per container."""
        usage = {i: r for i, r in results.items() if isinstance(r, Usage)}
        for container_id, result in results.items():
            if isinstance(result, CgroupError) and container_id not in self._reported:
                self._reported.add(container_id)
                log.warning("stats of container %s: cannot read its cgroup: %s", container_id[:12], result)
        return usage, len(results) - len(usage)

    async def read(self, container_ids: list[str]) -> dict[str, Usage | CgroupError]:
        """Each container's usage, or why it could not be read (not logged: for probing)."""
        if not container_ids:
            return {}
        wanted = set(container_ids)
        self._files = {i: f for i, f in self._files.items() if i in wanted}
        self._parents = {i: p for i, p in self._parents.items() if i in wanted}
        self._reported &= wanted
        results = await self._read_all(container_ids)
        unplaced = [i for i, r in results.items() if isinstance(r, CgroupError) and i not in self._parents]
        if unplaced:
            parents = await asyncio.gather(*(self._cgroup_parent(i) for i in unplaced))
            # Unknown (the daemon did not answer): ask again next poll.
            self._parents.update((i, p) for i, p in zip(unplaced, parents, strict=True) if p is not None)
            moved = [i for i, p in zip(unplaced, parents, strict=True) if p]
            if moved:
                results.update(await self._read_all(moved))
        return results

    async def _read_all(self, container_ids: list[str]) -> dict[str, Usage | CgroupError]:
        jobs = {
            i: [self._files[i]]
            if i in self._files
            else self.hierarchy.candidates(container_id=i, parent=self._parents.get(i, ""))
            for i in container_ids
        }
        found = await asyncio.to_thread(_read_jobs, jobs)
        results: dict[str, Usage | CgroupError] = {}
        for container_id, outcome in found.items():
            if isinstance(outcome, CgroupError):
                self._files.pop(container_id, None)  # stopped, or moved: look again next time
                results[container_id] = outcome
            else:
                self._files[container_id], results[container_id] = outcome
        return results


def _read_jobs(jobs: Mapping[str, list[CgroupFiles]]) -> dict[str, tuple[CgroupFiles, Usage] | CgroupError]:
    found: dict[str, tuple[CgroupFiles, Usage] | CgroupError] = {}
    for container_id, options in jobs.items():
        try:
            found[container_id] = read_first(options)
        except CgroupError as exc:
            found[container_id] = exc
    return found

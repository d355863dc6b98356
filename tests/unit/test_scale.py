"""Issue #21: an observation costs the same at 5,000 deployments as at 50. Counted, not timed: the
Python calls one ``apply`` makes (a walk over the deployments, a copy of a mapping through its
Python methods, a sort with a key function all add calls per deployment), the deployments a tick
visits, the memory one ``apply`` allocates (a copy of a mapping in C makes no call, but allocates),
the bytes a save writes, and the deployments and bytes a rendering of ``/metrics`` encodes and compresses anew."""

from __future__ import annotations

import dataclasses
import functools
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import pytest
from prometheus_client import CollectorRegistry

from tests.unit.builders import SETTINGS, reported, service, started
from watcher.domain.machine import apply
from watcher.domain.model import DeploymentKey, State, UpdateState
from watcher.domain.observations import InstanceExited, Observation, Tick
from watcher.domain.settings import RetentionSettings
from watcher.exposition.deflate import gzip_member
from watcher.exposition.pieces import DeploymentsPart
from watcher.exposition.rendering import Format
from watcher.persistence.statefile import StateFile
from watcher.selfmetrics import SelfMetrics

T0 = 1_700_000_000.0
SIZES = (50, 1_000, 5_000)
# Room for one more at 5,000: a new deployment is tracked, not refused at the cap.
ROOMY = dataclasses.replace(SETTINGS, retention=RetentionSettings(max_deployments=6_000))


@functools.cache
def _fleet(size: int) -> State:
    """``size`` deployments reported done through the CI/CD API, one with a running container."""
    state = State()
    for n in range(size):
        key = DeploymentKey(f"svc-{n:05d}", ("production", "staging")[n % 2])
        state = apply(state, reported("1.0.0", "success", T0, key=key), now=T0, settings=ROOMY).state
    state = apply(state, started("c-1", "1.0.0", T0 + 1, key=DeploymentKey("svc-00000", "production")),
                  now=T0 + 1, settings=ROOMY).state  # fmt: skip
    return apply(state, Tick(T0 + 2), now=T0 + 2, settings=ROOMY).state  # the index is built once


class Work(NamedTuple):
    calls: int  # Python and C functions called
    allocated: int  # the peak of the memory allocated meanwhile, bytes


def _work(state: State, observation: Observation) -> tuple[State, Work]:
    """The state after ``observation``, and the work its apply did."""
    count = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    tracemalloc.start()
    sys.setprofile(profile)
    try:
        step = apply(state, observation, now=observation.at, settings=ROOMY)
    finally:
        sys.setprofile(None)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return step.state, Work(count, peak)


STEPS: dict[str, Callable[[float], Observation]] = {
    "a report of a new version": lambda at: reported(
        "2.0.0", "in_progress", at, key=DeploymentKey("svc-00007", "staging")
    ),
    "its final report": lambda at: reported("2.0.0", "success", at, key=DeploymentKey("svc-00007", "staging")),
    "a new deployment": lambda at: reported("1.0.0", "success", at, key=DeploymentKey("new", "production")),
    "a container": lambda at: started("c-2", "1.0.0", at, key=DeploymentKey("svc-00000", "production")),
    "a container exits": lambda at: InstanceExited(at, "c-2", exit_code=0),
    "a tick": Tick,
    # A Swarm service seen: the deployments holding its tasks come from the index, not a walk of all members.
    "a Swarm service": lambda at: service(at, "1.0", key=DeploymentKey("swarm", "production")),
    "its update": lambda at: service(at, "1.1", state=UpdateState.UPDATING, key=DeploymentKey("swarm", "production")),
}


@pytest.fixture(scope="module")
def work() -> dict[int, dict[str, Work]]:
    """The work each step does, applied in turn, at each size."""
    counts: dict[int, dict[str, Work]] = {}
    for size in SIZES:
        # A tick on the state makes it the head of its index's lineage (another test may have used it).
        state, counts[size] = apply(_fleet(size), Tick(T0 + 3), now=T0 + 3, settings=ROOMY).state, {}
        for n, (name, step) in enumerate(STEPS.items()):
            state, counts[size][name] = _work(state, step(T0 + 10 + n))
    return counts


@pytest.mark.parametrize("step", list(STEPS))
def test_an_observation_does_the_same_work_at_5000_deployments_as_at_50(
    work: dict[int, dict[str, Work]], step: str
) -> None:
    small = work[SIZES[0]][step]
    for size in SIZES[1:]:
        large = work[size][step]
        # The same, give or take a few calls (a HAMT a level deeper, a heap entry more): never per deployment.
        assert large.calls <= small.calls + 20, f"{step}: {large.calls} calls at {size}, {small.calls} at 50"
        # A copy of 5,000 entries is 150 kB and more; a HAMT path a level deeper is a few hundred bytes.
        assert large.allocated <= small.allocated + 8_000, f"{step}: {large} at {size}, {small} at 50"


@pytest.mark.parametrize("size", SIZES)
def test_a_save_writes_only_what_changed(tmp_path: Path, size: int) -> None:
    """The state file after a report: one line of the journal holding the deployment it changed,
    whatever the fleet's size; the file and its journal are what a load reads back."""
    state = _fleet(size)
    state_file = StateFile(tmp_path, metrics=SelfMetrics(CollectorRegistry()))
    assert state_file.save(state) and state_file.written > size * 100  # the first save: all of it
    step = apply(state, STEPS["a report of a new version"](T0 + 10), now=T0 + 10, settings=ROOMY)
    assert state_file.save(step.state, step.changes)
    assert 0 < state_file.written < 3_000  # one deployment's record
    assert StateFile(tmp_path, metrics=SelfMetrics(CollectorRegistry())).load() == step.state


@pytest.fixture(scope="module")
def renderings() -> dict[int, tuple[int, int]]:
    """At each size: the deployments encoded and the bytes compressed by a rendering after one report."""
    found = {}
    for size in SIZES:
        state = _fleet(size)
        part = DeploymentsPart(Format.negotiate("application/openmetrics-text")[0].encode, settings=ROOMY)
        part.update(state)
        assert part.encoded == size and part.deflater.compressed > size * 1_000  # the first rendering: all of it
        encoded, compressed = part.encoded, part.deflater.compressed
        state = apply(state, STEPS["a report of a new version"](T0 + 10), now=T0 + 10, settings=ROOMY).state
        part.update(state)
        assert gzip_member(part.segments())  # the body is made of them
        found[size] = (part.encoded - encoded, part.deflater.compressed - compressed)
    return found


@pytest.mark.parametrize("size", SIZES[1:])
def test_a_rendering_compresses_only_what_changed(renderings: dict[int, tuple[int, int]], size: int) -> None:
    """After a report, /metrics encodes one deployment and compresses a few chunks of a few deployments (and
    the DORA lines of its environment), whatever the fleet's size: not the megabytes of the whole part."""
    small, large = renderings[SIZES[0]], renderings[size]
    assert small[0] == large[0] == 1
    assert large[1] <= small[1] * 1.5 and large[1] < 40_000, (
        f"{large[1]:,} bytes compressed at {size}, {small[1]:,} at 50"
    )

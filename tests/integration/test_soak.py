"""The soak of ``python -m tests.benchmark soak`` (``tests/soak.py``), for seconds instead of minutes,
so that its code cannot rot: a watcher process under daemon faults and hostile clients stays up,
serves /metrics that parse, keeps its memory, ends in the state of a clean watcher, and stops
cleanly on SIGHUP with its state saved."""

from __future__ import annotations

import asyncio

from tests import soak


def test_a_short_soak_passes() -> None:
    """15 s of faults, changing containers and hostile clients: PASS, and each part did happen. RSS
    is bounded loosely: seconds in, the heap is still growing to its working size (+10% is usual);
    the 20% bound is the 10-minute run's, after a minute of warm-up."""
    result = asyncio.run(soak.soak(15, seed=7, warmup_seconds=4, rss_tolerance=1.0))
    assert result.passed, result.failures()
    assert result.checks >= 5 and result.faults >= 2 and result.changes >= 20
    assert set(result.hostile) == set(soak.HOSTILE)
    assert result.deployments >= 1 and sum(result.docker_errors.values()) >= 1
    assert result.skewed_reports >= 5 and result.skew_counted >= result.skewed_reports
    assert result.hung_up  # and stopped cleanly with its final save (``passed``)


def test_a_difference_from_the_clean_resync_is_found() -> None:
    """The comparison sees a missing deployment, another container, another version and another status."""
    members: dict[str, soak.Member] = {"c1": ("1.0.1", True, "healthy", None)}
    ours: soak.View = {("soak", "a"): {"members": members, "version": "1.0.1", "status": "success"}}
    assert soak.differences(ours, ours) == []
    assert soak.differences(ours, {}) == ["('soak', 'a') only in the soaked watcher"]
    for changed in (
        {"members": {**members, "c2": ("1.0.1", True, "none", None)}, "version": "1.0.1", "status": "success"},
        {"members": members, "version": "1.0.2", "status": "success"},
        {"members": members, "version": "1.0.1", "status": "in_progress"},
    ):
        assert len(soak.differences(ours, {("soak", "a"): changed})) == 1

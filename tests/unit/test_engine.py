"""Unit tests of the shared engine client's reading of error answers."""

from __future__ import annotations

import pytest

from watcher.sources.engine import gone

PODMAN_ID = "c4388fd5842af479b957181ce3e3e4ccc8de40e756cd7d2e07d40216aa147bee"


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (404, "No such container: 4f3c2b1a0e9d", True),
        (404, "", True),
        (500, f"container {PODMAN_ID} does not exist in database: no such container", True),
        (500, "something else went wrong", False),
        (409, "no such container", False),
        (900, "Cannot connect to Docker Engine", False),
    ],
)
def test_gone(status: int, message: str, expected: bool) -> None:
    """An inspect's error means "removed" for Docker's 404 and Podman 4.3's 500 "no such container"."""
    assert gone(status, message) is expected

"""Fixtures shared by the unit tests."""

from __future__ import annotations

import os

import pytest

from watcher import config


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No WATCHER_* variable of the calling environment leaks into a test; set them on the result."""
    for name in list(os.environ):
        if name.startswith(config.ENV_PREFIX):
            monkeypatch.delenv(name)
    return monkeypatch

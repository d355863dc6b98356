"""README stays true: every setting, label and metric family the code has is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher import config
from watcher.domain import labels
from watcher.exposition.families import _Families

README = (Path(__file__).parents[2] / "README.md").read_text()


@pytest.mark.parametrize("option", list(config.options()), ids=lambda o: o.path)
def test_every_setting_documented(option: config.Option) -> None:
    """Each setting appears in README with its flag and environment variable."""
    assert f"`{option.path}`" in README and option.flag in README and option.env in README


@pytest.mark.parametrize("label", labels.ALL)
def test_every_label_documented(label: str) -> None:
    """Each label of the convention has a row in README."""
    assert f"| `{label}` |" in README


@pytest.mark.parametrize("family", [f.name for f in _Families()])
def test_every_metric_documented(family: str) -> None:
    """Each per-deployment family is in README's metrics table."""
    assert f"`{family}" in README or f"`{family}_info`" in README

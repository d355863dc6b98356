"""Text and times from outside: one definition of a flaw, read the same by the labels and the CI/CD API."""

from __future__ import annotations

import pytest

from tests.unit.builders import LABELS_NOW, parse_labels, problems_on
from watcher.config import Settings
from watcher.domain import labels, text, times
from watcher.domain.text import Cleaned
from watcher.sources.api.reports import Invalid, parse_report


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("  v1.2 ", Cleaned("v1.2", unencodable=False, unprintable=False, length=4)),
        ("a\nb\x00", Cleaned("a b", unencodable=False, unprintable=True, length=3)),
        ("\ud800x", Cleaned("?x", unencodable=True, unprintable=False, length=2)),
        ("abcd ef", Cleaned("abcd", unencodable=False, unprintable=False, length=7)),
    ],
)
def test_clean(raw: str, cleaned: Cleaned) -> None:
    """Surrogates become '?', unprintables spaces; the value is stripped, then cut to the limit (and stripped)."""
    assert text.clean(raw, limit=5) == cleaned


@pytest.mark.parametrize(
    ("ahead", "refused"), [(times.FUTURE_SLACK_SECONDS, False), (times.FUTURE_SLACK_SECONDS + 1, True)]
)
def test_label_and_report_agree_on_the_future(ahead: float, refused: bool) -> None:
    """A deploy time up to a day ahead is clock skew for both the label and the report; beyond, a mistake for both."""
    now = LABELS_NOW
    parsed = parse_labels({labels.NAME: "api", labels.TIMESTAMP: str(now + ahead)})
    assert bool(problems_on(parsed, labels.TIMESTAMP)) is refused
    body = {"deployment": "api", "version": "1", "status": "in_progress", "started_at": now + ahead}
    if refused:
        with pytest.raises(Invalid, match="future"):
            parse_report(body, at=now, settings=Settings())
    else:
        assert parse_report(body, at=now, settings=Settings()).started_at == now + ahead

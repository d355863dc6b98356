"""The state file's journal (watcher.persistence.journal, statefile): a save appends what changed, a
load replays it onto state.json, a torn or garbled line is dropped and said, compactions fold it in."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.unit.builders import API, SETTINGS, WORKER, reported, rich_state, started
from watcher.config import StorageSettings
from watcher.domain.machine import NO_CHANGES, Changes, apply
from watcher.domain.model import DeploymentKey, State
from watcher.domain.observations import InstanceGone, Observation, Tick
from watcher.persistence import journal, statefile
from watcher.persistence.codec import decode, encode
from watcher.persistence.statefile import StateFile
from watcher.runtime.saver import StateSaver
from watcher.selfmetrics import SelfMetrics

NOW = 1_717_243_200.0  # 2024-06-01T12:00:00Z
GONE = DeploymentKey("gone", "production")  # rich_state's deployment whose last container is gone


class Saving:
    """A state changed by observations and saved as the saver does: the changes since the last save."""

    def __init__(self, directory: Path, state: State) -> None:
        self.registry = CollectorRegistry()
        self.file = StateFile(directory, metrics=SelfMetrics(self.registry), clock=lambda: NOW)
        self.state, self.changes = state, NO_CHANGES
        assert self.file.save(state)  # the first save writes the file whole

    def __call__(self, *observations: Observation) -> Saving:
        for observation in observations:
            step = apply(self.state, observation, now=observation.at, settings=SETTINGS)
            self.state, self.changes = step.state, self.changes | step.changes
        return self

    def save(self) -> int:
        """Save; the bytes written."""
        assert self.file.save(self.state, self.changes)
        self.changes = NO_CHANGES
        return self.file.written

    def loaded(self, directory: Path) -> tuple[State, CollectorRegistry]:
        registry = CollectorRegistry()
        return StateFile(directory, metrics=SelfMetrics(registry), clock=lambda: NOW).load(), registry


def journal_lines(directory: Path) -> list[bytes]:
    return (directory / "state.journal").read_bytes().split(b"\n")


def test_saves_append_what_changed_and_a_load_replays_them(tmp_path: Path) -> None:
    """New, changed and dropped deployments, retired figures kept: one line per save, the file untouched."""
    saving = Saving(tmp_path, rich_state())
    base = (tmp_path / "state.json").read_bytes()
    saving(reported("9.0.0", "success", 700.0))
    assert saving.save() == len(journal.record(saving.state, Changes(frozenset({API}))))  # api's alone
    saving(reported("1.0.0", "in_progress", 710.0, key=DeploymentKey("new", "qa")))
    saving(started("n", "1.0.0", 711.0, key=DeploymentKey("new", "qa")))
    saving.save()
    # "gone" is dropped by retention; worker's container leaves (the deployment stays, gone since then).
    saving(InstanceGone(720.0, "w"), Tick(1_300.0), Tick(601.0 + SETTINGS.retention.gone_seconds))
    assert GONE not in saving.state.deployments
    saving.save()
    assert (tmp_path / "state.json").read_bytes() == base
    lines = journal_lines(tmp_path)
    assert len(lines) == 5 and lines[-1] == b""  # the header, three saves, each ending with a newline
    assert [sorted(json.loads(line)) for line in lines[1:4]] == [["drop", "forget", "put", "retire"]] * 3
    assert json.loads(lines[3])["drop"] == [{"name": "gone", "environment": "production"}]
    state, registry = saving.loaded(tmp_path)
    assert state == saving.state
    assert registry.get_sample_value("deployment_watcher_state_journal_dropped_total") == 0


def test_retired_figures_kept_and_forgotten_are_replayed(tmp_path: Path) -> None:
    run = Saving(tmp_path, State())
    key = DeploymentKey("api", "production")
    run(reported("1.0.0", "success", 100.0, key=key)).save()
    dropped_at = 100.0 + SETTINGS.api.retention_seconds
    run(Tick(dropped_at)).save()
    assert key in run.state.retired and run.loaded(tmp_path)[0] == run.state
    run(Tick(dropped_at + SETTINGS.retention.dora_seconds)).save()
    assert key not in run.state.retired and run.loaded(tmp_path)[0] == run.state
    assert [json.loads(line)["forget"] for line in journal_lines(tmp_path)[3:4]] == [
        [{"name": "api", "environment": "production"}]
    ]


def test_a_torn_last_line_is_dropped_said_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A crash midway through an append: the saves before it load, the torn one is dropped."""
    saving = Saving(tmp_path, rich_state())
    saving(reported("9.0.0", "success", 700.0)).save()
    kept = saving.state
    saving(reported("9.1.0", "success", 800.0)).save()
    path = tmp_path / "state.journal"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    state, registry = saving.loaded(tmp_path)
    assert state == kept
    assert registry.get_sample_value("deployment_watcher_state_journal_dropped_total") == 1
    assert registry.get_sample_value("deployment_watcher_state_load_errors_total") == 0
    assert f"the state file's journal {path}: line 3 does not end (a save cut short); dropped 1 line(s)" in caplog.text


def test_a_garbled_line_is_dropped_with_those_after_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    saving = Saving(tmp_path, rich_state())
    saving(reported("9.0.0", "success", 700.0)).save()
    kept = saving.state
    saving(reported("9.1.0", "success", 800.0)).save()
    saving(reported("9.2.0", "success", 900.0)).save()
    lines = journal_lines(tmp_path)
    for garbage in (b"\x00\x00\x00", b'{"put": 3}', b'{"drop": [{"name": "api"}]}'):
        (tmp_path / "state.journal").write_bytes(b"\n".join([*lines[:2], garbage, *lines[3:]]))
        state, registry = saving.loaded(tmp_path)
        assert state == kept
        assert registry.get_sample_value("deployment_watcher_state_journal_dropped_total") == 2
    assert "line 3: " in caplog.text and "dropped 2 line(s) from there on" in caplog.text


def test_a_journal_of_an_earlier_file_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A stop between a compaction's two renames: the new file and the old journal, whose saves it holds."""
    saving = Saving(tmp_path, rich_state())
    saving(reported("9.0.0", "success", 700.0)).save()
    old = (tmp_path / "state.journal").read_bytes()
    assert saving.file.save(saving.state, compact=True)
    (tmp_path / "state.journal").write_bytes(old)
    with caplog.at_level(logging.INFO):
        state, registry = saving.loaded(tmp_path)
    assert state == saving.state
    assert "it continues another state.json" in caplog.text
    assert registry.get_sample_value("deployment_watcher_state_journal_dropped_total") == 0
    # A file written before journals (an older watcher, or by hand) names none: no journal applies to it.
    (tmp_path / "state.json").write_bytes(encode(rich_state()))
    assert saving.loaded(tmp_path)[0] == rich_state()


def test_a_journal_that_cannot_be_read_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    saving = Saving(tmp_path, rich_state())
    saving.file.unlock()
    (tmp_path / "state.journal").unlink()
    os.mkfifo(tmp_path / "state.journal")
    state, registry = saving.loaded(tmp_path)
    assert state == rich_state()
    assert registry.get_sample_value("deployment_watcher_state_load_errors_total") == 1
    assert "journal" in caplog.text and "is unusable (not a regular file (a FIFO))" in caplog.text
    assert (tmp_path / "state.journal.corrupt-20240601T120000Z").exists()


def test_a_journal_record_the_file_cannot_hold_makes_both_unusable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A line that reads as JSON but not as a deployment is corruption, as in the file: both moved aside."""
    saving = Saving(tmp_path, rich_state())
    saving(reported("9.0.0", "success", 700.0)).save()
    lines = journal_lines(tmp_path)
    save = json.loads(lines[1])
    save["put"][0]["rollbacks"] = "many"
    (tmp_path / "state.journal").write_bytes(b"\n".join([lines[0], json.dumps(save).encode(), b""]))
    state, registry = saving.loaded(tmp_path)
    assert state == State()
    assert registry.get_sample_value("deployment_watcher_state_load_errors_total") == 1
    assert (tmp_path / "state.json.corrupt-20240601T120000Z").exists()
    assert (tmp_path / "state.journal.corrupt-20240601T120000Z").exists()


def test_the_journal_is_compacted_when_it_outgrows_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statefile, "MIN_JOURNAL_BYTES", 0)
    saving = Saving(tmp_path, rich_state())
    base = len((tmp_path / "state.json").read_bytes())
    at = 700.0
    while saving.file.compactions == 1:
        at += 10
        saving(reported(f"9.{at:g}", "success", at)).save()
    assert len(journal_lines(tmp_path)) == 2  # the header alone: the saves are in the file
    assert decode((tmp_path / "state.json").read_bytes()) == saving.state
    assert saving.loaded(tmp_path)[0] == saving.state
    assert base < len((tmp_path / "state.json").read_bytes())


def test_a_failed_append_makes_the_next_save_a_compaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An append cut short may leave part of a line: nothing is appended after it."""
    saving = Saving(tmp_path, rich_state())
    saving(reported("9.0.0", "success", 700.0))
    real = os.fsync

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert saving.file.save(saving.state, saving.changes) is False
    monkeypatch.setattr(os, "fsync", real)
    saving(reported("9.1.0", "success", 800.0))
    assert saving.file.save(saving.state, Changes(frozenset({WORKER})))  # what changed is not all it writes
    assert saving.file.compactions == 2 and len(journal_lines(tmp_path)) == 2
    assert saving.loaded(tmp_path)[0] == saving.state


def test_a_journal_removed_by_hand_makes_the_next_save_a_compaction(tmp_path: Path) -> None:
    """Appends to a journal no longer in the directory would be lost at the next start."""
    saving = Saving(tmp_path, rich_state())
    (tmp_path / "state.journal").unlink()
    saving(reported("9.0.0", "success", 700.0)).save()
    assert saving.file.compactions == 2 and saving.loaded(tmp_path)[0] == saving.state


async def test_the_final_save_folds_the_journal_into_the_file(tmp_path: Path) -> None:
    """At the stop, an older watcher (which reads state.json alone) may start next."""
    saver = StateSaver(
        StorageSettings(directory=str(tmp_path), debounce_seconds=0), metrics=SelfMetrics(CollectorRegistry())
    )
    try:
        current = State()
        listener = saver.follow(lambda: current)
        for at in (100.0, 200.0):
            step = apply(current, reported(f"{at:g}", "success", at), now=at, settings=SETTINGS)
            current = step.state
            listener(step)
            await saver.save()
        assert len(journal_lines(tmp_path)) == 3  # the first save compacted, the second appended
        await saver.save()
        assert len(journal_lines(tmp_path)) == 3  # nothing changed: nothing written
        await saver.save(final=True)
        assert len(journal_lines(tmp_path)) == 2
        assert decode((tmp_path / "state.json").read_bytes()) == current
    finally:
        saver.close()
        saver.release()


def test_a_record_holds_the_changed_entries_each_as_the_file_does() -> None:
    state = rich_state()
    line = journal.record(state, Changes(frozenset({WORKER, DeploymentKey("absent", "x")}), frozenset()))
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    save = json.loads(line)
    whole = json.loads(encode(state))
    assert save["put"] == [d for d in whole["deployments"] if d["name"] == "worker"]
    assert save["drop"] == [{"name": "absent", "environment": "x"}]

"""The state file's journal, ``state.journal`` beside ``state.json``: what changed since the file was
written, appended at each save, so a save costs what changed, not the whole state (issue #21).
Pure, as ``codec`` is; ``statefile`` writes and reads the files.

The first line names the file it continues: ``{"journal": "<id>", "schema": 3}``, where ``state.json``
holds the same ``journal`` id. Each further line is one save, a JSON object of four lists:
``put``, deployments changed or new (each as ``state.json`` holds one); ``drop``, deployments gone
(``name`` and ``environment``); ``retire``, retired DORA figures kept (as in ``retired``);
``forget``, retired figures forgotten. One line per save, not per deployment: a save is whole or
absent, so a crash midway never leaves half of one (an instance moved between two deployments in
both, say). Loading reads ``state.json``, then replays the lines in order; a line that does not end
with a newline (a save cut short) or cannot be read ends the replay: it and any after it are
dropped, and said. Replay happens on the JSON document, before migrations and the typed decode,
so a journal's records are checked exactly as the file's own objects are.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from watcher.domain.machine import Changes
from watcher.domain.model import DeploymentKey, State
from watcher.persistence.codec import SCHEMA, Document, encode_deployment, encode_retired
from watcher.persistence.typedjson import DecodeError, load

FILE_NAME = "state.journal"
_LISTS = ("put", "drop", "retire", "forget")


def header(journal: str) -> bytes:
    """The journal's first line: the id ``state.json``'s ``journal`` field must hold for it to apply."""
    return json.dumps({"journal": journal, "schema": SCHEMA}).encode() + b"\n"


def record(state: State, changes: Changes) -> bytes:
    """One save's line: the changed entries of ``state``, each encoded alone (what ``state.json`` holds)."""
    put, drop, retire, forget = [], [], [], []
    for key in sorted(changes.deployments):
        deployment = state.deployments.get(key)
        if deployment is None:
            drop.append(_key(key))
        else:
            put.append(encode_deployment(deployment))
    for key in sorted(changes.retired):
        figures = state.retired.get(key)
        if figures is None:
            forget.append(_key(key))
        else:
            retire.append(encode_retired(key, figures))
    lists = (
        b'"%s":[%s]' % (name.encode(), b",".join(items))
        for name, items in zip(_LISTS, (put, drop, retire, forget), strict=True)
    )
    return b"{" + b",".join(lists) + b"}\n"


def _key(key: DeploymentKey) -> bytes:
    return json.dumps({"name": key.name, "environment": key.environment}, separators=(",", ":")).encode()


class Replayed(NamedTuple):
    document: Document  # the base document with the journal's saves applied
    saves: int  # the saves replayed
    dropped: int  # lines dropped: the first unreadable one (torn or garbled) and every one after it
    problem: str  # why the first of them was dropped ("": none was); or why the whole journal did not apply


def replay(document: Document, journal: bytes) -> Replayed:
    """``document`` (a ``state.json`` as loaded, before migrations) with ``journal``'s saves applied
    in order. A journal of another ``state.json`` (one written before the file was, when the watcher
    stopped between the two) applies nothing: its saves are in the file already."""
    if not journal:
        return Replayed(document, 0, 0, "")
    lines = journal.split(b"\n")
    *complete, torn = lines  # what follows the last newline: b"" when the last save ended whole
    if not complete or _journal_id(complete[0]) is None:
        return Replayed(document, 0, len([line for line in lines if line]), "its first line names no state file")
    if _journal_id(complete[0]) != document.get("journal"):
        return Replayed(document, 0, 0, "it continues another state.json (one written before this one)")
    entries = _by_key(document.get("deployments"))
    retired = _by_key(document.get("retired", []))
    if entries is None or retired is None:
        return Replayed(document, 0, 0, "")  # the file itself is malformed: decoding it says where
    saves = 0
    for number, line in enumerate(complete[1:], start=2):
        try:
            lists = _lists(line)
        except DecodeError as exc:
            dropped = len(complete) - number + 1 + (1 if torn else 0)
            return Replayed(_with(document, entries, retired), saves, dropped, f"line {number}: {exc}")
        for entry in lists["put"]:
            entries[_named(entry)] = entry
        for entry in lists["drop"]:
            entries.pop(_named(entry), None)
        for entry in lists["retire"]:
            retired[_named(entry)] = entry
        for entry in lists["forget"]:
            retired.pop(_named(entry), None)
        saves += 1
    problem = f"line {len(complete) + 1} does not end (a save cut short)" if torn else ""
    return Replayed(_with(document, entries, retired), saves, 1 if torn else 0, problem)


def _journal_id(line: bytes) -> str | None:
    try:
        head = load(line)
    except DecodeError:
        return None
    journal = head.get("journal")
    return journal if isinstance(journal, str) and head.get("schema") == SCHEMA else None


def _lists(line: bytes) -> dict[str, list[dict[str, Any]]]:
    """A save's four lists, each of objects named by ``name`` and ``environment`` (their other fields
    are checked when the document is decoded)."""
    save = load(line)
    lists = {name: save.get(name, []) for name in _LISTS}
    for name, entries in lists.items():
        if not isinstance(entries, list) or not all(isinstance(e, dict) and _named(e) for e in entries):
            raise DecodeError(f"{name} is not a list of objects with a name and an environment")
    return lists


def _named(entry: dict[str, Any]) -> tuple[str, str] | None:
    name, environment = entry.get("name"), entry.get("environment")
    return (name, environment) if isinstance(name, str) and isinstance(environment, str) else None


def _by_key(entries: object) -> dict[tuple[str, str] | None, Any] | None:
    """The file's entries by name and environment, in their order; None when it is no list of objects."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return None
    by_key: dict[tuple[str, str] | None, Any] = {}
    for n, entry in enumerate(entries):
        # An entry without a name, or one twice, is kept as it is: decoding the document refuses it.
        key = _named(entry)
        by_key[key if key is not None and key not in by_key else ("", f"#{n}")] = entry
    return by_key


def _with(document: Document, entries: dict[Any, Any], retired: dict[Any, Any]) -> Document:
    return document | {"deployments": list(entries.values()), "retired": list(retired.values())}

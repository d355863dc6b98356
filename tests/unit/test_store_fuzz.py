"""The state file's decoder fuzzed: whatever the file holds, ``decode`` returns a state the watcher
can use (it encodes, renders in both /metrics formats, ticks and reads back equal) or raises
DecodeError, which moves the file aside. Never anything else: that would crash-loop the watcher."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from tests.conftest import examples
from tests.unit.builders import SETTINGS, rich_state
from watcher.domain.machine import apply
from watcher.domain.observations import Tick
from watcher.domain.times import LATEST
from watcher.exposition.families import DeploymentCollector
from watcher.persistence.codec import DecodeError, decode, encode

VALID = encode(rich_state())
DOCUMENT = json.loads(VALID)
FUZZ = settings(deadline=None, max_examples=examples(300), suppress_health_check=[HealthCheck.too_slow])


def usable_or_refused(data: bytes) -> None:
    """The property: DecodeError, or a state every part of the watcher can use."""
    try:
        state = decode(data)
    except DecodeError:
        return
    assert decode(encode(state)) == state
    registry = CollectorRegistry()
    registry.register(DeploymentCollector(snapshot=lambda: state, settings=SETTINGS))
    generate_latest(registry)
    generate_openmetrics(registry)
    later = max((d.rollout.deadline_at for d in state.deployments.values()), default=0.0)
    apply(state, Tick(min(later, LATEST)), now=min(later, LATEST), settings=SETTINGS)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in the document a value could be replaced."""
    found = [path] if path else []
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        found += _paths(child, (*path, key))
    return found


PATHS = _paths(DOCUMENT)

huge_integers = st.integers(1, 4000).map(lambda digits: 10**digits) | st.sampled_from(
    [2**63, 2**64, -(2**63) - 1, 10**400, -(10**400)]
)
odd_floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e308, -1e308, 2.6e11, -0.0, 5e-324])
odd_texts = st.text(st.characters(categories=["Cs", "Cc", "Lo"]), max_size=5)  # lone surrogates among them
scalars = st.none() | st.booleans() | st.integers() | huge_integers | odd_floats | odd_texts
hostile = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
                       max_leaves=8)  # fmt: skip


def _replaced(document: Any, path: tuple[Any, ...], value: object) -> bytes:
    copy = json.loads(json.dumps(document))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(copy).encode()  # NaN and infinities written as JSON's non-standard tokens


@FUZZ
@given(st.sampled_from(PATHS), hostile)
@example(("deployments", 0, "rollbacks"), 10**400)  # the reproduction: crashed every scrape, then every restart
@example(("deployments", 0, "retired_cpu_nanos"), 2**64)
@example(("deployments", 0, "durations", "sum"), float("inf"))
@example(("deployments", 0, "rollout", "started_at"), -1.0)
@example(("deployments", 0, "members", 0, "exit_code"), 2**63)
@example(("deployments", 0, "rollout", "version"), "\ud800")
@example(("deployments", 0, "rollout"), "a string where an object belongs")
def test_any_value_anywhere(path: tuple[Any, ...], value: object) -> None:
    """A valid file with any value (huge integers, NaN, infinities, surrogates, wrong types) at any place."""
    usable_or_refused(_replaced(DOCUMENT, path, value))


@FUZZ
@given(st.sampled_from(PATHS), st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 5000]))
def test_any_token_anywhere(path: tuple[Any, ...], token: str) -> None:
    """Non-standard number tokens and integers Python refuses to read, written in place of any value."""
    marker = "\u2603marker"
    usable_or_refused(_replaced(DOCUMENT, path, marker).replace(json.dumps(marker).encode(), token.encode()))


@FUZZ
@given(st.sampled_from(PATHS), st.integers(1, 200_000), st.sampled_from(["[", '{"a":']))
@example(("deployments",), 100_000, "[")
def test_deep_nesting_anywhere(path: tuple[Any, ...], depth: int, opener: str) -> None:
    """Arrays or objects nested deeper than Python's recursion limit, in place of any value."""
    closer = "]" if opener == "[" else "}"
    marker = "\u2603marker"
    nested = (opener * depth + "1" + closer * depth).encode()
    usable_or_refused(_replaced(DOCUMENT, path, marker).replace(json.dumps(marker).encode(), nested))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255), st.sampled_from("set insert delete")),
                min_size=1, max_size=8))  # fmt: skip
def test_random_mutations(edits: list[tuple[int, int, str]]) -> None:
    """A valid file with bytes changed, inserted or deleted at random (a disk or an editor gone wrong)."""
    data = bytearray(VALID)
    for position, byte, how in edits:
        position = min(position, len(data) - 1)
        if how == "set":
            data[position] = byte
        elif how == "insert":
            data.insert(position, byte)
        elif len(data) > 1:
            del data[position]
    usable_or_refused(bytes(data))


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes(data: bytes) -> None:
    """Anything at all in the file."""
    usable_or_refused(data)


def test_the_valid_file_is_usable() -> None:
    """The property holds for the file as written, which it does not refuse."""
    usable_or_refused(VALID)
    assert decode(VALID) == rich_state()

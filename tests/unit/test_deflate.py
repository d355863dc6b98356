"""Gzip bodies joined from segments compressed apart, and the deployments part kept in chunks of them:
what they decode to is what compressing and encoding everything at once gives, whatever came and went."""

from __future__ import annotations

import dataclasses
import gzip
import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.builders import SETTINGS, reported
from watcher.domain.machine import apply
from watcher.domain.model import Deployment, DeploymentKey, State
from watcher.exposition import deflate, pieces
from watcher.exposition.deflate import Deflater, gzip_member, inflate, joined
from watcher.exposition.families import DeploymentCollector
from watcher.exposition.pieces import DeploymentsPart, Families, without_eof
from watcher.exposition.rendering import Format

OPENMETRICS = "application/openmetrics-text;version=1.0.0"


@given(st.lists(st.binary(max_size=3000), max_size=8))
@settings(max_examples=60, deadline=None)
def test_segments_joined_are_one_gzip_member(datas: list[bytes]) -> None:
    """Segments in any order make one member: gzip reads it whole, CRC and length checked."""
    deflater = Deflater()
    segments = [deflater.segment(data) for data in datas]
    assert [inflate(segment) for segment in segments] == datas
    stream = zlib.decompressobj(zlib.MAX_WBITS | 16)
    assert stream.decompress(gzip_member(reversed(segments))) == b"".join(reversed(datas))
    assert stream.eof and not stream.unused_data
    assert joined(segments).crc == zlib.crc32(b"".join(datas))


@given(st.binary(max_size=500), st.binary(max_size=5000))
def test_both_ways_of_combining_crcs_agree_with_zlib(first: bytes, second: bytes) -> None:
    """zlib's crc32_combine (through ctypes) and the fallback without it give the CRC of the concatenation."""
    expected = zlib.crc32(first + second)
    assert deflate._zeros_combine(zlib.crc32(first), zlib.crc32(second), len(second)) == expected
    assert deflate.combine(zlib.crc32(first), zlib.crc32(second), len(second)) == expected


def test_zlib_combine_is_found_here() -> None:
    """On this machine (as in the image) the O(log n) combine is the one used."""
    assert deflate.combine is not deflate._zeros_combine


def whole(fmt: Format, state: State) -> bytes:
    """The deployments part as encoding all deployments at once gives it."""
    collector = DeploymentCollector(snapshot=lambda: state, settings=SETTINGS)
    return bytes(without_eof(fmt.encode(Families(collector.collect()))))


def _fleets(size: int) -> tuple[dict[DeploymentKey, Deployment], dict[DeploymentKey, Deployment]]:
    """``size`` deployments at a first version, and the same at a second."""
    first = second = State()
    for n in range(size):
        key = DeploymentKey(f"svc-{n:03d}", ("production", "staging")[n % 3 == 0])
        first = apply(first, reported("1.0.0", "success", 100 + n, key=key), now=100 + n, settings=SETTINGS).state
    second = first
    for n in range(size):
        key = DeploymentKey(f"svc-{n:03d}", ("production", "staging")[n % 3 == 0])
        second = apply(second, reported("2.0.0", "failed", 900 + n, key=key), now=900 + n, settings=SETTINGS).state
    return dict(first.deployments.items()), dict(second.deployments.items())


@pytest.mark.parametrize("accept", ["", OPENMETRICS])
def test_chunks_stay_the_whole_encoding_as_deployments_come_change_and_go(
    accept: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random fleets one after another (groups split, merged, emptied): plain and gzip bodies are always what
    encoding all the deployments at once gives."""
    monkeypatch.setattr(pieces, "CHUNK", 4)
    fmt = Format.negotiate(accept)[0]
    ones, twos = _fleets(60)
    rng = random.Random(21)
    part = DeploymentsPart(fmt.encode, settings=SETTINGS)
    for step in range(40):
        keys = rng.sample(sorted(ones), rng.choice([0, 1, 5, 30, 59, 60]) if step % 5 else 60)
        state = State({key: (ones, twos)[rng.random() < 0.5][key] for key in keys})
        assert part.update(state)
        expected = whole(fmt, state)
        assert gzip.decompress(gzip_member(part.segments())) == expected
        assert b"".join(inflate(segment) for segment in part.segments()) == expected
        assert len(part._groups) <= len(keys) // 2 + 1  # merged as they shrink: no trail of tiny groups


def test_a_usage_change_recompresses_the_usage_chunks_of_its_group_alone() -> None:
    """A stats poll of one deployment compresses two chunks (CPU, memory) of a few deployments again."""
    ones, _ = _fleets(200)
    state = State(ones)
    part = DeploymentsPart(Format.negotiate(OPENMETRICS)[0].encode, settings=SETTINGS)
    part.update(state)
    key = DeploymentKey("svc-007", "production")
    before, encoded = part.deflater.compressed, part.encoded
    assert not part.update(state)  # the same state: nothing to do
    polled = dataclasses.replace(ones[key], retired_cpu_nanos=ones[key].retired_cpu_nanos + 10**9)
    part.update(State({**ones, key: polled}))
    assert part.encoded - encoded == 1
    assert 0 < part.deflater.compressed - before < 2 * pieces.CHUNK * 200  # two families' chunks

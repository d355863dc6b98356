"""The deployments part of ``/metrics`` in one format, kept compressed in chunks: a change costs its deployments.

The part is family-major (each family's header, then its sample lines for every deployment in
key order), so one deployment's lines are spread over every family. The deployments are cut, in
key order, into groups of about ``CHUNK``; a *chunk* is one family's lines for one group, kept as a
``deflate.Segment`` (compressed apart) with the length of each deployment's lines in it. A change:

- encodes the deployments that changed again, one at a time, by prometheus-client (the usage
  families alone after a stats poll: ``same_but_usage``); the state is copy-on-write, so an
  unchanged deployment is the same object as before, and the walk that finds the others does
  nothing more per deployment;
- splices their lines into their chunks (a chunk is inflated for it: a few kilobytes) and
  compresses again only the chunks whose bytes changed; a group that grows past twice ``CHUNK``
  is split, one that shrinks below half is merged with the next;
- joins each family's segments again only if one of them changed.

So a rendering compresses what changed and not the part (megabytes at 5,000 deployments), and
the gzip body is the segments joined (``deflate.gzip_member``), byte for byte what encoding all
deployments at once decodes to. Only the compressed chunks are kept (a tenth of the bytes, and
few objects): a plain body is inflated once per rendering (``rendering``).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from watcher.config import Settings
from watcher.domain.model import Deployment, DeploymentKey, Member, State
from watcher.domain.pmap import PMap
from watcher.exposition.deflate import EMPTY, Deflater, Segment, inflate, joined
from watcher.exposition.environments import Dora, EnvironmentPieces
from watcher.exposition.families import PER_ENVIRONMENT, DeploymentCollector, deployment_families, dora_coarse

CHUNK = 16  # deployments per chunk: a change recompresses ~20 chunks of this many; fewer compress worse
EOF = b"# EOF\n"

# The families a stats poll changes; every other family changes only with the rollout.
USAGE_FAMILIES = frozenset({"deployment_cpu_usage_seconds", "deployment_memory_usage_bytes"})
DORA_HISTOGRAMS = ("deployment_lead_time_seconds", "deployment_recovery_seconds")
# The fields only a stats poll changes, and only the usage families read (a test checks both).
# Everything else in a deployment is compared, whatever its fields (``same_but_usage``): a
# field added to the model re-encodes the families when it changes, and a usage field missing
# here costs a needless re-encoding, never a stale series.
USAGE_FIELDS: Mapping[type, frozenset[str]] = {
    Deployment: frozenset({"retired_cpu_nanos"}),
    Member: frozenset({"cpu_nanos", "memory_bytes"}),
}


class Families(Collector):
    """Metric families collected once, encoded in every format (encoders want a collector)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> list[Metric]:
        return self._families


def _compared(cls: type) -> tuple[str, ...] | None:
    """The fields of a ``cls`` value to compare: all but the usage ones; None: compare values whole."""
    usage = frozenset[str]().union(*(USAGE_FIELDS.get(base, frozenset()) for base in cls.__mro__))
    if not usage or not dataclasses.is_dataclass(cls):
        return None
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in usage)


_COMPARED: dict[type, tuple[str, ...] | None] = {}  # _compared of each class met


def same_but_usage(old: object, new: object) -> bool:
    """Whether ``old`` and ``new`` differ in usage fields at most: the other families show the same.

    Every field of the model counts, found by ``dataclasses.fields``, but those of
    ``USAGE_FIELDS``. Copy-on-write makes it cheap: most values are the same object as before.
    """
    if type(old) is not type(new):
        return False
    if isinstance(new, dict):  # the members: opened for their usage fields
        assert isinstance(old, dict)
        if old.keys() != new.keys():
            return False
        pairs: Iterable[tuple[object, object]] = ((old[key], value) for key, value in new.items())
    else:
        try:
            names = _COMPARED[type(new)]
        except KeyError:
            names = _COMPARED[type(new)] = _compared(type(new))
        if names is None:
            return old == new
        pairs = ((getattr(old, name), getattr(new, name)) for name in names)
    return all(before is after or same_but_usage(before, after) for before, after in pairs)


def without_eof(body: bytes) -> bytes | memoryview:
    """The body without OpenMetrics' closing line (the text formats have none)."""
    if body == EOF or body.endswith(b"\n" + EOF):
        return memoryview(body)[: -len(EOF)]
    return body


def blocks(body: bytes) -> list[list[bytes]]:
    """Per family: its header lines joined, then each sample line."""
    found: list[list[bytes]] = []
    for line in bytes(without_eof(body)).splitlines(keepends=True):
        if line.startswith(b"# HELP "):
            found.append([line])
        elif line.startswith(b"#"):
            found[-1][0] += line
        else:
            found[-1].append(line)
    return found


class _Chunk(NamedTuple):
    """One family's lines for one group: compressed, and each deployment's length in them."""

    segment: Segment
    sizes: array[int]


@dataclasses.dataclass(slots=True)
class _Group:
    keys: list[DeploymentKey]  # in order
    chunks: list[_Chunk]  # per family


class _Opened:
    """A group being changed: each family's lines per deployment, split from its chunk when first needed."""

    def __init__(self, group: _Group) -> None:
        self.group = group
        self.keys = list(group.keys)
        self.lines: dict[int, list[bytes]] = {}
        self.reshaped = False  # deployments came or left: every chunk is made again

    def of(self, family: int) -> list[bytes]:
        found = self.lines.get(family)
        if found is None:
            chunk = self.group.chunks[family]
            plain = inflate(chunk.segment)
            found, start = [], 0
            for size in chunk.sizes:
                found.append(plain[start : start + size])
                start += size
            self.lines[family] = found
        return found


class DeploymentsPart:
    """The deployments part in one format; ``update`` brings it to a state, by the deployments that changed."""

    def __init__(self, encode: Callable[[Collector], bytes], *, settings: Settings) -> None:
        self._format = encode
        self._settings = settings
        empty = DeploymentCollector(snapshot=State, settings=settings).describe()
        self._families = len(empty)
        self._usage = [i for i, family in enumerate(empty) if family.name in USAGE_FAMILIES]
        self._dora = [i for i, family in enumerate(empty) if family.name in DORA_HISTOGRAMS]
        self._per_environment = settings.exposition.dora_histograms == PER_ENVIRONMENT
        self.deflater = Deflater()  # its ``compressed``: bytes compressed so far (a test counts them)
        self.encoded = 0  # deployments encoded so far (a test counts them)
        self._headers = [block[0] for block in blocks(encode(Families(empty)))]  # families without series
        self._header_segments = [self.deflater.segment(header) for header in self._headers]
        self._extra: dict[int, Segment] = {}  # the per-environment DORA lines, by family
        self._environments = EnvironmentPieces(lambda families: self._encode(families, range(2)))
        self._kept: dict[DeploymentKey, Deployment] = {}
        self._groups: list[_Group] = []
        self._firsts: list[DeploymentKey] = []  # each group's first key, to find a key's group
        self._sections: list[Segment | None] = [None] * self._families  # each family's chunks joined
        self.state: State | None = None

    def update(self, state: State) -> bool:
        """Show ``state``; whether there was anything to do."""
        worked = self.state is None  # a new part: its headers were encoded
        if state is self.state:
            return worked
        self.state = state
        deployments, kept = state.deployments, self._kept
        pairs = deployments.pairs() if isinstance(deployments, PMap) else deployments.items()
        changed = [(key, d) for key, d in pairs if d is not kept.get(key)]  # well under a millisecond per thousand
        added = sum(1 for key, _ in changed if key not in kept)
        gone = [key for key in kept if key not in deployments] if len(kept) + added != len(deployments) else []
        edits: dict[int, list[tuple[DeploymentKey, dict[int, bytes] | None]]] = {}
        for key, deployment in changed:
            edits.setdefault(self._group_of(key), []).append((key, self._one(deployment, kept.get(key))))
            kept[key] = deployment
        for key in gone:
            edits.setdefault(self._group_of(key), []).append((key, None))
            self._environments.move(key.environment, self._dora_of(kept.pop(key)), None)
        for index in sorted(edits, reverse=True):  # from the last: a split or merge moves no group still to edit
            self._edit(index, edits[index])
        if self._per_environment and (lines := self._environments.pieces()) is not None:
            for family, extra in zip(self._dora, lines, strict=True):
                self._extra[family] = self.deflater.segment(extra)
        return worked or bool(edits)

    def segments(self) -> list[Segment]:
        """The part compressed, in order: ``deflate.gzip_member`` makes a body of it, ``deflate.inflate`` the text."""
        found = []
        for family, header in enumerate(self._header_segments):
            section = self._sections[family]
            if section is None:
                section = self._sections[family] = joined(group.chunks[family].segment for group in self._groups)
            found += [header, section, self._extra.get(family, EMPTY)]
        return found

    def _dora_of(self, deployment: Deployment | None) -> Dora | None:
        return (
            None
            if deployment is None or deployment.usage_only or not self._per_environment
            else dora_coarse(deployment)
        )

    def _one(self, deployment: Deployment, old: Deployment | None) -> dict[int, bytes]:
        """The lines of the families whose inputs changed: the usage families alone after a stats poll."""
        self.encoded += 1
        families = deployment_families(deployment, settings=self._settings)
        if old is not None and same_but_usage(old, deployment):
            return dict(zip(self._usage, self._encode(families, self._usage), strict=True))
        self._environments.move(deployment.key.environment, self._dora_of(old), self._dora_of(deployment))
        return dict(enumerate(self._encode(families, range(len(families)))))

    def _encode(self, families: list[Metric], which: Sequence[int]) -> list[bytes]:
        return [b"".join(lines[1:]) for lines in blocks(self._format(Families([families[i] for i in which])))]

    def _group_of(self, key: DeploymentKey) -> int:
        if not self._groups:
            self._groups.append(_Group([], [_Chunk(EMPTY, array("I"))] * self._families))
            self._firsts.append(key)
        return max(0, bisect.bisect_right(self._firsts, key) - 1)

    def _edit(self, index: int, edits: list[tuple[DeploymentKey, dict[int, bytes] | None]]) -> None:
        """Apply one group's edits (new lines per family, or None: gone), then split, merge and compress it again."""
        opened = _Opened(self._groups[index])
        dirty: set[int] = set()
        for key, lines in sorted(edits, key=lambda edit: edit[0]):  # new keys in order: appended, mostly
            at = bisect.bisect_left(opened.keys, key)
            present = at < len(opened.keys) and opened.keys[at] == key
            if lines is None or not present:
                assert present or lines is not None, f"{key} gone from a group without it"
                opened.reshaped = True
                if lines is None:
                    del opened.keys[at]
                else:
                    opened.keys.insert(at, key)
                for family in range(self._families):
                    if lines is None:
                        del opened.of(family)[at]
                    else:
                        opened.of(family).insert(at, lines.get(family, b""))
                continue
            for family, new in lines.items():
                old = opened.of(family)
                if old[at] != new:
                    old[at] = new
                    dirty.add(family)
        merged = [opened]
        if opened.reshaped and len(opened.keys) < CHUNK // 2 and index + 1 < len(self._groups):
            merged.append(_Opened(self._groups[index + 1]))  # the next group joins this one
            merged[1].reshaped = True
        self._rebuild(index, merged, dirty)

    def _rebuild(self, index: int, opened: list[_Opened], dirty: set[int]) -> None:
        reshaped = any(o.reshaped for o in opened)
        if not reshaped:
            group = opened[0].group
            for family in dirty:
                group.chunks[family] = self._chunk(opened[0].lines[family])
                self._sections[family] = None
            return
        keys = [key for o in opened for key in o.keys]
        lines = [[line for o in opened for line in o.of(family)] for family in range(self._families)]
        count = max(1, round(len(keys) / CHUNK)) if len(keys) > 2 * CHUNK else 1
        bounds = [len(keys) * i // count for i in range(count + 1)]
        groups = [_Group(keys[a:b], [self._chunk(per[a:b]) for per in lines]) for a, b in itertools.pairwise(bounds)]
        groups = [group for group in groups if group.keys]
        self._groups[index : index + len(opened)] = groups
        self._firsts[index : index + len(opened)] = [group.keys[0] for group in groups]
        self._sections = [None] * self._families

    def _chunk(self, lines: list[bytes]) -> _Chunk:
        return _Chunk(self.deflater.segment(b"".join(lines)), array("I", map(len, lines)))

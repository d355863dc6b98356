"""``/metrics`` rendered once per change and served from memory: a scrape does no per-series work.

**Consistency.** A rendering is one immutable object: the ``State`` snapshot it shows and, per
format, the body and its gzip copy. A scrape reads the current rendering through one attribute;
a new rendering replaces it whole, on the event loop. So every scrape gets one complete
rendering of one snapshot, never a half-applied change, and never a torn body.

**Two parts, because they change at different rates and cost very different amounts.**

- The *deployments part* (the collector's families over one snapshot): ~40 series per
  deployment, hundreds of milliseconds per format at 1,000 deployments when encoded whole. It is
  rendered only when the state changed: ``Core.on_change`` wakes the renderer, and the
  snapshot's identity tells whether it did (the state is immutable, so an unchanged state is the
  same object); and then only the deployments that changed are encoded again (``_Pieces``).
- The *own part* (the registry: the watcher's counters, process, runtime and gc metrics): ~150
  series, about a millisecond. Its values change by themselves (CPU, memory) or with each Docker
  event, and most events change no deployment (the health-check execs of every container on
  the host). Re-rendering 1,000 deployments for a counter would spend the idle budget many
  times over, so this part is re-read with every rendering and otherwise at most
  ``exposition.max_staleness_seconds`` after the last reading.

The own part comes last: OpenMetrics' ``# EOF`` ends it, and the deployments part is kept
without it. Refreshing the own part reuses the deployments bytes and the gzip stream as it stood
after them (the ``zlib`` compressor, sync-flushed and copied), so the big part is compressed
once per change and the body stays a single gzip member that every client reads.
Only the bodies someone asks for are assembled: Prometheus asks for gzip, and copying an
uncompressed body of megabytes at every refresh would cost more than the refresh itself.

**When.** After a change the renderer waits until ``exposition.min_interval_seconds`` after the
end of the previous rendering, then renders the newest snapshot: a burst of events costs one
rendering per interval, not one per event. Rendering runs in a worker thread so the event loop
keeps reading Docker events (the daemon drops a client that stops reading). A change therefore
shows in ``/metrics`` within the interval plus one rendering time. The service renders once
before it serves; without that, the first scrape waits for the first rendering.

**Variants.** The format is what ``choose_encoder`` of prometheus-client serves for the best
acceptable media range of ``Accept``, byte for byte what client_python serves for it; gzip
when ``Accept-Encoding`` prefers it (weights honoured: ``negotiation``). A variant (format,
gzip or not) is rendered while someone asked for it within ``VARIANT_IDLE_SECONDS``; to begin
with, gzipped OpenMetrics 1.0.0 (what Prometheus asks for). A scrape asking
for another variant waits for one rendering that adds it; beyond ``MAX_VARIANTS`` live ones, a
body is rendered for that request alone, so a client inventing ``version=`` values cannot grow
the cache.

To serve a prepared ``State`` (tests, benchmarks)::

    registry = CollectorRegistry()
    exposition = Exposition(snapshot=lambda: state, registry=registry, settings=settings,
                            metrics=SelfMetrics(registry))
    app = make_app(exposition=exposition, ready=lambda: True)  # the first scrape renders
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, NoReturn

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from watcher import heap
from watcher.config import ExpositionSettings, Settings
from watcher.domain.model import Deployment, DeploymentKey, Member, State, iter_sorted
from watcher.exposition.environments import Dora, EnvironmentPieces
from watcher.exposition.families import PER_ENVIRONMENT, DeploymentCollector, deployment_families, dora_coarse
from watcher.exposition.negotiation import choose_format, gzip_wanted
from watcher.selfmetrics import SelfMetrics

# Rendered from the start: what Prometheus asks for. Others (curl's plain text) are added at
# their first scrape, which waits for one rendering: each kept format costs megabytes.
START_VARIANTS = (("application/openmetrics-text;version=1.0.0", True),)
VARIANT_IDLE_SECONDS = 600.0  # a variant nobody asked for in this long is no longer rendered
MAX_VARIANTS = 6
# Compressed once per change, not per scrape; level 1 costs a third of the default for ~20% more bytes.
GZIP_LEVEL = 1
GZIP_WBITS = 31  # zlib's gzip container
EOF = b"# EOF\n"


@dataclass(frozen=True, slots=True)
class Format:
    """One body layout ``choose_encoder`` can pick; equal formats render equal bytes."""

    key: tuple[object, ...]
    encode: Callable[[Collector], bytes] = field(compare=False)

    @classmethod
    def of(cls, encoder: Callable[[Collector], bytes]) -> Format:
        if isinstance(encoder, functools.partial):
            return cls((encoder.func, encoder.args, tuple(sorted(encoder.keywords.items()))), encoder)
        return cls((encoder,), encoder)

    @classmethod
    def negotiate(cls, accept: str) -> tuple[Format, str]:
        """The format and Content-Type of the best acceptable media range of ``accept``."""
        encoder, content_type = choose_format(accept)
        return cls.of(encoder), content_type


class Page(NamedTuple):
    """What one scrape gets: the bytes and the headers that describe them."""

    body: bytes
    headers: Mapping[str, str]


class _Families(Collector):
    """Metric families collected once, encoded in every format (encoders want a collector)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> list[Metric]:
        return self._families


class Variant(NamedTuple):
    """What a scrape asks for: a format, gzipped or not."""

    format: Format
    gzip: bool


@dataclass(frozen=True, slots=True)
class _Head:
    """The deployments part in one format, and the gzip stream as it stands after it."""

    identity: bytes | memoryview | None  # None: only gzip bodies are served in this format
    gzip: bytes
    compressor: zlib._Compress  # only ever copied, never fed again

    @classmethod
    def of(cls, deployments: bytes | memoryview, *, plain: bool) -> _Head:
        """``plain``: keep the uncompressed part too (megabytes at 1,000 deployments), for plain bodies."""
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
        # A sync flush ends the part on a byte boundary without ending the stream.
        gzip = compressor.compress(deployments) + compressor.flush(zlib.Z_SYNC_FLUSH)
        return cls(deployments if plain else None, gzip, compressor)

    def body(self, own: bytes, *, gzip: bool) -> bytes:
        """The whole body: this part, then the own part (which ends with ``# EOF`` in OpenMetrics)."""
        if not gzip:
            assert self.identity is not None, "a plain body from a head kept for gzip only"
            return b"".join((self.identity, own))
        tail = self.compressor.copy()
        return b"".join((self.gzip, tail.compress(own), tail.flush()))


@dataclass(frozen=True, slots=True)
class _Rendering:
    state: State
    heads: Mapping[Format, _Head]
    bodies: Mapping[Variant, bytes]
    own_read_at: float  # clock when the own part was collected
    finished_at: float


def next_rendering_at(*, own_read_at: float, finished_at: float, changed: bool, settings: ExpositionSettings) -> float:
    """When the renderer renders next: at the staleness bound, or after a change once the interval has passed."""
    stale_at = own_read_at + settings.max_staleness_seconds
    if not changed:
        return stale_at
    return min(stale_at, finished_at + settings.min_interval_seconds)


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


class _Encoded(NamedTuple):
    deployment: Deployment
    pieces: list[bytes]  # the sample lines of each family
    dora: Dora | None  # the DORA histograms at the exported bounds; None: it exports none (usage only)


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


class _Pieces:
    """The deployments part in one format, kept per deployment and family.

    Rendering 1,000 deployments whole costs about half a second of CPU, and most changes touch
    one deployment (an event) or those with running containers (a stats poll). The state is
    copy-on-write, so an unchanged deployment is the same object as before: only the others
    are encoded again, one at a time, by prometheus-client. Its output is then cut at each
    family's ``# HELP``: header lines (``#``) once, then the sample lines of every deployment in
    order, so the part is byte for byte what encoding all deployments at once gives.
    """

    def __init__(self, fmt: Format, *, settings: Settings) -> None:
        self._format = fmt
        self._settings = settings
        empty = DeploymentCollector(snapshot=State, settings=settings).describe()
        self._headers = self._split(fmt.encode(_Families(empty)))  # families without series: headers alone
        self._usage = [i for i, family in enumerate(empty) if family.name in USAGE_FAMILIES]
        self._kept: Mapping[DeploymentKey, _Encoded] = {}
        self._per_environment = settings.exposition.dora_histograms == PER_ENVIRONMENT
        self._dora = [i for i, family in enumerate(empty) if family.name in DORA_HISTOGRAMS]
        self._environments = EnvironmentPieces(lambda families: self._encode(families, range(2), into=[b"", b""]))

    def encode(self, state: State) -> bytes:
        kept: dict[DeploymentKey, _Encoded] = {}
        previous = self._kept  # replaced whole below: a concurrent rendering never sees it half-built
        dirty: set[str] = set()  # environments whose DORA histograms changed
        for deployment in iter_sorted(state):
            hit = previous.get(deployment.key)
            if hit is None or hit.deployment is not deployment:
                encoded = kept[deployment.key] = self._one(deployment, hit)
                if hit is None or hit.dora != encoded.dora:
                    dirty.add(deployment.key.environment)
            else:
                kept[deployment.key] = hit
        dirty.update(key.environment for key in previous.keys() - kept.keys())  # deployments dropped
        self._kept = kept
        samples = [encoded.pieces for encoded in kept.values()]
        if self._per_environment:
            extra = dict(
                zip(self._dora, self._environments.pieces({k: e.dora for k, e in kept.items()}, dirty), strict=True)
            )
        else:
            extra = {}
        return b"".join(
            header + b"".join(pieces[family] for pieces in samples) + extra.get(family, b"")
            for family, header in enumerate(self._headers)
        )

    def _one(self, deployment: Deployment, hit: _Encoded | None) -> _Encoded:
        """Encode the families whose inputs changed: the usage families alone after a stats poll."""
        families = deployment_families(deployment, settings=self._settings)
        if hit is None or not same_but_usage(hit.deployment, deployment):
            dora = None if deployment.usage_only else dora_coarse(deployment)
            return _Encoded(deployment, self._encode(families, range(len(families)), into=[b""] * len(families)), dora)
        return _Encoded(deployment, self._encode(families, self._usage, into=list(hit.pieces)), hit.dora)

    def _encode(self, families: list[Metric], which: Sequence[int], *, into: list[bytes]) -> list[bytes]:
        blocks = self._blocks(self._format.encode(_Families([families[i] for i in which])))
        for i, lines in zip(which, blocks, strict=True):
            into[i] = b"".join(lines[1:])
        return into

    @classmethod
    def _split(cls, body: bytes) -> list[bytes]:
        return [lines[0] for lines in cls._blocks(body)]

    @staticmethod
    def _blocks(body: bytes) -> list[list[bytes]]:
        """Per family: its header lines joined, then each sample line."""
        blocks: list[list[bytes]] = []
        for line in bytes(_without_eof(body)).splitlines(keepends=True):
            if line.startswith(b"# HELP "):
                blocks.append([line])
            elif line.startswith(b"#"):
                blocks[-1][0] += line
            else:
                blocks[-1].append(line)
        return blocks


def _without_eof(body: bytes) -> bytes | memoryview:
    """The body without OpenMetrics' closing line (the text formats have none)."""
    if body == EOF or body.endswith(b"\n" + EOF):
        return memoryview(body)[: -len(EOF)]
    return body


class Exposition:
    """The current rendering of ``/metrics``: the deployments of ``snapshot()``, then ``registry``."""

    def __init__(
        self,
        *,
        snapshot: Callable[[], State],
        registry: CollectorRegistry,
        settings: Settings,
        metrics: SelfMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshot = snapshot
        self._registry = registry
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._current: _Rendering | None = None
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()  # one rendering at a time, each starting from the last
        now = clock()
        self._asked = {Variant(Format.negotiate(accept)[0], gzip): now for accept, gzip in START_VARIANTS}
        self._by_format: dict[Format, _Pieces] = {}

    def _pieces(self, fmt: Format) -> _Pieces:
        pieces = self._by_format.get(fmt)
        if pieces is None:
            pieces = self._by_format[fmt] = _Pieces(fmt, settings=self._settings)
        return pieces

    def changed(self) -> None:
        """The state changed: render it soon (a ``Core.on_change`` listener; never blocks)."""
        self._changed.set()

    async def page(self, *, accept: str, accept_encoding: str) -> Page:
        """The body for a scrape with these headers; from memory, unless nobody asked for its variant lately."""
        fmt, content_type = Format.negotiate(accept)
        variant = Variant(fmt, gzip_wanted(accept_encoding))
        rendering = self._current
        body = rendering.bodies.get(variant) if rendering is not None else None
        if body is None:
            body = await self._render_for(variant)
        else:
            self._asked[variant] = self._clock()
        headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
        if variant.gzip:
            headers["Content-Encoding"] = "gzip"
        return Page(body, headers)

    async def refresh(self) -> None:
        """Render now: the deployments part if the state changed, the own part always."""
        async with self._lock:
            await self._refresh()

    async def run_forever(self) -> NoReturn:
        """Keep the rendering fresh: after changes (coalesced), and at the staleness bound."""
        settings = self._settings.exposition
        while True:
            rendering = self._current
            if rendering is None:
                await self.refresh()
                continue
            if not self._changed.is_set():
                stale_at = next_rendering_at(
                    own_read_at=rendering.own_read_at, finished_at=rendering.finished_at, changed=False,
                    settings=settings,
                )  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(stale_at - self._clock()):
                        await self._changed.wait()
                rendering = self._current or rendering
            due = next_rendering_at(
                own_read_at=rendering.own_read_at, finished_at=rendering.finished_at,
                changed=self._changed.is_set(), settings=settings,
            )  # fmt: skip
            await asyncio.sleep(max(0.0, due - self._clock()))
            await self.refresh()

    async def _render_for(self, variant: Variant) -> bytes:
        async with self._lock:
            rendering = self._current
            if rendering is not None and variant in rendering.bodies:
                return rendering.bodies[variant]  # rendered while this scrape waited
            if variant not in self._live_variants() and len(self._asked) >= MAX_VARIANTS:
                alone = await asyncio.to_thread(self._render, self._snapshot(), None, [variant])
                return alone.bodies[variant]
            self._asked[variant] = self._clock()
            return (await self._refresh()).bodies[variant]

    async def _refresh(self) -> _Rendering:
        self._changed.clear()  # a change after this snapshot wakes the renderer again
        live = self._live_variants()
        rendering = await asyncio.to_thread(self._render, self._snapshot(), self._current, live)
        self._current = rendering
        for fmt in self._by_format.keys() - {v.format for v in live}:  # pieces of formats nobody asks for lately
            del self._by_format[fmt]
        return rendering

    def _live_variants(self) -> list[Variant]:
        cutoff = self._clock() - VARIANT_IDLE_SECONDS
        for variant in [v for v, at in self._asked.items() if at < cutoff]:
            del self._asked[variant]
        return list(self._asked)

    def _render(self, state: State, previous: _Rendering | None, variants: list[Variant]) -> _Rendering:
        """``state`` and the registry as ``variants``, reusing the deployments part of ``previous`` if it shows ``state``.

        Runs in a worker thread: it reads only the immutable ``state`` and ``previous`` and the
        registry, whose metrics lock their values.
        """
        started = self._clock()
        if not variants:  # nobody scrapes: nothing to keep fresh
            return _Rendering(state=state, heads={}, bodies={}, own_read_at=started, finished_at=started)
        formats = list(dict.fromkeys(v.format for v in variants))
        plain = {v.format for v in variants if not v.gzip}
        kept = previous.heads if previous is not None and previous.state is state else {}
        heads = {f: kept[f] for f in formats if f in kept and (f not in plain or kept[f].identity is not None)}
        if missing := [f for f in formats if f not in heads]:
            heads |= {f: _Head.of(self._pieces(f).encode(state), plain=f in plain) for f in missing}
            self._metrics.exposition_renders.labels("deployments").inc()
            heap.release_free_memory()  # the encoding's temporaries, megabytes at 1,000 deployments
        self._metrics.exposition_renders.labels("own").inc()
        own_read_at = self._clock()
        own_families = _Families(self._registry.collect())
        own = {f: f.encode(own_families) for f in formats}
        bodies = {v: heads[v.format].body(own[v.format], gzip=v.gzip) for v in variants}
        finished = self._clock()
        self._metrics.exposition_duration.observe(finished - started)
        return _Rendering(state=state, heads=heads, bodies=bodies, own_read_at=own_read_at, finished_at=finished)

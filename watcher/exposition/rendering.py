"""``/metrics`` rendered once per change and served from memory: a scrape does no per-series work.

**Consistency.** A rendering is one immutable object: the ``State`` snapshot it shows and, per
format, the body and its gzip copy. A scrape reads the current rendering through one attribute;
a new rendering replaces it whole, on the event loop. So every scrape gets one complete
rendering of one snapshot, never a half-applied change, and never a torn body.

**Two parts, because they change at different rates and cost very different amounts.**

- The *deployments part* (the collector's families over one snapshot): ~20 series per
  deployment, seconds per format at 5,000 deployments when encoded whole. It is brought up to
  date only when the state changed: ``Core.on_change`` wakes the renderer, and the snapshot's
  identity tells whether it did (the state is immutable, so an unchanged state is the same
  object); and then only the deployments that changed are encoded and compressed again, in
  chunks of a few deployments (``pieces.DeploymentsPart``).
- The *own part* (the registry: the watcher's counters, process, runtime and gc metrics): ~150
  series, about a millisecond. Its values change by themselves (CPU, memory) or with each Docker
  event, and most events change no deployment (the health-check execs of every container on
  the host). Re-rendering 1,000 deployments for a counter would spend the idle budget many
  times over, so this part is re-read with every rendering and otherwise at most
  ``exposition.max_staleness_seconds`` after the last reading.

The own part comes last: OpenMetrics' ``# EOF`` ends it, and the deployments part is kept
without it. A gzip body is the deployments part's compressed chunks and the own part
compressed apart, joined into a single gzip member that every client reads (``deflate``): a
refresh of the own part compresses the own part alone. A plain body is the same compressed
pieces, inflated and joined at the first scrape of a rendering and shared by every scrape of it
(200 clients that stop reading hold views of one body, not a copy each), let go with the
rendering: a plain format keeps no megabytes between renderings.

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
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, NoReturn

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from watcher import heap
from watcher.config import ExpositionSettings, Settings
from watcher.domain.model import State
from watcher.exposition.deflate import Deflater, Segment, gzip_member, inflate
from watcher.exposition.negotiation import choose_format, gzip_wanted
from watcher.exposition.pieces import DeploymentsPart, Families
from watcher.selfmetrics import SelfMetrics

# Rendered from the start: what Prometheus asks for. Others (curl's plain text) are added at
# their first scrape, which waits for one rendering: each kept format costs megabytes.
START_VARIANTS = (("application/openmetrics-text;version=1.0.0", True),)
VARIANT_IDLE_SECONDS = 600.0  # a variant nobody asked for in this long is no longer rendered
MAX_VARIANTS = 6


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


Piece = bytes | Segment  # of a body: as it is, or compressed (a plain body inflates it)


class Page(NamedTuple):
    """What one scrape gets: the body and the headers that describe it."""

    body: bytes
    headers: Mapping[str, str]


def _joined(parts: tuple[Piece, ...]) -> bytes:
    """A body of its parts, the compressed ones inflated (a gzip body is one part: itself)."""
    return b"".join(inflate(part) if isinstance(part, Segment) else part for part in parts)


class Variant(NamedTuple):
    """What a scrape asks for: a format, gzipped or not."""

    format: Format
    gzip: bool


@dataclass(frozen=True, slots=True)
class _Rendering:
    state: State
    bodies: Mapping[Variant, tuple[Piece, ...]]
    own_read_at: float  # clock when the own part was collected
    finished_at: float


def next_rendering_at(*, own_read_at: float, finished_at: float, changed: bool, settings: ExpositionSettings) -> float:
    """When the renderer renders next: at the staleness bound, or after a change once the interval has passed."""
    stale_at = own_read_at + settings.max_staleness_seconds
    if not changed:
        return stale_at
    return min(stale_at, finished_at + settings.min_interval_seconds)


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
        self._by_format: dict[Format, DeploymentsPart] = {}
        # The current rendering's plain bodies as scrapes read them (by the parts' id, the parts kept beside):
        # inflated and joined once for all of them, so clients that stop reading hold views of the same
        # bytes, not a copy each (200 such clients held 160 MB), and a scrape costs the loop one slicing of
        # one body, not of its families' dozens of parts. Let go with the rendering.
        self._plain: dict[int, tuple[tuple[Piece, ...], bytes]] = {}

    def changed(self) -> None:
        """The state changed: render it soon (a ``Core.on_change`` listener; never blocks)."""
        self._changed.set()

    async def page(self, *, accept: str, accept_encoding: str) -> Page:
        """The body for a scrape with these headers; from memory, unless nobody asked for its variant lately."""
        fmt, content_type = Format.negotiate(accept)
        variant = Variant(fmt, gzip_wanted(accept_encoding))
        rendering = self._current
        parts = rendering.bodies.get(variant) if rendering is not None else None
        if parts is None:
            parts = await self._render_for(variant)
        else:
            self._asked[variant] = self._clock()
        headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
        if variant.gzip:
            headers["Content-Encoding"] = "gzip"
        current = self._current  # a body rendered for one scrape alone (beyond MAX_VARIANTS) is not kept
        shared = current is not None and current.bodies.get(variant) is parts
        return Page(self._shared_body(parts) if shared else _joined(parts), headers)

    def _shared_body(self, parts: tuple[Piece, ...]) -> bytes:
        known = self._plain.get(id(parts))
        if known is None or known[0] is not parts:
            known = self._plain[id(parts)] = (parts, _joined(parts))
        return known[1]

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

    async def _render_for(self, variant: Variant) -> tuple[Piece, ...]:
        async with self._lock:
            rendering = self._current
            if rendering is not None and variant in rendering.bodies:
                return rendering.bodies[variant]  # rendered while this scrape waited
            if variant not in self._live_variants() and len(self._asked) >= MAX_VARIANTS:
                alone = await asyncio.to_thread(self._render, self._snapshot(), [variant], keep=False)
                return alone.bodies[variant]
            self._asked[variant] = self._clock()
            return (await self._refresh()).bodies[variant]

    async def _refresh(self) -> _Rendering:
        self._changed.clear()  # a change after this snapshot wakes the renderer again
        live = self._live_variants()
        rendering = await asyncio.to_thread(self._render, self._snapshot(), live)
        self._current = rendering
        self._plain = {}
        for fmt in self._by_format.keys() - {v.format for v in live}:  # pieces of formats nobody asks for lately
            del self._by_format[fmt]
        return rendering

    def _live_variants(self) -> list[Variant]:
        cutoff = self._clock() - VARIANT_IDLE_SECONDS
        for variant in [v for v, at in self._asked.items() if at < cutoff]:
            del self._asked[variant]
        return list(self._asked)

    def _render(self, state: State, variants: list[Variant], *, keep: bool = True) -> _Rendering:
        """``state`` and the registry as ``variants``: each format's part brought to ``state`` by what changed.

        Runs in a worker thread, one at a time (the lock): it reads only the immutable ``state``
        and the registry, whose metrics lock their values, and changes only the parts, which no
        scrape reads (a rendering's bodies are bytes of their own). Without ``keep``, the parts are
        made for this rendering alone.
        """
        started = self._clock()
        if not variants:  # nobody scrapes: nothing to keep fresh
            return _Rendering(state=state, bodies={}, own_read_at=started, finished_at=started)
        parts = {}
        for fmt in dict.fromkeys(v.format for v in variants):
            part = self._by_format.get(fmt) if keep else None
            if part is None:
                part = DeploymentsPart(fmt.encode, settings=self._settings)
                if keep:
                    self._by_format[fmt] = part
            parts[fmt] = part
        if [self._update(fmt, part, state) for fmt, part in parts.items()].count(True):
            self._metrics.exposition_renders.labels("deployments").inc()
        # The temporaries of the encoding, and of the scrapes since (megabyte slices of plain bodies):
        # freed pages go back to the OS within a staleness bound (a fraction of a millisecond).
        heap.release_free_memory()
        self._metrics.exposition_renders.labels("own").inc()
        own_read_at = self._clock()
        own_families = Families(self._registry.collect())
        own = {fmt: fmt.encode(own_families) for fmt in parts}
        bodies = {v: self._body(parts[v.format], own[v.format], gzip=v.gzip) for v in variants}
        finished = self._clock()
        self._metrics.exposition_duration.observe(finished - started)
        return _Rendering(state=state, bodies=bodies, own_read_at=own_read_at, finished_at=finished)

    def _update(self, fmt: Format, part: DeploymentsPart, state: State) -> bool:
        try:
            return part.update(state)
        except BaseException:
            self._by_format.pop(fmt, None)  # left half-changed: the next rendering makes it afresh
            raise

    @staticmethod
    def _body(part: DeploymentsPart, own: bytes, *, gzip: bool) -> tuple[Piece, ...]:
        """The deployments part, then the own part (which ends with ``# EOF`` in OpenMetrics)."""
        if gzip:
            return (gzip_member([*part.segments(), Deflater().segment(own)]),)
        return (*(segment for segment in part.segments() if segment.size), own)

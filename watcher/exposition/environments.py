"""The lead-time and recovery histograms per environment (``exposition.dora_histograms: environment``).

Each environment's histograms are the sums of its deployments' (at the exported bounds), kept and
moved by each deployment that changes (its old figures out, its new ones in), and encoded again
only for the environments that moved: a report costs the same however many deployments an
environment has. The sums are exact (the sums of seconds are fractions, not floats), so they are
what summing every deployment afresh gives (``families.dora_sums``, rounded once), whatever the
order of the moves: a ``_sum`` that only ever grows never shrinks by a rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from prometheus_client.metrics_core import Metric

from watcher.exposition.families import DORA_BOUNDS, Coarse, environment_families

Dora = tuple[Coarse, Coarse]  # lead times, recoveries


class _Sums:
    """One environment's figures: how many deployments have some, and the exact sums of both histograms."""

    def __init__(self) -> None:
        self.deployments = 0
        self.counts = [[0.0] * (len(DORA_BOUNDS) + 1) for _ in range(2)]  # whole numbers: float sums are exact
        self.totals = [Fraction(0), Fraction(0)]

    def move(self, dora: Dora, sign: int) -> None:
        self.deployments += sign
        for i, histogram in enumerate(dora):
            self.counts[i] = [
                mine + sign * theirs for mine, theirs in zip(self.counts[i], histogram.counts, strict=True)
            ]
            self.totals[i] += sign * Fraction(histogram.total)

    def coarse(self) -> Dora:
        lead_times, recoveries = (Coarse(DORA_BOUNDS, tuple(self.counts[i]), float(self.totals[i])) for i in range(2))
        return lead_times, recoveries


class EnvironmentPieces:
    """The sample lines of both families, per environment; ``encode`` gives each family's sample lines."""

    def __init__(self, encode: Callable[[list[Metric]], list[bytes]]) -> None:
        self._encode = encode
        self._sums: dict[str, _Sums] = {}
        self._lines: dict[str, list[bytes]] = {}
        self._dirty: set[str] = set()

    def move(self, environment: str, before: Dora | None, after: Dora | None) -> None:
        """A deployment of ``environment`` changed its figures (None: it has none, or is not there)."""
        if before == after:
            return
        sums = self._sums.setdefault(environment, _Sums())
        if before is not None:
            sums.move(before, -1)
        if after is not None:
            sums.move(after, 1)
        self._dirty.add(environment)

    def pieces(self) -> list[bytes] | None:
        """Both families' sample lines, environments in order; None when no environment moved since the last call."""
        if not self._dirty:
            return None
        for environment in self._dirty:
            sums = self._sums[environment]
            if sums.deployments:
                self._lines[environment] = self._encode(list(environment_families({environment: sums.coarse()})))
            else:
                del self._sums[environment]
                self._lines.pop(environment, None)
        self._dirty.clear()
        ordered = [self._lines[e] for e in sorted(self._lines)]
        return [b"".join(lines[i] for lines in ordered) for i in range(2)]

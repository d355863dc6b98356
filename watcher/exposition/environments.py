"""The lead-time and recovery histograms per environment (``exposition.dora_histograms: environment``).

Each environment's histograms are the sums of its deployments' (at the exported bounds), encoded
once and kept: an environment is summed and encoded again only when the DORA figures of one of its
deployments changed or a deployment came or left, so a stats poll or a rollout in progress costs
nothing here. Sums are recomputed from the deployments, never adjusted by differences: a float
``_sum`` that only ever adds stays monotonic, as a counter must.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client.metrics_core import Metric

from watcher.domain.model import DeploymentKey
from watcher.exposition.families import Coarse, environment_families

Dora = tuple[Coarse, Coarse]  # lead times, recoveries


class EnvironmentPieces:
    """The sample lines of both families, per environment; ``encode`` gives each family's sample lines."""

    def __init__(self, encode: Callable[[list[Metric]], list[bytes]]) -> None:
        self._encode = encode
        self._lines: dict[str, list[bytes]] = {}

    def pieces(self, dora: Mapping[DeploymentKey, Dora | None], dirty: Iterable[str]) -> list[bytes]:
        """Both families' sample lines, environments in order; ``dirty``: those whose deployments changed."""
        if dirty := set(dirty):
            sums: dict[str, Dora] = {}
            for key, figures in dora.items():
                if figures is not None and key.environment in dirty:
                    found = sums.get(key.environment)
                    sums[key.environment] = figures if found is None else _plus(found, figures)
            for environment in dirty:
                if environment in sums:
                    self._lines[environment] = self._encode(
                        list(environment_families({environment: sums[environment]}))
                    )
                else:
                    self._lines.pop(environment, None)
        ordered = [self._lines[e] for e in sorted(self._lines)]
        return [b"".join(lines[i] for lines in ordered) for i in range(2)]


def _plus(a: Dora, b: Dora) -> Dora:
    return a[0].plus(b[0]), a[1].plus(b[1])

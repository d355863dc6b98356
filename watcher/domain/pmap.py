"""A persistent mapping: a new version with one key changed costs O(log n) and shares the rest with the
old one, which stays as it was. The state's deployments, owners and retired figures are kept in these,
so an observation that changes one deployment no longer copies all 5,000 (issue #21).

A thin typed face over ``immutables.Map`` (a HAMT in C, the structure behind ``contextvars``): it
compares equal to any mapping with the same items, as the plain dicts it replaces did. Iteration
follows the keys' hashes, not their insertion: whatever needs an order sorts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import immutables

K = TypeVar("K")
V = TypeVar("V")


class PMap(Mapping[K, V]):
    __slots__ = ("_map",)

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._map: immutables.Map[K, V] = immutables.Map(items)

    @classmethod
    def of(cls, mapping: Mapping[K, V]) -> PMap[K, V]:
        """``mapping`` itself when it is one already (O(1)), else a copy (O(n), once)."""
        return mapping if isinstance(mapping, PMap) else cls(mapping)

    @classmethod
    def _wrap(cls, inner: immutables.Map[K, V]) -> PMap[K, V]:
        new: PMap[K, V] = cls.__new__(cls)
        new._map = inner
        return new

    def set(self, key: K, value: V) -> PMap[K, V]:
        """A new version with ``key`` → ``value``; this one is unchanged."""
        return self._wrap(self._map.set(key, value))

    def delete(self, key: K) -> PMap[K, V]:
        """A new version without ``key`` (KeyError when absent); this one is unchanged."""
        return self._wrap(self._map.delete(key))

    def __getitem__(self, key: K) -> V:
        return self._map[key]

    def get(self, key: K, default: Any = None) -> Any:
        return self._map.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def __iter__(self) -> Iterator[K]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def pairs(self) -> Iterator[tuple[K, V]]:
        """The items, iterated in C: ``items()`` (from ``Mapping``) calls ``__getitem__`` for each key."""
        return iter(self._map.items())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PMap):
            return self._map == other._map
        if isinstance(other, Mapping):
            return len(self) == len(other) and all(k in other and other[k] == v for k, v in self._map.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PMap({dict(self._map.items())!r})"

"""Typed reads from a JSON document that is trusted with nothing: each value read as the type and
range asked for, or a ``DecodeError`` naming the field's path (``deployments[3].rollout.revision``).
Knows no schema: ``codec`` says which fields a state file has.

A number of the right kind outside its range is read as the nearest bound (``clamped``) rather than
refused, and noted where ``noting_clamped`` collects them: a file written by an older watcher,
before a value was clamped at its source, must not lose every other deployment's revisions and
DORA counts. Met as it is, such a number crashed a scrape (an integer beyond a float) or a save.
What is no number at all (NaN, infinite, a string) stays corruption.
"""

from __future__ import annotations

import enum
import json
import math
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from watcher.domain import limits
from watcher.domain.times import LATEST

T = TypeVar("T")
N = TypeVar("N", int, float)
E = TypeVar("E", bound=enum.Enum)

MAX_COUNT = limits.MAX_COUNT
MAX_AMOUNT = sys.float_info.max  # seconds and bytes: any finite non-negative number
# The fields clamped by the reads running in this context, each "where: value → bound".
_clamped: ContextVar[list[str]] = ContextVar("clamped")


class DecodeError(ValueError):
    """Not a document this watcher can read: corrupt, truncated, or of an unknown schema."""


def load(data: bytes) -> dict[str, Any]:
    """The JSON object in ``data``: UTF-8, no NaN or Infinity (JSON has none), an object at the top."""
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON (truncated files end here), absurd nesting
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise DecodeError("the top level is not an object")
    return document


@contextmanager
def noting_clamped(into: list[str] | None) -> Iterator[None]:
    """Within: where a number out of its range was read as its nearest bound, and what it was, added
    to ``into`` (None: not kept)."""
    token = _clamped.set([] if into is None else into)
    try:
        yield
    finally:
        _clamped.reset(token)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


class Object:
    """Typed reads from one JSON object; every problem names the field's path. A read's ``default``,
    where it takes one, is the value of a missing field (one added without a new schema)."""

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, dict):
            raise DecodeError(f"{where}: expected an object, got {type(value).__name__}")
        self._value: Mapping[str, object] = value
        self.where = where

    def _get(self, name: str, default: object = None) -> object:
        """``default``, when not None: the value of a missing field (one added without a new schema)."""
        if default is not None and name not in self._value:
            return default
        try:
            return self._value[name]
        except KeyError:
            raise DecodeError(f"{self.where}.{name}: missing") from None

    def _optional(self, name: str, read: Callable[[object, str], T]) -> T | None:
        """The field read by ``read`` (its value and path), or None when it is null."""
        value = self._get(name)
        return None if value is None else read(value, f"{self.where}.{name}")

    def present(self, name: str) -> bool:
        """Whether the field is there and not null (a field added without a new schema: absent means none)."""
        return self._value.get(name) is not None

    def has(self, name: str) -> bool:
        """Whether the field is there (a field added without a new schema may be missing)."""
        return name in self._value

    def text(self, name: str, *, default: str | None = None) -> str:
        return text(self._get(name, default), f"{self.where}.{name}")

    def label(self, name: str) -> str:
        """Text /metrics shows as a label value: UTF-8, so a lone surrogate (JSON's ``\\ud800``) is refused."""
        value = self.text(name)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError(f"{self.where}.{name}: not UTF-8 text") from None
        return value

    def optional_text(self, name: str) -> str | None:
        return self._optional(name, text)

    def integer(self, name: str, *, minimum: int = 0, maximum: int = MAX_COUNT) -> int:
        return integer(self._get(name), f"{self.where}.{name}", minimum=minimum, maximum=maximum)

    def optional_integer(self, name: str, *, minimum: int = 0, maximum: int = MAX_COUNT) -> int | None:
        return self._optional(name, lambda value, where: integer(value, where, minimum=minimum, maximum=maximum))

    def time(self, name: str) -> float:
        """Unix seconds, from 0 (tests and defaults use small times) to the year 9999."""
        return _time(self._get(name), f"{self.where}.{name}")

    def optional_time(self, name: str) -> float | None:
        return self._optional(name, _time)

    def amount(self, name: str) -> float:
        """Seconds or bytes: finite and not negative."""
        return amount(self._get(name), f"{self.where}.{name}")

    def optional_amount(self, name: str) -> float | None:
        return self._optional(name, amount)

    def optional_measurement(self, name: str) -> float | None:
        return self._optional(name, measurement)

    def flag(self, name: str, *, default: bool | None = None) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise DecodeError(f"{self.where}.{name}: expected true or false, got {value!r:.40}")
        return value

    def choice(self, name: str, parse: Callable[[str], T]) -> T:
        """``parse``: text → value, ValueError for text that is none (``Status.from_text``, ``member_of``)."""
        return self._chosen(name, self.text(name), parse)

    def optional_choice(self, name: str, parse: Callable[[str], T]) -> T | None:
        value = self.optional_text(name)
        return None if value is None else self._chosen(name, value, parse)

    def _chosen(self, name: str, value: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(value)
        except ValueError as exc:
            raise DecodeError(f"{self.where}.{name}: {exc}") from None

    def array(self, name: str, *, default: list[object] | None = None) -> list[object]:
        value = self._get(name, default)
        if not isinstance(value, list):
            raise DecodeError(f"{self.where}.{name}: expected a list, got {type(value).__name__}")
        return value

    def child(self, name: str) -> Object:
        return Object(self._get(name), f"{self.where}.{name}")


def member_of(kind: type[E]) -> Callable[[str], E]:
    """Text → the member of ``kind`` whose value it is; ValueError naming the values for other text."""

    def parse(text: str) -> E:
        for member in kind:
            if member.value == text:
                return member
        raise ValueError(f"{text!r:.40} is not one of {', '.join(str(m.value) for m in kind)}")

    return parse


# A type check, not watcher.domain.text's cleaning: the file holds what the watcher wrote, values
# cleaned when they came in, so anything else is corruption to refuse, never text to repair.
def text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def integer(value: object, where: str, *, minimum: int = 0, maximum: int = MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{where}: expected an integer, got {_shown(value)}")
    return _within(value, where, minimum, maximum)


def amount(value: object, where: str) -> float:
    """Seconds or bytes: finite and not negative."""
    return _number(value, where, maximum=MAX_AMOUNT)


# A measured value may be infinite (a ratio over no requests), which JSON cannot write as a number.
INFINITIES = {"+Inf": math.inf, "-Inf": -math.inf}


def measurement(value: object, where: str) -> float:
    """A value a query measured: a number of any sign, or ``+Inf`` / ``-Inf``."""
    if isinstance(value, str) and value in INFINITIES:
        return INFINITIES[value]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DecodeError(f"{where}: expected a number, +Inf or -Inf, got {_shown(value)}")
    return float(value)


def _time(value: object, where: str) -> float:
    return _number(value, where, maximum=LATEST)


def _number(value: object, where: str, *, maximum: float) -> float:
    """A number from 0 to ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(f"{where}: expected a number, got {_shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):  # json reads 1e400 as inf without complaint
        raise DecodeError(f"{where}: expected a finite number, got {value}")
    return float(_within(value, where, 0, maximum))


def _within(value: N, where: str, minimum: N, maximum: N) -> N:
    """``value``, or the bound it lies beyond (noted in ``_clamped``). Compared exactly: an integer
    beyond any float is out of range, not an OverflowError."""
    bound = minimum if value < minimum else maximum if value > maximum else None
    if bound is None:
        return value
    _clamped.get().append(f"{where}: {_shown(value)} → {bound}")
    return bound


def _shown(value: object) -> str:
    """A short rendering of a bad value: the repr of a huge integer or a deep list is costly or raises."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, list | dict):
        return f"a {type(value).__name__} of {len(value)}"
    return f"{value!r:.40}"

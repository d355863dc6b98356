"""The read API's answers as typed values, or ``Unparseable``: a client never acts on a shape it
does not know (a missing field, a wrong type), and never fails with a traceback on one.

The shapes are openapi.json's; only what the clients use is read, so a field added later does
not break an older client.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from watcher.clients.reader import Unparseable

T = TypeVar("T")
_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object",
          list: "an array"}  # fmt: skip


def field(obj: Mapping[str, Any], key: str, kind: type[T], where: str) -> T:
    """``obj[key]`` when it is a ``kind``."""
    if key not in obj:
        raise Unparseable(f"{where} has no {key!r}")
    return of(obj[key], kind, f"{where}: {key!r}")


def of(value: Any, kind: type[T], where: str) -> T:
    """``value`` when it is a ``kind``: an integer is a number too, true is not an integer, a number is finite
    (the watcher sends no NaN nor Infinity)."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (
        not isinstance(value, kind)
        or (kind in (int, float) and isinstance(value, bool))
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise Unparseable(f"{where} is {_shown(value)}, not {_NAMES.get(kind, kind.__name__)}")
    return value


def an_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Unparseable(f"{where} is {_shown(value)}, not an object")
    return value


def rows(answer: Any, where: str) -> list[dict[str, Any]]:
    """The rows of the list of deployments (each an object; its fields are read by the caller)."""
    listed = field(an_object(answer, where), "deployments", list, where)
    return [an_object(row, f"{where}: deployments[{i}]") for i, row in enumerate(listed)]


@dataclass(frozen=True, slots=True)
class CheckSeen:
    """One check of an analysis, as the clients print it: its figures as text."""

    name: str
    baseline: str
    current: str
    measurements: dict[str, int]  # by result: pass, fail, nodata, error


@dataclass(frozen=True, slots=True)
class AnalysisSeen:
    """What the clients read of a rollout's analysis."""

    mode: str  # gate, observe
    status: str  # running, passed, failed, inconclusive
    measuring: bool  # its window began (the containers' verdict was success)
    reason: str
    checks: list[CheckSeen]


@dataclass(frozen=True, slots=True)
class Summary:
    """What the gate reads of a deployment's row: its current rollout."""

    name: str
    environment: str
    revision: int
    version: str
    status: str  # in_progress, success, failed (another: not a verdict)
    rollback: bool
    reason: str
    analysis: AnalysisSeen | None = None  # none, or a watcher before analyses existed


def summary(value: Any, where: str) -> Summary:
    row = an_object(value, where)
    analysis = row.get("analysis")
    return Summary(
        name=field(row, "name", str, where),
        environment=field(row, "environment", str, where),
        revision=field(row, "revision", int, where),
        version=field(row, "version", str, where),
        status=field(row, "status", str, where),
        rollback=field(row, "rollback", bool, where),
        reason=field(row, "reason", str, where),
        analysis=None if analysis is None else _analysis(analysis, f"{where}: 'analysis'"),
    )


def _analysis(value: Any, where: str) -> AnalysisSeen:
    analysis = an_object(value, where)
    checks = field(analysis, "checks", list, where)
    return AnalysisSeen(
        mode=field(analysis, "mode", str, where),
        status=field(analysis, "status", str, where),
        measuring=analysis.get("measuring_since") is not None,
        reason=field(analysis, "reason", str, where),
        checks=[_check(check, f"{where}: checks[{i}]") for i, check in enumerate(checks)],
    )


def _check(value: Any, where: str) -> CheckSeen:
    check = an_object(value, where)
    counts = field(check, "measurements", dict, where)
    return CheckSeen(
        name=field(check, "name", str, where),
        baseline=figure(check.get("baseline"), f"{where}: 'baseline'"),
        current=figure(check.get("current"), f"{where}: 'current'"),
        measurements={result: of(n, int, f"{where}: {result!r}") for result, n in counts.items()},
    )


def figure(value: Any, where: str) -> str:
    """A check's value as printed: 6 significant digits, "+Inf"/"-Inf" as sent, "-" for none."""
    if value is None:
        return "-"
    if value in ("+Inf", "-Inf"):
        return str(value)
    return f"{of(value, float, where):.6g}"


def _shown(value: Any) -> str:
    """A value named by its JSON type, never printed whole (it may be long, or a terminal escape)."""
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    for kind in (bool, str, int, float, dict, list):
        if isinstance(value, kind):
            return _NAMES[kind]
    return type(value).__name__

"""The state file's part for rollout analysis (``codec`` holds the rest): a rollout's analysis with
its baselines, measurements and window, so an analysis under way survives a restart; and a
container's request for one."""

from __future__ import annotations

import math
from typing import Any

from watcher.domain.analysis import Analysis, Check, Measured, Mode, Outcome, Request, Result
from watcher.persistence.typedjson import INFINITIES, Object, member_of, text

Document = dict[str, Any]


def encode(a: Analysis) -> Document:
    return {
        "mode": a.mode.value,
        "rollback": a.rollback,
        "outcome": a.outcome.text,
        "measuring_since": a.measuring_since,
        "ends_at": a.ends_at,
        "reason": a.reason,
        "rollback_done": a.rollback_done,
        "checks": [_encode_measured(m) for m in a.checks],
    }


def _encode_measured(m: Measured) -> Document:
    return {
        "name": m.check.name,
        "query": m.check.query,
        "min": _value(m.check.min),
        "max": _value(m.check.max),
        "max_increase": _value(m.check.max_increase),
        "baseline": _value(m.baseline),
        "baseline_taken": m.baseline_taken,
        "current": _value(m.current),
        "measured_at": m.measured_at,
        "passes": m.passes,
        "failures": m.failures,
        "nodata": m.nodata,
        "errors": m.errors,
        "last": None if m.last is None else m.last.value,
    }


def encode_request(r: Request) -> Document:
    return {"checks": list(r.checks), "mode": r.mode.value, "rollback": r.rollback}


def _value(value: float | None) -> float | str | None:
    """A measured value as JSON can hold it (no infinities; a NaN is never kept: it is no data)."""
    if value is None or math.isfinite(value):
        return value
    return next(name for name, infinity in INFINITIES.items() if infinity == value)


def decode(a: Object) -> Analysis:
    checks = []
    for n, raw in enumerate(a.array("checks")):
        m = Object(raw, f"{a.where}.checks[{n}]")
        check = Check(
            name=m.text("name"), query=m.text("query"), min=m.optional_measurement("min"),
            max=m.optional_measurement("max"), max_increase=m.optional_measurement("max_increase"),
        )  # fmt: skip
        checks.append(
            Measured(
                check=check, baseline=m.optional_measurement("baseline"), baseline_taken=m.flag("baseline_taken"),
                current=m.optional_measurement("current"), measured_at=m.optional_time("measured_at"),
                passes=m.integer("passes"), failures=m.integer("failures"), nodata=m.integer("nodata"),
                errors=m.integer("errors"), last=m.optional_choice("last", member_of(Result)),
            )
        )  # fmt: skip
    return Analysis(
        mode=a.choice("mode", member_of(Mode)),
        checks=tuple(checks),
        rollback=a.flag("rollback"),
        outcome=a.choice("outcome", _outcome),
        measuring_since=a.optional_time("measuring_since"),
        ends_at=a.optional_measurement("ends_at"),
        reason=a.text("reason"),
        rollback_done=a.flag("rollback_done"),
    )


def _outcome(written: str) -> Outcome:
    """An outcome as written (its text: the number is what /metrics exports)."""
    for outcome in Outcome:
        if outcome.text == written:
            return outcome
    raise ValueError(f"{written!r:.40} is not one of {', '.join(o.text for o in Outcome)}")


def decode_request(r: Object) -> Request:
    return Request(
        checks=tuple(text(c, f"{r.where}.checks") for c in r.array("checks")),
        mode=r.choice("mode", member_of(Mode)),
        rollback=r.flag("rollback"),
    )

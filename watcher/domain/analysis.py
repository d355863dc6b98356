"""Rollout analysis: a rollout judged by what it does, by checks (PromQL queries) on its own metrics.

A deployment asks for checks by name (``deployment.analysis``); the watcher's configuration says
what each name queries and its limits. Each check's *baseline* is its value when the rollout began
(the previous version running). Once the rollout's own verdict is success, each check is measured
every ``interval_seconds`` for ``window_seconds``: a measurement passes, fails (beyond a limit),
has no data or is an error; only a failure counts against the rollout, ``failure_limit`` of them
fail it, and a window with nothing but missing data and errors is inconclusive, never a failure.

In ``gate`` mode the rollout stays in progress while it is analysed; in ``observe`` mode its
status is its containers' verdict and the analysis only records. Pure: values in, verdicts out;
the Prometheus queries are ``watcher.sources.analysis``'s.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# What a check's query may name, filled with the rollout's values as PromQL string contents.
PLACEHOLDERS = ("deployment", "environment", "version", "previous_version", "host")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")


class Mode(enum.Enum):
    """What an analysis may do to its rollout; the value is the label's and the state file's."""

    GATE = "gate"  # the rollout is in progress until the analysis ends, failed when it fails
    OBSERVE = "observe"  # the analysis records; the rollout's status is its own verdict


class Result(enum.Enum):
    """One measurement of one check; the value is ``deployment_analysis_measurements_total{result}``'s."""

    PASS = "pass"
    FAIL = "fail"  # beyond a limit: the only result that counts against the rollout
    NODATA = "nodata"  # an empty answer (no traffic yet, a new series): never a failure by itself
    ERROR = "error"  # Prometheus unreachable, a bad answer, a timeout: never a failure by itself


class Outcome(enum.Enum):
    """Where an analysis stands; the value is what ``deployment_analysis_status`` exports."""

    FAILED = 0
    PASSED = 1
    RUNNING = 2
    INCONCLUSIVE = 3  # its window ended with no data at all: the rollout is judged as if unanalysed

    @property
    def text(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """A check as the configuration names it; ``query`` may hold placeholders (``{{deployment}}``)."""

    name: str
    query: str
    min: float | None = None  # fails below
    max: float | None = None  # fails above
    max_increase: float | None = None  # fails more than this fraction above a baseline (0.5: +50%)


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """What a deployment asks for: checks by name (from its labels, or a report's ``analysis``)."""

    checks: tuple[str, ...]
    mode: Mode = Mode.GATE
    rollback: bool = False  # on failure in gate mode, ask the orchestrator to roll back (Swarm only)


@dataclass(frozen=True, slots=True, kw_only=True)
class Measured:
    """One check of one analysis: its query as sent, its baseline, what it measured so far."""

    check: Check  # the query with its placeholders filled: what Prometheus is sent
    baseline: float | None = None  # the value when the rollout began; None: none (or not yet)
    baseline_taken: bool = False  # asked (an answer with no data is a baseline taken: absent)
    current: float | None = None  # the last measurement's value
    measured_at: float | None = None  # when it was last measured: the next is an interval later
    passes: int = 0
    failures: int = 0
    nodata: int = 0
    errors: int = 0
    last: Result | None = None

    def count(self, result: Result) -> int:
        return {Result.PASS: self.passes, Result.FAIL: self.failures, Result.NODATA: self.nodata}.get(
            result, self.errors
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Analysis:
    """The analysis of one rollout (``Rollout.analysis``)."""

    mode: Mode
    checks: tuple[Measured, ...]
    rollback: bool = False  # asked to roll back on failure (the label), Swarm services only
    outcome: Outcome = Outcome.RUNNING
    measuring_since: float | None = None  # the rollout's own verdict was success: measurements began
    ends_at: float | None = None  # measuring_since + the window
    reason: str = ""  # why it failed (the check and its figures), or why it is inconclusive
    rollback_done: bool = False  # the watcher asked the orchestrator to roll back (once)

    @property
    def failures(self) -> int:
        return sum(m.failures for m in self.checks)

    @property
    def measured(self) -> bool:
        """Whether any measurement had data (passed or failed)."""
        return any(m.passes or m.failures for m in self.checks)


def escape(value: str, *, quote: str, regex: bool) -> str:
    """``value`` as the contents of a PromQL string quoted with ``quote`` (``"`` or ``'``): it can
    only ever be that string's contents. ``regex``: inside a ``=~``/``!~`` matcher, where the value
    must match itself only, so RE2's metacharacters are escaped too."""
    if regex:
        value = re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", value)
    out = []
    for ch in value:
        if ch == "\\" or ch == quote:
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def placeholder_problems(query: str) -> list[str]:
    """What is wrong with a check's placeholders: unknown names, and placeholders outside a
    double- or single-quoted string (where no escaping could keep a value from changing the query)."""
    problems = []
    for match, context in _placeholders(query):
        name = match.group(1)
        if name not in PLACEHOLDERS:
            problems.append(f"unknown placeholder {{{{{name}}}}} (known: {', '.join(PLACEHOLDERS)})")
        elif context is None:
            problems.append(f'placeholder {{{{{name}}}}} must stand inside a quoted string, e.g. job="{{{{{name}}}}}"')
    return problems


def fill(query: str, values: Mapping[str, str]) -> str:
    """``query`` with each placeholder replaced by its value, escaped for the string it stands in;
    a placeholder with a problem (``placeholder_problems``: refused when the config is loaded) is left."""
    parts, end = [], 0
    for match, context in _placeholders(query):
        name = match.group(1)
        if context is None or name not in values:
            continue
        quote, regex = context
        parts += [query[end : match.start()], escape(values[name], quote=quote, regex=regex)]
        end = match.end()
    return "".join(parts) + query[end:]


def _placeholders(query: str) -> list[tuple[re.Match[str], tuple[str, bool] | None]]:
    """Each placeholder with the string it stands in: (its quote, whether a regex matcher's), or None
    outside a double- or single-quoted string (in a backquoted raw string nothing can be escaped)."""
    found: list[tuple[re.Match[str], tuple[str, bool] | None]] = []
    quote, opened_at, i = "", 0, 0
    while i < len(query):
        ch = query[i]
        if quote:
            if ch == "\\" and quote != "`":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote, opened_at = ch, i
        elif ch == "#":  # a comment to the end of the line
            while i < len(query) and query[i] != "\n":
                i += 1
            continue
        match = _PLACEHOLDER.match(query, i) if ch == "{" else None
        if match:
            inside = quote in ('"', "'")
            regex = inside and re.search(r"[=!]~\s*$", query[:opened_at]) is not None
            found.append((match, (quote, regex) if inside else None))
            i = match.end()
            continue
        i += 1
    return found


def judge(check: Check, value: float | None, *, baseline: float | None) -> tuple[Result, str]:
    """A measurement's result, and for a failure the figures that make it one
    (``0.041 > max 0.02 (baseline 0.004)``)."""
    if value is None or math.isnan(value):
        return Result.NODATA, ""
    since = f" (baseline {_figure(baseline)})" if baseline is not None else ""
    if check.max is not None and value > check.max:
        return Result.FAIL, f"{_figure(value)} > max {_figure(check.max)}{since}"
    if check.min is not None and value < check.min:
        return Result.FAIL, f"{_figure(value)} < min {_figure(check.min)}{since}"
    # Against a baseline of 0 (no errors before) every increase is infinite: absolute limits judge.
    if check.max_increase is not None and baseline is not None and baseline > 0:
        limit = baseline * (1 + check.max_increase)
        if value > limit:
            return Result.FAIL, (
                f"{_figure(value)} > {_figure(limit)}, more than {check.max_increase:.0%} above "
                f"baseline {_figure(baseline)}"
            )
    return Result.PASS, ""


def outcome_at_end(analysis: Analysis) -> tuple[Outcome, str]:
    """The outcome of an analysis whose window ended without ``failure_limit`` failures."""
    if analysis.measured:
        return Outcome.PASSED, ""
    return Outcome.INCONCLUSIVE, "no check measured any data within the window (only no data or errors)"


def build(request: Request, configured: Sequence[Check], values: Mapping[str, str]) -> Analysis | None:
    """The analysis a rollout asks for: the configured checks it names, their queries filled with
    ``values`` (the placeholders'); None when it names none of them."""
    by_name = {c.name: c for c in configured}
    checks = tuple(
        Measured(check=dataclasses.replace(by_name[name], query=fill(by_name[name].query, values)))
        for name in dict.fromkeys(request.checks)
        if name in by_name
    )
    return Analysis(mode=request.mode, checks=checks, rollback=request.rollback) if checks else None


def measuring(analysis: Analysis, *, now: float, window: float) -> Analysis:
    """The analysis once its rollout's own verdict is success: its window begins now."""
    return dataclasses.replace(analysis, measuring_since=now, ends_at=now + window)


def ended(analysis: Analysis, outcome: Outcome, reason: str) -> Analysis:
    return dataclasses.replace(analysis, outcome=outcome, reason=reason)


def record(
    analysis: Analysis, name: str, value: float | None, *, error: str, baseline: bool, at: float
) -> tuple[Analysis, Result | None, str]:
    """The analysis after check ``name`` measured ``value`` (``error``: the query failed): the
    measurement's result (None for a baseline) and a failure's figures."""
    index = next(i for i, m in enumerate(analysis.checks) if m.check.name == name)
    measured = analysis.checks[index]
    if baseline:
        # An error asks again (an interval later); no data is a baseline taken: absent.
        value = None if error or value is None or math.isnan(value) else value
        measured = dataclasses.replace(measured, baseline=value, baseline_taken=not error)
        result: Result | None = None
        figures = ""
    else:
        result, figures = (Result.ERROR, "") if error else judge(measured.check, value, baseline=measured.baseline)
        measured = dataclasses.replace(
            measured,
            current=value if result in (Result.PASS, Result.FAIL) else measured.current,
            measured_at=at,
            last=result,
            passes=measured.passes + (result is Result.PASS),
            failures=measured.failures + (result is Result.FAIL),
            nodata=measured.nodata + (result is Result.NODATA),
            errors=measured.errors + (result is Result.ERROR),
        )
    checks = (*analysis.checks[:index], measured, *analysis.checks[index + 1 :])
    return dataclasses.replace(analysis, checks=checks), result, figures


def failed(analysis: Analysis, result: Result | None, *, failure_limit: int) -> bool:
    """Whether a measurement that came out ``result`` fails the analysis: its failures reached the limit."""
    return result is Result.FAIL and analysis.failures >= failure_limit


def _figure(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"  # as Prometheus writes it (and the API and /metrics)
    return f"{value:.6g}"

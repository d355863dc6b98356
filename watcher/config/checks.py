"""The analysis checks of the config file (``analysis.checks``, a list only YAML can hold): read and
validated with every problem at once, as the other settings are."""

from __future__ import annotations

import math
from collections.abc import Mapping

from watcher.domain.analysis import Check, placeholder_problems

PATH = "analysis.checks"
_FIELDS = ("name", "query", "min", "max", "max_increase")
_LIMITS = ("min", "max", "max_increase")


def read(raw: object, problems: list[str]) -> tuple[Check, ...]:
    """The checks in the YAML value ``raw``; what is wrong with them goes to ``problems``."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(f"config file: {PATH} must be a list of checks")
        return ()
    checks: list[Check] = []
    names: set[str] = set()
    for n, item in enumerate(raw):
        check = _check(item, f"{PATH}[{n}]", problems)
        if check is None:
            continue
        if check.name in names:
            problems.append(f"config file: {PATH}[{n}]: the name {check.name!r} is used by another check")
            continue
        names.add(check.name)
        checks.append(check)
    return tuple(checks)


def _check(item: object, where: str, problems: list[str]) -> Check | None:
    if not isinstance(item, Mapping):
        problems.append(f"config file: {where} must be a mapping with name, query and limits")
        return None
    found = len(problems)
    for key in item:
        if key not in _FIELDS:
            problems.append(f"config file: {where}: unknown field {key!r} (known: {', '.join(_FIELDS)})")
    name, query = item.get("name"), item.get("query")
    if not isinstance(name, str) or not name.strip() or "," in name:
        problems.append(f"config file: {where}.name must be a non-empty string without commas")
    else:
        where = f"{PATH} {name.strip()!r}"
    if not isinstance(query, str) or not query.strip():
        problems.append(f"config file: {where}.query must be a non-empty PromQL query")
    else:
        problems.extend(f"config file: {where}.query: {problem}" for problem in placeholder_problems(query))
    limits: dict[str, float | None] = {}
    for key in _LIMITS:
        value = item.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            problems.append(f"config file: {where}.{key} must be a number")
        elif value is not None and not math.isfinite(value):
            problems.append(f"config file: {where}.{key} must be finite")
        else:
            limits[key] = None if value is None else float(value)
    if all(item.get(key) is None for key in _LIMITS):
        problems.append(f"config file: {where} needs at least one of min, max and max_increase")
    increase = limits.get("max_increase")
    if increase is not None and increase < 0:
        problems.append(f"config file: {where}.max_increase must not be negative (0.5: 50% above the baseline)")
    if len(problems) > found:
        return None
    assert isinstance(name, str) and isinstance(query, str)
    return Check(name=name.strip(), query=query, min=limits["min"], max=limits["max"], max_increase=increase)

"""Order deployment version strings the way people expect, to detect rollbacks.

Rules, applied in this order:

1. Surrounding whitespace is ignored, and so is a leading ``v``/``V`` directly
   followed by a digit (``v2.0.0 == 2.0.0``).
2. Git SHAs (7 to 40 hex characters with at least one letter a-f) are unordered.
3. Dates (kind "date"): ``YYYY-MM-DD`` or ``YYYYMMDD`` (19xx/20xx, valid month and
   day), optionally followed by one of ``THH:MM[:SS]``, ``_HHMM[SS]``,
   ``-HHMM[SS]`` or a ``.N`` build suffix. Missing parts count as zero, so
   ``2024-05-02 < 2024-05-02T10:00`` and ``20240501 == 2024-05-01``.
4. Numeric versions (kind "numeric"): dot-separated integers (``1``, ``1.10.0``),
   an optional pre-release (``-rc.1``, or attached when it starts with a letter:
   ``1.2.3rc1``) and optional build metadata ``+...``, which is ignored. Missing
   trailing numbers are zeros; a pre-release sorts before its release, and
   pre-releases compare by semver section 11, with one change: letters and digits
   within an identifier are read as identifiers of their own (``rc10`` as ``rc.10``),
   so embedded numbers compare by value: ``rc9 < rc10``, ``beta2 < beta10``,
   ``alpha10 < beta1``, and ``rc9 == rc.9``. Strict semver compares ``rc10`` and
   ``rc9`` as text, which would make ``rc9 -> rc10`` a rollback.
5. Everything else is unordered (``latest``, ``main``, empty, spaces, non-ASCII,
   values longer than ``MAX_LENGTH`` characters).
6. ``compare`` gives None when either side is unordered or the kinds differ, but
   values that are equal after rule 1 always compare as 0.

Everything is pure and never raises; regexes are anchored and unambiguous, numbers
are compared as digit strings (no ``int`` on user input), and input length is capped.
"""

from __future__ import annotations

import datetime
import functools
import re
from typing import Literal, TypeVar

__all__ = ["MAX_LENGTH", "compare", "is_ordered"]

# Longer values are unordered: bounds regex and parse work on arbitrary input while
# still allowing build numbers of hundreds of digits.
MAX_LENGTH = 1024

# (digit count, digits without leading zeros): orders like the integer, without
# int() on user input (no str-to-int digit limit, no quadratic conversion).
_Num = tuple[int, str]
# Pre-release identifier: (0, digit count, digits) for numeric ones, (1, 0, text)
# for alphanumeric ones, so numeric identifiers sort first (semver 11.4.3).
_Ident = tuple[int, int, str]
# (release numbers without trailing zeros, 0 if pre-release else 1, identifiers)
_NumericKey = tuple[tuple[_Num, ...], int, tuple[_Ident, ...]]
# (year, month, day, hour, minute, second, build number)
_DateKey = tuple[int, int, int, int, int, int, _Num]
_Key = tuple[Literal["date"], _DateKey] | tuple[Literal["numeric"], _NumericKey]
_SameKey = TypeVar("_SameKey", _DateKey, _NumericKey)

# ASCII classes on purpose: \d would also match non-ASCII digits.
_SHA = re.compile(r"[0-9a-fA-F]{7,40}")
_DATE_SUFFIX = (
    r"(?:T(?P<th>[0-9]{2}):(?P<tm>[0-9]{2})(?::(?P<ts>[0-9]{2}))?"
    r"|[_-](?P<ch>[0-9]{2})(?P<cm>[0-9]{2})(?P<cs>[0-9]{2})?"
    r"|\.(?P<build>[0-9]+))?"
)
_DASHED_DATE = re.compile(r"(?P<y>[0-9]{4})-(?P<m>[0-9]{2})-(?P<d>[0-9]{2})" + _DATE_SUFFIX)
_COMPACT_DATE = re.compile(r"(?P<y>(?:19|20)[0-9]{2})(?P<m>[0-9]{2})(?P<d>[0-9]{2})" + _DATE_SUFFIX)
# Runs of digits and of anything else: ``rc10-hotfix`` -> ``rc``, ``10``, ``-hotfix``.
_RUNS = re.compile(r"[0-9]+|[^0-9]+")
# Identifiers are separated by dots, which they cannot contain: no backtracking blowup.
_IDENTS = r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"
_NUMERIC = re.compile(
    r"(?P<release>[0-9]+(?:\.[0-9]+)*)"
    r"(?:-(?P<pre>" + _IDENTS + r")|(?P<attached>[A-Za-z][0-9A-Za-z-]*(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+" + _IDENTS + r")?"
)


def compare(a: str, b: str) -> int | None:
    """-1, 0 or 1 when a and b share an order; None when they have none (SHAs, `latest`, different schemes)."""
    if a == b:
        return 0
    key_a, key_b = _key(a), _key(b)
    if key_a is None or key_b is None:
        # Unordered values can still be the same value written slightly differently.
        if len(a) <= MAX_LENGTH and len(b) <= MAX_LENGTH and _normalize(a) == _normalize(b):
            return 0
        return None
    if key_a[0] == "date" and key_b[0] == "date":
        return _sign(key_a[1], key_b[1])
    if key_a[0] == "numeric" and key_b[0] == "numeric":
        return _sign(key_a[1], key_b[1])
    return None  # a date and a numeric version have no common order


def is_ordered(version: str) -> bool:
    """Whether the version has an order at all (so a rollback can be judged by comparison)."""
    return _key(version) is not None


def _sign(x: _SameKey, y: _SameKey) -> int:
    return (x > y) - (x < y)


def _key(version: str) -> _Key | None:
    # Checked before the cache so huge values are neither parsed nor kept alive there.
    if len(version) > MAX_LENGTH:
        return None
    return _parse(version)


def _normalize(version: str) -> str:
    text = version.strip()
    if len(text) >= 2 and text[0] in "vV" and "0" <= text[1] <= "9":
        return text[1:]
    return text


@functools.lru_cache(maxsize=4096)
def _parse(version: str) -> _Key | None:
    text = _normalize(version)
    # SHAs first, so "1a2b3c4" is not read as 1 with pre-release "a2b3c4"; all-digit
    # strings are build numbers.
    if _SHA.fullmatch(text) and not text.isdigit():
        return None
    dashed = _DASHED_DATE.fullmatch(text)
    if dashed is not None:
        # An invalid dashed date (2024-13-01) is unordered, not 2024 with a pre-release.
        return _date_key(dashed)
    compact = _COMPACT_DATE.fullmatch(text)
    if compact is not None:
        date = _date_key(compact)
        if date is not None:
            return date
        # An invalid compact date such as 20241399 is just a build number.
    return _numeric_key(text)


def _date_key(match: re.Match[str]) -> tuple[Literal["date"], _DateKey] | None:
    year, month, day = int(match["y"]), int(match["m"]), int(match["d"])
    hour = int(match["th"] or match["ch"] or 0)
    minute = int(match["tm"] or match["cm"] or 0)
    second = int(match["ts"] or match["cs"] or 0)
    try:
        datetime.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    return "date", (year, month, day, hour, minute, second, _num(match["build"] or "0"))


def _numeric_key(text: str) -> tuple[Literal["numeric"], _NumericKey] | None:
    match = _NUMERIC.fullmatch(text)
    if match is None:
        return None
    release = [_num(part) for part in match["release"].split(".")]
    while release and release[-1] == (0, ""):
        release.pop()  # 1.2 == 1.2.0
    pre = match["pre"] or match["attached"]
    if pre is None:
        return "numeric", (tuple(release), 1, ())
    idents = tuple(_ident(run) for part in pre.split(".") for run in _RUNS.findall(part))
    return "numeric", (tuple(release), 0, idents)


def _num(digits: str) -> _Num:
    significant = digits.lstrip("0")
    return len(significant), significant


def _ident(part: str) -> _Ident:
    if part.isdigit():
        count, digits = _num(part)
        return 0, count, digits
    return 1, 0, part

"""Text from outside (container labels, CI/CD reports) as a Prometheus label value: what is wrong
with it, and the value cleaned.

One definition for every source: lone surrogates (possible in JSON) cannot be encoded as
UTF-8, control characters and line breaks do not belong in a label value, and a value is at
most ``labels.max_value_length`` characters. Each source decides what a flaw means: labels are
repaired and reported (nothing a compose file says may stop the watcher), a report is refused
(its sender can be told).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

# Cleaned values up to this long are interned: a label value repeated across deployments (an
# environment, a version, a check's name) is then one string, not one per deployment (issue #21).
# sys.intern's strings are freed with their last reference.
_INTERNED_LENGTH = 64


@dataclass(frozen=True, slots=True)
class Cleaned:
    value: str  # stripped; lone surrogates replaced by '?', unprintables by spaces; at most the limit
    unencodable: bool  # it held lone surrogates
    unprintable: bool  # it held control characters or line breaks
    length: int  # of the stripped value before it was cut to the limit


def clean(raw: str, *, limit: int) -> Cleaned:
    """``raw`` made safe and readable as a label value of at most ``limit`` characters."""
    value = raw.encode("utf-8", "replace").decode("utf-8")
    unencodable = value != raw
    unprintable = not value.isprintable()
    if unprintable:
        value = "".join(ch if ch.isprintable() else " " for ch in value)
    value = value.strip()
    length = len(value)
    if length > limit:
        value = value[:limit].rstrip()
    if len(value) <= _INTERNED_LENGTH:
        value = sys.intern(value)  # environments, versions, check names: one string for every deployment
    return Cleaned(value, unencodable=unencodable, unprintable=unprintable, length=length)

"""The command lines' parser: no abbreviated flags, and a "did you mean" for a flag not known.

argparse accepts any unambiguous prefix of a flag by default (``--rollout.s=5`` sets
``--rollout.stable-seconds``), so a typo can set the wrong setting, or a flag added later can
change what an old command line means. Every parser of ``deployment-watcher`` and its commands is
a ``Parser``: a flag is given whole or refused (exit 2), with the close ones named.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Iterable, Iterator
from typing import Any, NoReturn

UNRECOGNIZED = "unrecognized arguments: "
REQUIRED = "the following arguments are required: "


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` without abbreviations (its subparsers too: they are of this class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        given = kwargs.get("args", args[0] if args else None)
        self._given = list(sys.argv[1:] if given is None else given)
        return super().parse_known_args(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if message.startswith(UNRECOGNIZED):
            message = unrecognized(message.removeprefix(UNRECOGNIZED).split(" "), self)
        elif message.startswith(REQUIRED):  # checked before unknown flags: --deploy=x is why --deployment is missing
            known = set(option_strings(self))
            unknown = [
                g for g in getattr(self, "_given", []) if g.startswith("--") and g.partition("=")[0] not in known
            ]
            if unknown:
                message += "; " + unrecognized(unknown, self)
        super().error(message)


def unrecognized(extras: Iterable[str], parser: argparse.ArgumentParser) -> str:
    """argparse's "unrecognized arguments" with, after each unknown flag, the flags it may have meant."""
    known = sorted(set(option_strings(parser)))
    return UNRECOGNIZED + " ".join(_hinted(extra, known) for extra in extras)


def did_you_mean(flag: str, known: Iterable[str]) -> list[str]:
    """The flags ``flag`` may be a typo of: those it abbreviates (at most 3), else the closest two."""
    name = flag.partition("=")[0]
    known = list(known)
    longer = [option for option in known if option.startswith(name) and option != name]
    return longer[:3] if longer else difflib.get_close_matches(name, known, n=2, cutoff=0.75)


def option_strings(parser: argparse.ArgumentParser) -> Iterator[str]:
    """Every flag of ``parser`` and of its subcommands (an error about one reaches the parent)."""
    for action in parser._actions:
        yield from action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from option_strings(sub)


def _hinted(extra: str, known: list[str]) -> str:
    if not extra.startswith("-") or not (close := did_you_mean(extra, known)):
        return extra
    return f"{extra} (did you mean {' or '.join(close)}?)"

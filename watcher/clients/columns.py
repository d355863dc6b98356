"""Tables for a terminal, the clients' (``status``, ``rollout history``): columns padded to their widest
cell and, on a terminal, cut to its width, the columns that may give way (a long name, a reason) cut
first with "…", so that a row never wraps. Written to a pipe or a file, nothing is cut."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from typing import TextIO

GAP = "   "
ELLIPSIS = "…"
NARROWEST = 8  # a column cut to fit keeps at least this many characters (or its heading's)


def terminal_width(stream: TextIO | None = None) -> int | None:
    """The width of the terminal ``stream`` (default: stdout) writes to; None when it is not a terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        if not stream.isatty():
            return None
    except (AttributeError, ValueError):  # closed, or not a real file
        return None
    return shutil.get_terminal_size().columns


def cut(text: str, length: int) -> str:
    """``text``, cut to ``length`` characters with "…" at its end when longer."""
    if len(text) <= length:
        return text
    return text[: max(0, length - 1)] + ELLIPSIS if length > 0 else ""


def printable(text: str) -> str:
    """Control characters (a label value may hold them) shown escaped, never sent to the terminal."""
    return text if text.isprintable() else text.encode("unicode_escape").decode()


def table(
    headings: Sequence[str], rows: Sequence[Sequence[str]], *, width: int | None, shrink: Sequence[int] = ()
) -> str:
    """The rows under their headings; with a ``width``, the columns ``shrink`` names (in that order) cut
    until each line fits, and any line still too wide cut at it."""
    cells = [list(headings), *([printable(cell) for cell in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headings))]
    if width is not None:
        for column in shrink:
            excess = sum(widths) + len(GAP) * (len(widths) - 1) - width
            if excess <= 0:
                break
            widths[column] = max(widths[column] - excess, min(widths[column], max(NARROWEST, len(headings[column]))))
    lines = [GAP.join(cut(cell, w).ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines if width is None else [cut(line, width) for line in lines])

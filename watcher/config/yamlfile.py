"""Reading a YAML file written by hand: whatever is wrong with it is one problem line, never a traceback.

Only the standard library and YAML here, like ``webconfig``: the container's HEALTHCHECK
reads the web config file every few seconds.
"""

from __future__ import annotations

import yaml


def read(path: str, problems: list[str]) -> object:
    """The document in the file at ``path`` (None when empty); None and a problem when unreadable."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        return yaml.safe_load(data.decode("utf-8"))
    except OSError as exc:
        problems.append(exc.strerror or str(exc))
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problems.append(f"not UTF-8 text (line {line}: byte 0x{data[exc.start]:02x})")
    except yaml.YAMLError as exc:
        problems.append(f"not valid YAML: {exc}".replace("\n", " "))
    except RecursionError:  # PyYAML composes nested collections by recursion
        problems.append("not valid YAML: nested too deeply")
    return None

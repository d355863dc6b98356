"""What is wrong with a configuration: every problem at once, one per line.

An operator fixes a file in one round, not one error per restart. Every check of a
configuration (the settings, the web config file, the API token) collects its problems and
raises them together; the command line prints them and exits 2.
"""

from __future__ import annotations


class ConfigError(Exception):
    """All problems found in one configuration, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems

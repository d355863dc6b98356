"""The executable docs' reading of a block (tests/docrun.py): its commands, and outputs matched with `...`."""

from __future__ import annotations

import pytest

from tests import docrun


@pytest.mark.parametrize(
    ("expected", "output", "matching"),
    [
        ("a 1.5 s\n", "a 1.5 s\n", True),
        ("a ... s\n", "a 12.25 s\n", True),
        ("a ... s\n", "a 12.25 ms\n", False),
        ("one\n...\nfour\n", "one\ntwo\nthree\nfour\n", True),
        ("one\n...\nfour\n", "one\nfour\n", True),
        ("one\n", "one\ntwo\n", False),  # every line is shown, or a `...` line stands for it
        ("x...y\n", "x\ny\n", False),  # `...` in a line stays in that line
        ("a.b (c)\n", "aXb (c)\n", False),  # the rest is literal
        ("trailing   \n\n", "trailing\n", True),
    ],
)
def test_an_output_matches_with_ellipses(expected: str, output: str, matching: bool) -> None:
    assert docrun.matches(expected, output) is matching


def test_commands_run_on_past_backslashes_and_open_quotes() -> None:
    block = (
        "export A=1 B=2\n"
        "# a comment\n"
        "notify --status success \\\n  --url x\n"
        'curl -d \'{"a": 1,\n  "b": 2}\'\n'
        "run  # and a comment after it\n"
    )
    assert docrun.commands(block) == [
        "export A=1 B=2",
        "notify --status success \\\n  --url x",
        'curl -d \'{"a": 1,\n  "b": 2}\'',
        "run  # and a comment after it",
    ]


@pytest.mark.parametrize(
    ("command", "starts"),
    [
        (".venv/bin/deployment-watcher", True),
        ("deployment-watcher --api.token-file=/etc/deployment-watcher/api-token", True),
        (".venv/bin/deployment-watcher notify --status success", False),
        ("deployment-watcher --check-config | tail -n 1", False),
    ],
)
def test_a_block_ending_with_the_watcher_starts_it(command: str, starts: bool) -> None:
    assert bool(docrun.STARTS_WATCHER.match(command)) is starts

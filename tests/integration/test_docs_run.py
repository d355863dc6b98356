"""The docs run as written: each file's sh blocks in one shell session against a real watcher and the real
Docker Engine, each text block after one compared with what it printed (tests/docrun.py, docs/testing.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import docrun

pytestmark = pytest.mark.docker

RUNNABLE = [path for path in docrun.DOCS if None in docrun.blocks(path)]


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda path: path.name)
def test_the_blocks_run_and_print_what_the_docs_show(path: Path, busybox_image: str, tmp_path: Path) -> None:
    with docrun.exclusive(busybox_image):
        docrun.run_document(path, tmp_path)


def test_a_drifted_output_fails_with_a_diff(busybox_image: str, tmp_path: Path) -> None:
    doc = tmp_path / "drifted.md"
    doc.write_text(
        "```sh\nprintf 'one\\ntwo: 1.5 s\\n'\n```\n\n```text\none\ntwo: ... s\n```\n\n"  # a pattern that holds
        "```sh\necho stable\n```\n\n```text\nstale\n```\n"
    )
    with docrun.exclusive(busybox_image), pytest.raises(AssertionError) as failure:
        docrun.run_document(doc, tmp_path / "session", deadline=1)
    assert "drifted.md:14: the output differs from the docs" in str(failure.value)
    assert "-stale\n+stable\n" in str(failure.value)


def test_an_output_after_a_block_not_run_must_be_marked_too(busybox_image: str, tmp_path: Path) -> None:
    doc = tmp_path / "unmarked.md"
    doc.write_text('<!-- skip: next "not here" -->\n```sh\necho one\n```\n\n```text\none\n```\n')
    with docrun.exclusive(busybox_image), pytest.raises(AssertionError, match=r"unmarked\.md:6: the output of a block"):
        docrun.run_document(doc, tmp_path / "session", deadline=1)

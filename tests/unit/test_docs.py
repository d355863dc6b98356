"""The docs stay true: generated references are current, every setting, label and metric is documented,
the README keeps its two commands first, and links lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import docrun, reference
from watcher import config
from watcher.domain import labels

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
CONFIGURATION = reference.REFERENCE / "configuration.md"
METRICS = reference.REFERENCE / "metrics.md"
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *DOCS.rglob("*.md")])
FAMILIES = reference.deployment_families() + reference.own_families()
# An opening or closing fence as .ci/run reads them: up to 3 spaces, ``` or ~~~, an info string.
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*(\S*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of each fenced code block, as .ci/run finds them."""
    blocks: list[tuple[str, str]] = []
    body: list[str] = []
    fence = info = ""
    for line in text.splitlines():
        match = FENCE.match(line)
        if not fence and match:
            fence, info, body = match.group(1), match.group(2), []
        elif fence and match and match.group(1).startswith(fence[0]) and len(match.group(1)) >= len(fence):
            if not match.group(2):
                blocks.append((info, "\n".join(body)))
                fence = ""
                continue
            body.append(line)
        elif fence:
            body.append(line)
    return blocks


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    inside = False
    found = set()
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside and line.startswith("#"):
            found.add(anchor(line.lstrip("#")))
    return found


def test_references_are_current() -> None:
    """docs/reference/ is what the generator writes today."""
    stale = [str(path.relative_to(ROOT)) for path in reference.stale()]
    assert not stale, f"out of date: {', '.join(stale)}; run `{reference.COMMAND}` and commit the result"


@pytest.mark.parametrize("option", list(config.options()), ids=lambda o: o.path)
def test_every_setting_documented(option: config.Option) -> None:
    """Each setting has a row in the configuration reference with its flag and environment variable."""
    assert f"| `{option.path}` | `{option.flag}` | `{option.env}` |" in CONFIGURATION.read_text()


def test_configuration_names_the_other_variables() -> None:
    """The config file's variable and the API token's are in the configuration reference."""
    text = CONFIGURATION.read_text()
    assert f"`{config.CONFIG_FILE_ENV}`" in text and f"`{config.API_TOKEN_ENV}`" in text


@pytest.mark.parametrize("label", labels.ALL)
def test_every_label_documented(label: str) -> None:
    """Each label of the convention has a row in docs/labels.md."""
    assert f"| `{label}` |" in (DOCS / "labels.md").read_text()


@pytest.mark.parametrize("family", [reference.exposed_name(f) for f in FAMILIES])
def test_every_metric_in_the_reference(family: str) -> None:
    """Each family served on /metrics, per deployment and the watcher's own, has a row in the metrics reference."""
    assert f"| `{family}` |" in METRICS.read_text()


@pytest.mark.parametrize("family", [reference.exposed_name(f) for f in reference.deployment_families()])
def test_every_deployment_metric_explained(family: str) -> None:
    """Each per-deployment family is explained in docs/metrics.md's table."""
    assert f"| `{family}` |" in (DOCS / "metrics.md").read_text()


def test_readme_is_short() -> None:
    """The README is a front page (at most 10 KB); the rest lives in docs/."""
    assert len(README.encode()) <= 10 * 1024


def test_readme_runs_the_watcher_then_the_tests() -> None:
    """The first fenced block runs the watcher; the second, which .ci/run executes, is the test command."""
    blocks = fenced_blocks(README)
    assert blocks[0][0] == "sh" and blocks[0][1].endswith(".venv/bin/deployment-watcher")
    assert blocks[1] == ("sh", "bash tests/run-all.sh")


def test_fenced_blocks_read_as_ci_reads_them() -> None:
    """The block finder here agrees with .ci/run's on fences of both kinds and lengths."""
    text = "text\n````md\n```sh\nnot closed here\n````\n~~~sh\necho hi\n~~~\n"
    assert fenced_blocks(text) == [("md", "```sh\nnot closed here"), ("sh", "echo hi")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link leads to an existing file, and to an existing heading when it names one."""
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (fragment and linked.suffix == ".md" and fragment not in anchors(linked)):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_every_page_is_in_the_index() -> None:
    """Each page under docs/ is linked from docs/index.md."""
    index = (DOCS / "index.md").read_text()
    missing = [
        str(page.relative_to(DOCS))
        for page in DOCS.rglob("*.md")
        if page.name != "index.md" and f"]({page.relative_to(DOCS)})" not in index
    ]
    assert not missing, f"not linked from docs/index.md: {missing}"


def test_the_blocks_not_run_are_listed_with_their_reasons() -> None:
    """docs/testing.md lists every skip mark of the executable docs (tests/docrun.py): file and reason."""
    section = (DOCS / "testing.md").read_text().split("## Executable docs", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| (\S+\.md) \| (.+) \|$", section, re.MULTILINE))
    marked = {
        (str(path.relative_to(ROOT)), reason)
        for path in docrun.DOCS
        for reason in docrun.blocks(path)
        if reason is not None
    }
    assert listed == marked, f"only listed: {sorted(listed - marked)}; only marked: {sorted(marked - listed)}"


@pytest.mark.parametrize("page", docrun.DOCS, ids=lambda page: page.name)
def test_shell_examples_are_sh_blocks(page: Path) -> None:
    """The executable docs run the `sh` blocks: a shell example as `bash` or `console` would be neither run nor
    marked not to run."""
    languages = {info for info, _ in fenced_blocks(page.read_text())}
    assert languages <= {"sh", "text", "json", "yaml", "python", ""}, languages

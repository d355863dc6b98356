"""Executable docs: every ``sh`` block of README.md and docs/*.md runs, as a reader would run it, in one shell
session per file against a real watcher and the real Docker Engine, and the ``text`` block after it is what it
must print (docs/testing.md, "Executable docs").

Sybil reads the markdown: ``CodeBlockParser`` finds the ``sh`` and ``text`` blocks, its ``SkipParser`` the blocks
marked not runnable here (``<!-- skip: next "reason" -->``), and ``<!-- docs-run: last "reason" -->`` runs only
the last command of the next block (the watcher, after an install the test command has done).

The session is ``bash`` in a network namespace and a mount namespace of its own: ``localhost:9102`` is its own
watcher whatever else runs, and ``/etc`` and ``/var/lib`` are overlays whose writes (the API token, the state
file) go to a temporary directory, so the docs' own paths work as written and vanish with the session. The
docker CLI and the watcher reach the daemon through its unix socket, shared.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import SkipTest

from sybil import Document, Example, Region
from sybil.parsers.markdown import CodeBlockParser, SkipParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
PORT = 9102
# A text block is polled for this long: a reader waits for a verdict (10 s of stable time) and a CPU sample.
OUTPUT_DEADLINE = 30.0
BLOCK_TIMEOUT = 60.0
# A line of the watcher's log without its time ("2026-12-07 21:40:00,123 "), as the docs show it.
LOG_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", re.MULTILINE)
# The last command of a block starts the watcher (no command after the flags): it runs in the background.
STARTS_WATCHER = re.compile(r"^(\.venv/bin/)?deployment-watcher(\s+--\S+)*\s*$")
HIDDEN = ("/etc/deployment-watcher", "/var/lib/deployment-watcher")
CONTAINER_NAME = re.compile(r"--name[ =](\S+)")
# Doc sessions run one at a time on a machine: the docs name their container `web` and their image `busybox`.
LOCK_FILE = Path(tempfile.gettempdir()) / "deployment-watcher-docs.lock"


def expected_pattern(expected: str) -> re.Pattern[str]:
    """A text block as a regular expression: ``...`` in a line stands for any characters, a line of only
    ``...`` for any lines (none too), as doctest's ELLIPSIS."""
    parts = []
    for line in normalised(expected).rstrip("\n").split("\n"):
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(r"[^\n]*?".join(re.escape(piece) for piece in line.split("...")) + r"\n")
    return re.compile("".join(parts))


def normalised(output: str) -> str:
    return "\n".join(line.rstrip() for line in output.rstrip().split("\n")) + "\n"


def matches(expected: str, output: str) -> bool:
    return expected_pattern(expected).fullmatch(normalised(output)) is not None


def commands(block: str) -> list[str]:
    """A block's commands: lines joined where a backslash or an open quote continues them; comments dropped."""
    found: list[str] = []
    pending = ""
    for line in block.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\"):
            continue
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quote still open: the command goes on
            continue
        if words:
            found.append(pending)
        pending = ""
    if pending:
        found.append(pending)
    return found


@dataclass
class Ran:
    """An sh block that ran: where it starts in its file, its last command's exit code and output, and how to
    run that command again."""

    start: int
    code: int
    output: str
    again: Callable[[], tuple[int, str]]


class Session:
    """bash in namespaces of its own (see the module's docstring), fed one script at a time."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.dir = workdir
        self.count = 0
        self.watcher_log: Path | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
        env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr in the order written, as a terminal shows them
        self.log = workdir / "session.log"
        self.process = subprocess.Popen(
            ["unshare", "--net", "--mount", "--fork", "bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,  # its process group is ended at close(), whatever the docs left running
        )
        setup = ["ip link set lo up"]
        for directory in ("/etc", "/var/lib"):
            upper, work = workdir / f"upper{directory}", workdir / f"work{directory}"
            upper.mkdir(parents=True)
            work.mkdir(parents=True)
            setup.append(
                f"mount -t overlay overlay -o lowerdir={directory},upperdir={upper},workdir={work} {directory}"
            )
        # A watcher's own token and state on this machine stay out of sight: the docs start afresh.
        setup += [f"if [ -d {hidden} ]; then mount -t tmpfs tmpfs {hidden}; fi" for hidden in HIDDEN]
        try:
            self.run("\n".join(f"{line} || exit 1" for line in setup))
        except (AssertionError, OSError) as error:  # OSError: the session ended before its first command
            self.close()
            raise AssertionError(
                f"could not make the session's namespaces (root, unshare, overlayfs needed): {error}\n"
                f"{self.log.read_text()}"
            ) from error

    def run(self, script: str, timeout: float = BLOCK_TIMEOUT) -> tuple[int, str]:
        """Source ``script`` in the session; its exit code and what it printed (stdout and stderr, interleaved)."""
        self.count += 1
        path, out, done = (self.dir / f"{self.count}.{suffix}" for suffix in ("sh", "out", "rc"))
        path.write_text(script + "\n")
        assert self.process.stdin is not None
        self.process.stdin.write(
            f". {path} >{out} 2>&1 </dev/null; echo $? >{done}.tmp; mv {done}.tmp {done}\n".encode()
        )
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        while not done.exists():
            if self.process.poll() is not None:
                printed = out.read_text() if out.exists() else ""
                raise AssertionError(
                    f"the shell session ended ({self.process.returncode}) running:\n{script}\n{printed}\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout:g} s:\n{script}\n{out.read_text()}")
            time.sleep(0.05)
        return int(done.read_text()), out.read_text()

    def start_watcher(self, command: str) -> str:
        """Start the watcher as ``command`` in the background, replacing the one running; its log once it serves."""
        self.stop_watcher()
        self.watcher_log = self.dir / f"watcher-{self.count}.log"
        code, output = self.run(f"{command} >{self.watcher_log} 2>&1 &\necho $! >{self.dir}/watcher.pid")
        assert code == 0, output
        deadline = time.monotonic() + 20
        while self.run(f"curl -fsS -o /dev/null localhost:{PORT}/health")[0] != 0:
            assert self.run(f"kill -0 $(cat {self.dir}/watcher.pid)")[0] == 0, f"the watcher exited:\n{self.tail()}"
            assert time.monotonic() < deadline, f"the watcher did not serve within 20 s:\n{self.tail()}"
            time.sleep(0.2)
        return self.watcher_output()

    def watcher_output(self) -> str:
        assert self.watcher_log is not None
        return LOG_TIME.sub("", self.watcher_log.read_text())

    def stop_watcher(self) -> None:
        if self.watcher_log is None:
            return
        pid = f"$(cat {self.dir}/watcher.pid)"
        code, output = self.run(f"kill -TERM {pid} && wait {pid}", timeout=30)
        assert code == 0, f"the watcher did not stop cleanly (exit {code}): {output}\n{self.tail()}"
        self.watcher_log = None

    def tail(self) -> str:
        log = self.watcher_log.read_text() if self.watcher_log else ""
        return f"--- watcher log (last lines)\n{''.join(log.splitlines(True)[-20:])}"

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                self.stop_watcher()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 9)
            self.process.wait(timeout=30)


class DocRun:
    """The evaluators of one file's blocks, sharing its session. A block that starts the watcher replaces the one
    running; any other block, with none running, starts one as the README's first block does."""

    def __init__(self, session: Session, deadline: float) -> None:
        self.session = session
        self.deadline = deadline
        self.last: Ran | None = None
        self.last_only: str | None = None
        self.sh_starts: list[int] = []
        self.shown: set[int | None] = set()  # the sh blocks a text block shows the output of
        self.containers: set[str] = set()  # the names the blocks give their containers: removed at the end

    def directive(self, example: Example) -> None:
        action, _, reason = str(example.parsed).partition(" ")
        if action != "last" or not reason.strip():
            raise ValueError(f'expected `docs-run: last "reason"`, got {example.parsed!r}')
        self.last_only = reason

    def sh(self, example: Example) -> None:
        block = str(example.parsed)
        for name in set(CONTAINER_NAME.findall(block)) - self.containers:
            exists = subprocess.run(["docker", "container", "inspect", name], capture_output=True).returncode == 0
            assert not exists, f"{where(example)}: a container named {name} exists already: the docs make their own"
            self.containers.add(name)
        found = commands(block)
        if self.last_only is not None:
            self.last_only = None
            found = [found[-1].split(" && ")[-1]]
        *before, last = found
        if not STARTS_WATCHER.match(last) and self.session.watcher_log is None:
            self.session.start_watcher("deployment-watcher")
        for command in before:
            code, output = self.session.run(command)
            assert code == 0, f"{where(example)}: exit {code}:\n{command}\n{output}"
        if STARTS_WATCHER.match(last):
            self.session.start_watcher(last)
            self.last = Ran(example.start, 0, self.session.watcher_output(), lambda: (0, self.session.watcher_output()))
            return

        def again() -> tuple[int, str]:
            return self.session.run(last)

        self.last = Ran(example.start, *again(), again)
        # A query shown with its output may fail until there is something to show (grep finding nothing yet):
        # text() waits for it. Any other command must succeed at once.
        if example.start not in self.shown:
            code, output = self.last.code, self.last.output
            assert code == 0, f"{where(example)}: exit {code}:\n{last}\n{output}\n{self.session.tail()}"

    def text(self, example: Example) -> None:
        shown = preceding(self.sh_starts, example.start)
        if shown is None:
            return  # not the output of a command of this file (a header, a log line quoted)
        if self.last is None or self.last.start != shown:
            raise AssertionError(f"{where(example)}: the output of a block that did not run: mark it too")
        expected = str(example.parsed)
        code, output = self.last.code, self.last.output
        deadline = time.monotonic() + self.deadline
        while not (code == 0 and matches(expected, output)) and time.monotonic() < deadline:
            time.sleep(0.5)
            code, output = self.last.again()
        assert code == 0, f"{where(example)}: the command shown exits {code}:\n{output}\n{self.session.tail()}"
        if not matches(expected, output):
            diff = "".join(
                difflib.unified_diff(
                    expected.splitlines(True), normalised(output).splitlines(True), "documented", "printed"
                )
            )
            raise AssertionError(
                f"{where(example)}: the output differs from the docs after {self.deadline:g} s "
                f"(`...` matches anything):\n{diff}\n{self.session.tail()}"
            )


def preceding(starts: list[int], position: int) -> int | None:
    """The last of the sh blocks starting at ``starts`` before ``position``: the one a text block there shows."""
    before = [start for start in starts if start < position]
    return before[-1] if before else None


def where(example: Example) -> str:
    path = Path(example.path)
    return f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{example.line}"


class DirectiveParser:
    """``<!-- docs-run: last "reason" -->``: the next block runs only its last command."""

    def __init__(self, evaluate: Callable[[Example], None]) -> None:
        self.lexer = DirectiveInHTMLCommentLexer(directive="docs-run")
        self.evaluate = evaluate

    def __call__(self, document: Document) -> Iterator[Region]:
        for lexed in self.lexer(document):
            yield Region(lexed.start, lexed.end, str(lexed.lexemes["arguments"]), self.evaluate)


Evaluator = Callable[[Example], None]


def parse(path: Path, sh: Evaluator, text: Evaluator, directive: Evaluator) -> Document:
    """The file's examples: sh and text blocks, skip and docs-run marks."""
    return Document.parse(
        str(path), CodeBlockParser("sh", sh), CodeBlockParser("text", text), SkipParser(), DirectiveParser(directive)
    )


def blocks(path: Path) -> list[str | None]:
    """Each sh and text block of a file: the reason of its skip mark, or None when it runs."""
    found: list[str | None] = []

    def record(example: Example) -> None:
        found.append(None)

    for example in parse(path, record, record, lambda example: None):
        try:
            example.evaluate()
        except SkipTest as skip:
            found.append(str(skip))
    return found


@contextlib.contextmanager
def exclusive(image: str) -> Iterator[None]:
    """One doc session at a time on this machine (the docs name their container `web`), with `busybox` naming
    the tests' image when there is no busybox image (that tag removed afterwards)."""
    with LOCK_FILE.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tagged = subprocess.run(["docker", "image", "inspect", "busybox"], capture_output=True).returncode != 0
        if tagged:
            subprocess.run(["docker", "tag", image, "busybox"], check=True, capture_output=True)
        try:
            yield
        finally:
            if tagged:
                subprocess.run(["docker", "rmi", "busybox"], check=True, capture_output=True)


def run_document(path: Path, workdir: Path, deadline: float = OUTPUT_DEADLINE) -> None:
    """Run the file's blocks in order in a fresh session, but those marked not to run."""
    session = Session(workdir)
    run = DocRun(session, deadline)
    try:
        examples = list(parse(path, run.sh, run.text, run.directive).examples())
        run.sh_starts = [example.start for example in examples if example.region.evaluator == run.sh]
        run.shown = {preceding(run.sh_starts, e.start) for e in examples if e.region.evaluator == run.text} - {None}
        for example in examples:
            with contextlib.suppress(SkipTest):  # a block marked not to run here
                example.evaluate()
    finally:
        try:
            session.close()
        finally:
            for name in run.containers:
                subprocess.run(["docker", "rm", "-f", name], capture_output=True)

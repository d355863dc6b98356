"""One watcher per state directory, for real: a second `python -m watcher` on the directory of a
running one refuses to start, naming the other's pid, with exit code 3; once the first has
stopped, the directory is free again. No Docker Engine needed: the watchers look for one that is
not there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import WatcherProcess, free_port, start_watcher
from watcher.persistence import statefile


def flags(tmp_path: Path, data: Path) -> tuple[str, ...]:
    return f"--storage.directory={data}", f"--docker.host=unix://{tmp_path}/no-docker.sock", "--stats.enabled=false"


def second_watcher(tmp_path: Path, data: Path) -> subprocess.CompletedProcess[str]:
    """A second watcher on ``data``, run to its end (killed if it does not end within 20 s)."""
    command = [sys.executable, "-m", "watcher", f"--web.listen-address=127.0.0.1:{free_port()}", *flags(tmp_path, data)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            raise AssertionError(f"the second watcher on {data} did not refuse to start:\n{output}") from None
    return subprocess.CompletedProcess(command, process.returncode, output)


def test_a_second_watcher_on_one_state_directory_refuses_to_start(tmp_path: Path) -> None:
    """Both used to load and both to write, one silently overwriting the other's state."""
    data = tmp_path / "data"
    first: WatcherProcess = start_watcher(tmp_path, *flags(tmp_path, data))
    try:
        second = second_watcher(tmp_path, data)
        assert second.returncode == 3, second.stdout
        assert f"the state directory {data} is in use by another watcher (pid {first.process.pid}" in second.stdout, (
            second.stdout
        )
        assert first.process.poll() is None and first.get("/health")[0] == 200
        assert (data / statefile.LOCK_NAME).read_text().split()[0] == str(first.process.pid)
    finally:
        first.stop_cleanly()
    # Stopped, the first holds it no more: the next watcher takes the directory over.
    again = start_watcher(tmp_path, *flags(tmp_path, data))
    try:
        assert (data / statefile.LOCK_NAME).read_text().split()[0] == str(again.process.pid)
    finally:
        again.stop_cleanly()

"""A real watcher's last words: on SIGTERM, whether its state was saved (where, how many
deployments) and its exit code; on a busy port, one line naming the address and the flag to
change it, no traceback. No Docker Engine needed: the watchers look for one that is not there."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

from tests.conftest import post_report, start_watcher
from watcher.persistence import statefile

TOKEN = "last-words-" + uuid.uuid4().hex


def no_docker(tmp_path: Path) -> tuple[str, ...]:
    return f"--docker.host=unix://{tmp_path}/no-docker.sock", "--stats.enabled=false"


def test_sigterm_ends_with_where_the_state_was_saved(tmp_path: Path) -> None:
    data = tmp_path / "data"
    watcher = start_watcher(
        tmp_path, *no_docker(tmp_path), f"--storage.directory={data}", env={"WATCHER_API_TOKEN": TOKEN}
    )
    try:
        body: dict[str, object] = {"deployment": "web", "version": "1.2.3", "status": "in_progress"}
        assert post_report(watcher, body, token=TOKEN) in (200, 201, 202)
        watcher.process.send_signal(signal.SIGTERM)
        code = watcher.process.wait(timeout=30)
    finally:
        watcher.stop()
    assert code == 0, watcher.tail()
    last = watcher.log.read_text().splitlines()[-1]
    assert last.endswith(f" INFO watcher: stopped: state saved to {data / statefile.FILE_NAME} (1 deployment); exit 0")


def test_sigterm_without_a_state_says_none_is_kept(tmp_path: Path) -> None:
    watcher = start_watcher(tmp_path, *no_docker(tmp_path), "--storage.directory=none")
    watcher.stop_cleanly()
    last = watcher.log.read_text().splitlines()[-1]
    assert last.endswith(" INFO watcher: stopped: no state kept (storage.directory: none); exit 0"), last


def test_a_busy_port_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    first = start_watcher(tmp_path, *no_docker(tmp_path))
    try:
        address = f"127.0.0.1:{first.port}"
        second = subprocess.run(
            [sys.executable, "-m", "watcher", f"--web.listen-address={address}", *no_docker(tmp_path),
             f"--storage.directory={tmp_path}/second"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        first.stop_cleanly()
    assert second.returncode == 1, second.stderr
    assert "Traceback" not in second.stderr
    [error] = [line for line in second.stderr.splitlines() if " ERROR " in line and "listen" in line]
    assert error.endswith(
        f"the watcher stopped: cannot listen on {address}: address already in use; choose another address "
        "with --web.listen-address (or WATCHER_WEB_LISTEN_ADDRESS, web.listen_address in the config file)"
    )
    assert second.stderr.splitlines()[-1].endswith("; exit 1")

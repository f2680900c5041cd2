"""Files shared between trials: one lock holder at a time (processes and threads), no half-written file ever."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hypir_core.files import atomic_folder, atomic_write, file_lock, write_json

ROOT = Path(__file__).resolve().parents[1]

# Each of a process's threads enters the lock `rounds` times and, inside, writes "in" and "out" lines
# around a short sleep: with two holders at once the lines of two holders interleave.
HOLDER = textwrap.dedent(
    """
    import os, sys, threading, time
    from hypir_core.files import file_lock
    lock_path, log_path, go, name, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])

    def hold(thread):
        me = f"{name}.{thread}"
        for _ in range(rounds):
            with file_lock(lock_path):  # a fresh call each time, as every SwanLab callback makes its own
                with open(log_path, "a") as log:
                    log.write(f"in {me}\\n")
                time.sleep(0.003)
                with open(log_path, "a") as log:
                    log.write(f"out {me}\\n")

    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    threads = [threading.Thread(target=hold, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    """
)


def _holders_never_overlap(log: Path, expected: int) -> None:
    lines = log.read_text().splitlines()
    assert len(lines) == 2 * expected
    for entered, left in zip(lines[::2], lines[1::2]):
        assert entered.startswith("in ") and left == "out " + entered[3:], (entered, left)


def test_the_lock_has_one_holder_at_a_time_across_processes_and_their_threads(tmp_path):
    """Trials in separate processes share a dashboard database, and SwanLab writes from more than one thread."""
    lock, log, go = tmp_path / "runs.swanlab.lock", tmp_path / "holders.log", tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    holders = [subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(log), str(go), name, "10"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for name in ("a", "b")]
    for holder in holders:
        assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
    go.touch()
    for holder in holders:
        _, err = holder.communicate(timeout=120)
        assert holder.returncode == 0, err
    _holders_never_overlap(log, expected=2 * 2 * 10)


def test_the_holding_thread_may_enter_again_and_another_thread_waits(tmp_path):
    lock_path = tmp_path / "x.lock"
    entered = threading.Event()

    def other():
        with file_lock(lock_path):
            entered.set()

    with file_lock(lock_path):
        with file_lock(lock_path):  # SwanLab's callbacks nest: registering a run writes its first records
            waiter = threading.Thread(target=other)
            waiter.start()
            assert not entered.wait(0.3)
        assert not entered.wait(0.1)  # still held once
    assert entered.wait(10)
    waiter.join()


def test_a_killed_holder_releases_the_lock(tmp_path):
    """Ray ends a stopped trial's process with SIGKILL, perhaps while it holds the lock."""
    lock_path = tmp_path / "x.lock"
    script = (f"import time\nfrom hypir_core.files import file_lock\nlock = file_lock({str(lock_path)!r})\n"
              "lock.acquire()\nprint('held', flush=True)\ntime.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError):
            file_lock(lock_path).acquire(timeout=0.2)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    started = time.monotonic()
    with file_lock(lock_path).acquire(timeout=10):
        assert time.monotonic() - started < 10


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"status": "running", "rounds": [1]})
    with pytest.raises(RuntimeError, match="disk gone"), atomic_write(path) as tmp, open(tmp, "w") as handle:
        handle.write('{"status": "comp')
        raise RuntimeError("disk gone")
    assert json.loads(path.read_text()) == {"status": "running", "rounds": [1]}
    write_json(path, {"status": "completed", "path": tmp_path})  # values JSON lacks are written as text
    assert json.loads(path.read_text()) == {"status": "completed", "path": str(tmp_path)}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    path = tmp_path / "checkpoint-10"
    (tmp_path / "checkpoint-10.partial").mkdir()  # left by a writer that was killed
    with atomic_folder(path) as partial:
        assert os.listdir(partial) == []
        Path(partial, "lora.pth").write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_folder(path) as partial:
        Path(partial, "lora.pth").write_bytes(b"new, half")
        raise RuntimeError("killed")
    assert (path / "lora.pth").read_bytes() == b"old"
    with atomic_folder(path) as partial:
        Path(partial, "lora.pth").write_bytes(b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-10"]
    assert os.listdir(path) == ["lora.pth"] and (path / "lora.pth").read_bytes() == b"new"

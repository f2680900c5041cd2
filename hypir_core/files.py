"""Files that other processes read while we write them: written atomically, shared under a lock.

- ``atomic_write(path)``: a temporary name to write a file under; it replaces ``path`` in one rename
  when the block completes, so a reader (another trial, ``analyze.py``, a resumed run after a crash)
  finds the old file or the new one, never half of one. ``write_json(path, data)`` uses it.
- ``atomic_folder(path)``: the same for a folder (a checkpoint, a demo asset), for one writer at a time.
- ``file_lock(path)``: an exclusive lock held across processes and threads (the ``filelock``
  package), re-entrant in the thread that holds it.
- ``build_once(path, build, announce)``: a shared cache folder (a demo asset, a synthesised validation
  set) built by one process under the lock, atomically; the others wait and use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock

PARTIAL = ".partial"  # what an unfinished file or folder is called until it is renamed into place


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; write the file there, and it becomes ``path`` when the block ends.

    On an error the temporary file is removed and ``path`` keeps its old content.
    """
    path = os.fspath(path)
    # One name per process and thread: trials planting the same shared cache file must not share a temporary.
    tmp = f"{path}.{os.getpid()}-{threading.get_ident()}{PARTIAL}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (values JSON lacks are written as their str)."""
    with atomic_write(path) as tmp, open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, default=str)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[str]:
    """Yield a new empty folder ``<path>.partial`` to fill; it replaces ``path`` when the block ends.

    For one writer of ``path`` at a time (hold a ``file_lock`` where several processes may build it):
    a leftover ``.partial`` of a writer that was killed is removed first.
    """
    path = os.fspath(path)
    partial = path + PARTIAL
    shutil.rmtree(partial, ignore_errors=True)
    try:
        os.makedirs(partial)
        yield partial
        shutil.rmtree(path, ignore_errors=True)  # a folder cannot be renamed onto a non-empty one
        os.replace(partial, path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def file_lock(path: str | os.PathLike, poll_interval: float = 0.05) -> FileLock:
    """An exclusive lock on ``path`` (a lock file, created if missing), usable as ``with file_lock(path):``.

    One process and one thread hold it at a time; the thread holding it may enter it again. Every call
    for one path in a process returns the same lock, so threads wait for each other instead of one
    raising a deadlock error. Released when the process dies, however it dies. A waiter tries again
    every ``poll_interval`` seconds (short where holds are short and frequent); pass the same value
    for a path each time (filelock refuses a second lock on it with other settings).
    """
    # thread_local (filelock's default): each thread's hold is its own, so a second thread waits.
    return FileLock(os.fspath(path), is_singleton=True, thread_local=True, poll_interval=poll_interval)


def build_once(path: str | os.PathLike, build: Callable[[Path], None], announce: str) -> Path:
    """Folder ``path``, built first by ``build(folder)`` if missing: by one process at a time (the others wait,
    then find it built), into a ``.partial`` folder renamed into place when complete, readable by every user
    (caches are shared). ``announce`` is printed when this process builds it. OSError when it cannot be written.
    """
    dest = Path(path)
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.parent / f".{dest.name}.lock"):
        if dest.is_dir():  # another process finished it while we waited
            return dest
        print(announce, flush=True)
        with atomic_folder(dest) as building:
            build(Path(building))
            # Some writers (safetensors, mkdtemp) make private files.
            for item in [Path(building), *Path(building).rglob("*")]:
                os.chmod(item, 0o755 if item.is_dir() else 0o644)
    return dest

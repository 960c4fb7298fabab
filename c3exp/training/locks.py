"""One process per run/sweep folder (else checkpoints get overwritten): a flock, which the kernel drops at death."""
from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from c3exp.errors import FolderInUse

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no advisory locks, no guard
    fcntl = None

LOCK_FILE = ".c3exp.lock"
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
SAME_JOB_WAIT_S = 120.0  # a requeued SLURM job waits this long for its earlier start to die (NFS leases expire)

_held: dict[Path, IO[str]] = {}  # folder -> its open, locked file, kept open for as long as the lock lasts


def is_secondary_rank() -> bool:
    """A DDP child that Lightning's launcher started, a task > 0 of a SLURM job, a node > 0: rank 0 holds the lock."""
    return any(os.environ.get(name, "0") != "0" for name in RANK_VARIABLES)


def describe(record: dict[str, Any]) -> str:
    if not record:
        return "another process"  # it has the lock but has not written its record yet
    slurm = f" (SLURM job {record['slurm_job']})" if record.get("slurm_job") else ""
    return f"pid {record['pid']} on host {record['host']}{slurm} since {record['since']}"


def read_record(lock_file: IO[str]) -> dict[str, Any]:
    lock_file.seek(0)
    with suppress(ValueError):
        return json.loads(lock_file.read())
    return {}


def try_flock(lock_file: IO[str]) -> bool:
    """Take the exclusive lock without waiting; False if another process holds it."""
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def open_lock_file(path: Path) -> IO[str]:
    """The lock file, created if need be, never through a symlink planted at its name (it is truncated and written)."""
    try:
        return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644), "r+")
    except OSError:
        if os.path.islink(path):
            message = f"{path} is a symlink: c3exp writes its lock file only as a plain file; remove it"
            raise FolderInUse(message) from None
        raise


def acquire(folder: Path, other_folder_key: str) -> None:
    """Hold `folder` until release(), else one line naming its live holder; ranks > 0 and lockless mounts: no guard."""
    folder = Path(folder).resolve()
    if fcntl is None or is_secondary_rank() or folder in _held:
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock_file = open_lock_file(folder / LOCK_FILE)
    deadline, job = time.monotonic() + SAME_JOB_WAIT_S, os.environ.get("SLURM_JOB_ID")
    try:
        while not try_flock(lock_file):  # held by an earlier start of this SLURM job (requeued): wait for it to die
            if not job or read_record(lock_file).get("slurm_job") != job or time.monotonic() > deadline:
                holder = describe(read_record(lock_file))
                lock_file.close()
                raise FolderInUse(f"{folder} is in use by {holder}: wait for it or use another {other_folder_key}")
            time.sleep(1.0)
    except OSError:  # ENOLCK, EOPNOTSUPP: no locking here
        lock_file.close()
        return
    lock_file.seek(0)
    lock_file.truncate()
    json.dump({"pid": os.getpid(), "host": socket.gethostname(), "slurm_job": os.environ.get("SLURM_JOB_ID"),
               "since": time.strftime("%Y-%m-%d %H:%M:%S")}, lock_file)
    lock_file.flush()
    _held[folder] = lock_file


def release(folder: Path) -> None:
    """Let another process have `folder`. The lock file stays: removing it would let two processes lock two files."""
    lock_file = _held.pop(Path(folder).resolve(), None)
    if lock_file is not None:
        lock_file.close()


def release_all() -> None:
    for folder in list(_held):
        release(folder)


@contextmanager
def holding(folder: Path, other_folder_key: str) -> Iterator[None]:
    """acquire() for the duration of the block (one sweep job in a process that runs several)."""
    already = Path(folder).resolve() in _held
    acquire(folder, other_folder_key)
    try:
        yield
    finally:
        if not already:
            release(folder)


def in_use(lock_path: Path) -> bool:
    """Whether a live process (this one included, through another open file) holds the flock on `lock_path`."""
    if fcntl is None:
        return False
    try:
        lock_file = os.fdopen(os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW), "r")
    except OSError:  # no such file: nobody ever held it
        return False
    with lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
    return False


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold the flock on `lock_path` (created if need be) for the block, waiting for any other holder."""
    Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
    with open_lock_file(Path(lock_path)) as lock_file:
        if fcntl is not None:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield

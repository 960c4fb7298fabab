"""Files written beside themselves: a temporary file in the target's own folder, flushed and renamed.

`os.replace` within one folder is atomic on POSIX filesystems (local disks, NFS): a reader, a kill or
a full disk sees the old file or the new one, never a mix, and the rename replaces a symlink at the
target instead of writing through it. Staging in `$TMPDIR` would make the final move a copy wherever
that is another filesystem, which truncates the old file first.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

#: Temporary files start with this, so that globbing for `*.ckpt` or `*.json` never matches one.
TEMP_PREFIX = ".tmp-"


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside `path`; on a clean exit it is synced and renamed onto `path`.

    On any error (a full disk, an interrupt) the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would differ from a plain open()'s file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_temps(folder: Path, pattern: str) -> list[Path]:
    """Remove the temporary files that killed saves of `folder`/`pattern` left behind; those removed.

    Call it only where no other save into `folder` can be under way (one process saves a run's files).
    """
    leftovers = sorted(folder.glob(f"{TEMP_PREFIX}{pattern}.*"))
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return leftovers


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_write(path, "wb") as file:
        file.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_write(path, "w", encoding="utf-8") as file:
        file.write(text)
    return Path(path)


def write_with(path: str | Path, save: Callable[[IO], Any], mode: str = "wb") -> Path:
    """`save(file)` into a temporary file beside `path`, then renamed: for writers that take a file
    object (torch.save, matplotlib's savefig with `format=`)."""
    with atomic_write(path, mode) as file:
        save(file)
    return Path(path)

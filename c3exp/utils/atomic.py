"""Written beside the target, then renamed: os.replace within a folder is atomic; from $TMPDIR it may be a copy."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TEMP_PREFIX = ".tmp-"  #: starts temporary files, so that globbing for `*.ckpt` or `*.json` never matches one


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """A temporary file beside `path`, synced and renamed onto it on a clean exit; removed on any error."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        mask = os.umask(0)  # reading the umask sets it: set back at once
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp's 0600 would differ from a plain open()'s file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_temps(folder: Path, pattern: str) -> None:
    """Remove the temporary files killed saves left; only where no save is under way."""
    for leftover in folder.glob(f"{TEMP_PREFIX}{pattern}.*"):
        leftover.unlink(missing_ok=True)


def write_with(path: str | Path, save: Callable[[IO], Any], mode: str = "wb", **open_kwargs: Any) -> Path:
    """Atomic `save(file)`, for writers that take a file object (torch.save, savefig with `format=`)."""
    with atomic_write(path, mode, **open_kwargs) as file:
        save(file)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_with(path, lambda file: file.write(text), "w", encoding="utf-8")

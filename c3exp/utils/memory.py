"""Process-wide allocator setting shared by training and the benchmark."""
from __future__ import annotations

import ctypes
import platform

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """glibc: serve every allocation from the heap and never shrink it (mallopt); False where unsupported.

    By default glibc hands large freed blocks back to the OS, and the next step faults them in
    again page by page: tens of thousands of page faults a step for a CIFAR ResNet at batch 128 on
    a CPU. The price is that the process keeps its peak heap until it exits.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))

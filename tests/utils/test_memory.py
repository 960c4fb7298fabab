"""Keeping freed memory (c3exp/utils/memory.py): glibc's mallopt where there is one, a no-op elsewhere."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest


def test_keep_freed_memory_is_a_no_op_without_glibc(monkeypatch):
    from c3exp.utils import memory

    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("", ""))
    assert memory.keep_freed_memory() is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_takes_effect_on_glibc():
    """The real mallopt calls succeed on this (glibc) platform; in a child, to leave pytest's heap alone."""
    code = "from c3exp.utils.memory import keep_freed_memory; print(keep_freed_memory())"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"

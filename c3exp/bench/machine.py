"""What the numbers depend on: the machine, its load, and its measured matmul peak."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from c3exp.bench.settings import BenchSettings
from c3exp.bench.timing import timed


def cpu_model() -> str:
    """The processor's name (from /proc/cpuinfo on Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict[str, Any]:
    """What the numbers depend on: processor, cores, threads, library versions, accelerator, load."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": load_average(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages, where the OS has them: other work skews the times."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def matmul_peak(settings: BenchSettings, size: int | None = None, repeats: int = 10) -> dict[str, Any]:
    """Fastest of `repeats` saturating matmuls in the bench precision (TF32 default for float32): "fraction of peak"."""
    size = size or (8192 if settings.device == "cuda" else 1024)
    dtype = settings.autocast_dtype or torch.float32
    generator = torch.Generator(device=settings.device).manual_seed(settings.seed)
    a, b = (torch.randn(size, size, device=settings.device, dtype=dtype, generator=generator) for _ in range(2))
    for _ in range(2):
        a @ b
    seconds = min(timed(lambda: a @ b, settings.device) for _ in range(repeats))
    return {"dtype": str(dtype).removeprefix("torch."), "size": size, "tflops": 2 * size**3 / seconds / 1e12}

"""Where the Hydra configs live, in a source checkout and in an installed wheel alike."""
from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The `conf/` directory: shipped as `c3exp/conf` in a wheel, top-level `conf/` in a checkout."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"c3exp configs not found next to {_PACKAGE_DIR}")

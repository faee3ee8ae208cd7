"""Where mal_desktop keeps what it can rebuild (the demo zoo, evaluation results)."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir(name: str, env_var: str) -> Path:
    """``$env_var`` if set, else ``$XDG_CACHE_HOME`` (or ~/.cache) / mal_desktop / ``name``."""
    env = os.environ.get(env_var, "").strip()
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "mal_desktop" / name

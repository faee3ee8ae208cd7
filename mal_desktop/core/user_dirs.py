"""The one place that knows the per-user folders (through platformdirs, so each platform gets
its own convention): the caches it can rebuild (the demo zoo, evaluation results) and the data it
must keep (crash recovery, logs)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "mal_desktop"


def user_cache_dir(name: str, env_var: str) -> Path:
    """``$env_var`` if set, else the platform's user cache folder / mal_desktop / ``name``
    (on Linux ``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    env = os.environ.get(env_var, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)) / name


def user_data_dir() -> Path:
    """The platform's user data folder for mal_desktop (on Linux ``$XDG_DATA_HOME`` or
    ``~/.local/share``), created on demand."""
    folder = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    folder.mkdir(parents=True, exist_ok=True)
    return folder

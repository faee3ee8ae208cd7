"""One typed facade over QSettings: every persisted preference goes through here.

Widgets never call ``QSettings`` themselves; they read and write typed properties of
:class:`Settings`. Tests pass a temporary ini file so nothing touches the user's configuration,
and the app data folder (recovery files, logs) then lives next to that file.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from ..core.user_dirs import user_data_dir

ORGANIZATION = "mal_desktop"
APPLICATION = "mal-desktop"
MAX_RECENT = 10
THEMES = ("system", "light", "dark")


class Settings:
    """Typed access to the application's persistent settings.

    Parameters: path - an ini file to use instead of the per-user default (tests, portable
    installs). When given, :meth:`data_dir` is a ``data`` folder beside it.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self._path = Path(path) if path is not None else None
        if self._path is not None:
            self._qs = QSettings(str(self._path), QSettings.Format.IniFormat)
        else:
            self._qs = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope,
                                 ORGANIZATION, APPLICATION)

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def file_name(self) -> str:
        """The file the settings are stored in."""
        return self._qs.fileName()

    def sync(self) -> None:
        """Write pending changes to disk now (Qt also does this on exit)."""
        self._qs.sync()

    def data_dir(self) -> Path:
        """Folder for recovery files and logs (created on demand)."""
        if self._path is None:
            return user_data_dir()
        folder = self._path.parent / "data"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _get_str(self, key: str, default: str) -> str:
        value = self._qs.value(key, default)
        return str(value) if value is not None else default

    def _get_int(self, key: str, default: int, lo: int, hi: int) -> int:
        try:
            value = int(self._qs.value(key, default))
        except (TypeError, ValueError):
            return default  # a hand-edited or corrupt ini must not stop the app
        return max(lo, min(hi, value))

    def _get_bool(self, key: str, default: bool) -> bool:
        value = self._qs.value(key, default)
        if isinstance(value, str):  # ini files store booleans as text
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)

    def _get_bytes(self, key: str) -> QByteArray:
        value = self._qs.value(key)
        return value if isinstance(value, QByteArray) else QByteArray()

    # -- window ------------------------------------------------------------------------------
    @property
    def window_geometry(self) -> QByteArray:
        """``QMainWindow.saveGeometry()`` of the last session (empty when none)."""
        return self._get_bytes("window/geometry")

    @window_geometry.setter
    def window_geometry(self, value: QByteArray) -> None:
        self._qs.setValue("window/geometry", value)

    @property
    def window_state(self) -> QByteArray:
        """``QMainWindow.saveState()`` (docks and toolbars) of the last session."""
        return self._get_bytes("window/state")

    @window_state.setter
    def window_state(self, value: QByteArray) -> None:
        self._qs.setValue("window/state", value)

    @property
    def theme(self) -> str:
        """"system" (follow the desktop), "light" or "dark"."""
        value = self._get_str("appearance/theme", "system")
        return value if value in THEMES else "system"

    @theme.setter
    def theme(self, value: str) -> None:
        if value not in THEMES:
            raise ValueError(f"theme must be one of {', '.join(THEMES)}, got {value!r}")
        self._qs.setValue("appearance/theme", value)

    # -- files -------------------------------------------------------------------------------
    @property
    def recent_files(self) -> list[str]:
        """Most recently opened files (projects and models), newest first."""
        value = self._qs.value("files/recent", [])
        if isinstance(value, str):  # QSettings returns a lone string for one-element lists
            value = [value]
        return [str(v) for v in (value or []) if v][:MAX_RECENT]

    def add_recent_file(self, path: str | Path) -> None:
        """Put ``path`` first in the recent list (deduplicated, capped at MAX_RECENT)."""
        p = str(Path(path).expanduser().resolve())
        files = [f for f in self.recent_files if f != p]
        self._qs.setValue("files/recent", [p, *files][:MAX_RECENT])

    def remove_recent_file(self, path: str | Path) -> None:
        """Forget ``path`` (e.g. it no longer exists)."""
        p = str(Path(path).expanduser().resolve())
        self._qs.setValue("files/recent", [f for f in self.recent_files if f != p])

    def clear_recent_files(self) -> None:
        self._qs.setValue("files/recent", [])

    @property
    def last_dir(self) -> str:
        """Folder shown first by file dialogs."""
        return self._get_str("files/last_dir", str(Path.home()))

    @last_dir.setter
    def last_dir(self, value: str | Path) -> None:
        self._qs.setValue("files/last_dir", str(value))

    # -- run ----------------------------------------------------------------------------------
    @property
    def dataset(self) -> str:
        """Dataset used for curves and evaluation (a registry name or an .npz path)."""
        return self._get_str("run/dataset", "digits")

    @dataset.setter
    def dataset(self, value: str) -> None:
        self._qs.setValue("run/dataset", value)

    @property
    def curve_grid(self) -> int:
        """Number of lambda points on an interpolation curve (3..101)."""
        return self._get_int("run/curve_grid", 11, 3, 101)

    @curve_grid.setter
    def curve_grid(self, value: int) -> None:
        self._qs.setValue("run/curve_grid", int(value))

    # -- session -------------------------------------------------------------------------------
    @property
    def demo_offered(self) -> bool:
        """True once the first-launch demo-zoo offer was shown (it is shown only once)."""
        return self._get_bool("session/demo_offered", False)

    @demo_offered.setter
    def demo_offered(self, value: bool) -> None:
        self._qs.setValue("session/demo_offered", bool(value))

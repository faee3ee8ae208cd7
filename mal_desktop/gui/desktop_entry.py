"""Install the desktop entry and icons for the current user (``mal-desktop --install-desktop-entry``).

Follows the XDG specs: the entry goes to ``$XDG_DATA_HOME/applications`` and the icons to the
hicolor theme under ``$XDG_DATA_HOME/icons`` (``~/.local/share`` when the variable is unset).
``Exec`` names the Python that runs now, so the entry works for a virtual environment that is not
on the desktop session's PATH. No Qt is needed: this runs before (instead of) the application.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from ..core.io.atomic import atomic_write_text
from .icons import ICON_SIZES, resource_dir

ENTRY_NAME = "mal-desktop.desktop"
ICON_NAME = "mal-desktop"


def data_home() -> Path:
    """``$XDG_DATA_HOME`` or ``~/.local/share``."""
    env = os.environ.get("XDG_DATA_HOME", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".local" / "share"


def entry_text(template: str, python: str) -> str:
    """The shipped entry with ``Exec``/``TryExec`` pointing at ``python -m mal_desktop``."""
    exec_line = f"Exec={shlex.quote(python)} -m mal_desktop %F"
    text = re.sub(r"^Exec=.*$", exec_line, template, flags=re.MULTILINE)
    return re.sub(r"^TryExec=.*$", f"TryExec={python}", text, flags=re.MULTILINE)


def install_desktop_entry(target: Path | None = None, python: str | None = None) -> list[Path]:
    """Install the entry and every icon size under ``target`` (default: :func:`data_home`).

    Returns the files written. Raises OSError when a file cannot be written (each write is atomic).
    """
    root = target or data_home()
    source = resource_dir()
    written = []
    apps = root / "applications"
    apps.mkdir(parents=True, exist_ok=True)
    template = (source / ENTRY_NAME).read_text(encoding="utf-8")
    written.append(atomic_write_text(apps / ENTRY_NAME,
                                     entry_text(template, python or sys.executable)))
    icons = root / "icons" / "hicolor"
    for size in ICON_SIZES:
        png = source / f"{ICON_NAME}-{size}.png"
        if png.is_file():
            folder = icons / f"{size}x{size}" / "apps"
            folder.mkdir(parents=True, exist_ok=True)
            written.append(Path(shutil.copyfile(png, folder / f"{ICON_NAME}.png")))
    svg = source / f"{ICON_NAME}.svg"
    if svg.is_file():
        folder = icons / "scalable" / "apps"
        folder.mkdir(parents=True, exist_ok=True)
        written.append(Path(shutil.copyfile(svg, folder / f"{ICON_NAME}.svg")))
    # Menus pick the entry up without this, but some desktops cache: refresh when the tool exists.
    if shutil.which("update-desktop-database"):
        subprocess.run(["update-desktop-database", str(apps)], capture_output=True, check=False)
    return written

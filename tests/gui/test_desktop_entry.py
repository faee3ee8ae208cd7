"""The desktop entry validates and installs for the current user with its icons."""

import shutil
import subprocess
import sys

import pytest

from mal_desktop.gui.desktop_entry import install_desktop_entry
from mal_desktop.gui.icons import resource_dir

VALIDATOR = shutil.which("desktop-file-validate")


@pytest.mark.skipif(VALIDATOR is None, reason="desktop-file-utils is not installed")
def test_shipped_entry_validates():
    out = subprocess.run([VALIDATOR, str(resource_dir() / "mal-desktop.desktop")],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr


def test_install_writes_entry_and_icons_under_the_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    written = install_desktop_entry()
    entry = tmp_path / "applications" / "mal-desktop.desktop"
    assert entry in written
    text = entry.read_text()
    assert f"Exec={sys.executable} -m mal_desktop %F" in text.splitlines()
    assert f"TryExec={sys.executable}" in text.splitlines()
    assert (tmp_path / "icons/hicolor/48x48/apps/mal-desktop.png").is_file()
    assert (tmp_path / "icons/hicolor/scalable/apps/mal-desktop.svg").is_file()
    if VALIDATOR:
        out = subprocess.run([VALIDATOR, str(entry)], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout == "", out.stdout
    # installing again replaces the files in place
    assert install_desktop_entry() == written


def test_the_app_command_installs_the_entry_and_exits(tmp_path, capsys, monkeypatch):
    from mal_desktop.gui.app import main

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert main(["--install-desktop-entry"]) == 0
    assert (tmp_path / "applications" / "mal-desktop.desktop").is_file()
    assert capsys.readouterr().out.startswith(f"installed {tmp_path}/applications/")

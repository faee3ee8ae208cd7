"""The typed settings facade (gui/settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mal_desktop.gui.settings import MAX_RECENT, Settings

pytestmark = pytest.mark.gui


def test_settings_are_typed_and_bounded(tmp_path: Path) -> None:
    s = Settings(tmp_path / "s.ini")
    assert s.theme == "system" and s.dataset == "digits" and s.curve_grid == 11
    for i in range(MAX_RECENT + 3):
        s.add_recent_file(tmp_path / f"f{i}.malproj")
    s.add_recent_file(tmp_path / "f3.malproj")  # moves to the front, no duplicate
    recent = s.recent_files
    assert len(recent) == MAX_RECENT and recent[0].endswith("f3.malproj")
    assert len(set(recent)) == len(recent)
    s.curve_grid = 1000
    s.theme = "dark"
    s.demo_offered = True
    s.sync()
    again = Settings(tmp_path / "s.ini")
    assert again.curve_grid == 101 and again.theme == "dark" and again.demo_offered is True
    assert again.recent_files == recent
    with pytest.raises(ValueError):
        again.theme = "purple"
    assert again.data_dir() == tmp_path / "data" and again.data_dir().is_dir()

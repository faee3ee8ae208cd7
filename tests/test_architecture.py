"""The core stays headless: importing it (and running the CLI's modules) never loads Qt."""

import subprocess
import sys

CORE_MODULES = [
    "mal_desktop.core.progress", "mal_desktop.core.jobs", "mal_desktop.core.io.files",
    "mal_desktop.core.graph.discover", "mal_desktop.core.graph.tree",
    "mal_desktop.core.align.matching", "mal_desktop.core.merge.assemble",
    "mal_desktop.core.evaluate.curves", "mal_desktop.core.zoo.build", "mal_desktop.cli",
]


def test_core_never_imports_qt():
    code = (
        "import sys, importlib\n"
        f"for m in {CORE_MODULES!r}: importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_gui_package_is_not_imported_by_core_sources():
    from pathlib import Path

    core = Path(__file__).resolve().parents[1] / "mal_desktop" / "core"
    offenders = [str(p) for p in core.rglob("*.py")
                 if any(w in p.read_text() for w in ("import PySide6", "from PySide6",
                                                     "import pyqtgraph", "mal_desktop.gui"))]
    assert offenders == []

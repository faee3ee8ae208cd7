"""The layering is a contract: the core stays headless and every module imports only from its own
layer or lower ones (pyproject's [tool.importlinter] contracts, checked here so CI enforces them)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE_MODULES = [
    "mal_desktop.core.progress", "mal_desktop.core.jobs", "mal_desktop.core.io.files",
    "mal_desktop.core.graph.discover", "mal_desktop.core.graph.tree",
    "mal_desktop.core.align.matching", "mal_desktop.core.merge.assemble",
    "mal_desktop.core.evaluate.curves", "mal_desktop.core.zoo.build",
    "mal_desktop.core.toolkit.matrix", "mal_desktop.core.study", "mal_desktop.cli",
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


def _lint_imports(tree: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    # PYTHONPATH first: the copy under test, not the installed package, is what gets analysed.
    return subprocess.run([str(exe), "--config", str(tree / "pyproject.toml"), "--no-cache"],
                          cwd=tree, capture_output=True, text=True,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})


def test_layer_contracts_hold():
    out = _lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize("importer, planted, contract", [
    # an upward import hidden inside a function, the way the old cycles were disguised
    ("core/io/files.py", "    from ..zoo import build  # noqa\n", "Core layers"),
    ("core/graph/spec.py", "    import PySide6  # noqa\n", "The core is headless"),
    ("cli/model_commands.py", "    from ..gui import app  # noqa\n", "front ends"),
])
def test_layer_contract_fails_on_a_planted_upward_import(tmp_path, importer, planted, contract):
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "mal_desktop", tree / "mal_desktop",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    target = tree / "mal_desktop" / importer
    target.write_text(target.read_text() + "\n\ndef _planted():\n" + planted)
    out = _lint_imports(tree)
    assert out.returncode != 0
    broken = out.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, out.stdout

"""kill -9 at any moment of `mal assemble` leaves no output or a complete, loadable one, and the
next run removes what the killed one left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mal_desktop.core.io.files import load_model, save_model
from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep

ROOT = Path(__file__).resolve().parents[2]


def _assemble(plan: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MAL_DEVICE": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "mal_desktop.cli", "assemble", str(plan),
                             "--out", str(out), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_kill_at_any_moment_leaves_nothing_or_a_whole_model(small_zoo, tmp_path: Path) -> None:
    steps = [AssemblyStep("wide", f"layers.{i % 2}", f"layers.{i % 2}", 0.1 + 0.05 * i)
             for i in range(8)]
    plan = AssemblyPlan(base=str(small_zoo.path_of("mlp-w32-s0")),
                        zoo={"wide": str(small_zoo.path_of("mlp-w64-s0"))}, steps=steps)
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan.to_json()))
    reference = tmp_path / "reference.safetensors"
    started = time.monotonic()
    full = _assemble(plan_path, reference)
    assert full.wait(timeout=120) == 0, full.stderr.read()
    duration = time.monotonic() - started
    expected = load_model(reference).state()

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "merged.safetensors"
    for fraction in (0.6, 0.9, 0.98):  # the later ones land in the final write
        if out.exists():
            out.unlink()
        proc = _assemble(plan_path, out)
        time.sleep(duration * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if out.exists():  # whole or absent, never half
            state = load_model(out).state()
            assert state.keys() == expected.keys()
            assert all(torch.equal(state[k], expected[k]) for k in state)
    # whatever the killed runs left beside the output, the next save there cleans up
    save_model(load_model(reference), out)
    assert [p.name for p in out_dir.iterdir()] == ["merged.safetensors"]


def test_sigterm_during_a_folder_save_leaves_no_temporary_folder(small_zoo,
                                                                 tmp_path: Path) -> None:
    """``kill`` (SIGTERM) unwinds like Ctrl+C: the half-written folder goes with it instead of
    staying beside the output until the next save there."""
    plan = AssemblyPlan(base=str(small_zoo.path_of("mlp-w32-s0")),
                        zoo={"d": str(small_zoo.path_of("mlp-w32-s1"))},
                        steps=[AssemblyStep("d", "layers.1", "layers.1", 0.5)])
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan.to_json()))
    out = tmp_path / "out" / "merged"
    out.parent.mkdir()
    # SIGTERM arrives while the first shard is written (deterministic, unlike a timed kill)
    script = (
        "import os, signal, sys\n"
        "from mal_desktop.core.io import sharded\n"
        "real = sharded.write_safetensors\n"
        "def killed(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return real(*args, **kwargs)\n"
        "sharded.write_safetensors = killed\n"
        "from mal_desktop.cli import main\n"
        f"sys.exit(main(['assemble', {str(plan_path)!r}, '--out', {str(out)!r}, '--quiet']))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MAL_DEVICE": "cpu"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().endswith("mal: terminated")
    assert list(out.parent.iterdir()) == []  # no output, no temporary folder

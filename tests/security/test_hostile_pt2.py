"""Hostile .pt2 files (pt2_corpus) are refused, and nothing in them runs.

For every case, loaded directly and through a mal .safetensors that names it as its
architecture program: ``load_model`` raises ModelFileError with one line naming the file and
the problem, the payload's marker file is never created, the input files keep their sha256, and
no file appears beside them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from mal_desktop.core.errors import ModelFileError
from mal_desktop.core.io.files import load_model, read_header
from mal_desktop.core.io.pt2_io import read_pt2

from pt2_corpus import CASES, MODEL, code, edit_json, mal_file, nodes, rewrite, valid_program


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return valid_program(tmp_path_factory.mktemp("valid") / "valid.pt2")


@pytest.mark.parametrize("route", ["pt2", "mal"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_program_is_refused_and_runs_nothing(case: str, route: str, valid: Path,
                                                     tmp_path: Path) -> None:
    build, problem = CASES[case]
    marker = tmp_path / "code_ran"
    hostile = tmp_path / "evil.pt2"
    build(valid, hostile, marker)
    target = mal_file(hostile, tmp_path / "evil.safetensors") if route == "mal" else hostile
    inputs = {p: sha(p) for p in (hostile, target)}
    before = sorted(tmp_path.iterdir())

    with pytest.raises(ModelFileError) as err:
        load_model(target)

    message = str(err.value)
    assert "\n" not in message  # one line for the CLI and the message box
    assert err.value.path == str(target.resolve())
    assert message.startswith(f"{target.resolve()}: ")
    if route == "mal":
        assert f"architecture program {hostile.resolve()}: " in message
    assert re.search(problem, err.value.problem), err.value.problem
    assert not marker.exists()
    assert {p: sha(p) for p in inputs} == inputs
    assert sorted(tmp_path.iterdir()) == before


def test_read_header_refuses_the_same_files(valid: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    for case in ("sample_inputs_pickle", "guard_code", "injected_value_name"):
        build, problem = CASES[case]
        build(valid, tmp_path / f"{case}.pt2", marker)
        with pytest.raises(ModelFileError, match=problem):
            read_header(tmp_path / f"{case}.pt2")
    assert not marker.exists()


def test_the_valid_program_loads_and_matches_torch(valid: Path) -> None:
    """The corpus is built from a file our reader accepts: each case fails for its own reason."""
    loaded = load_model(valid)
    reference = torch.export.load(str(valid)).module()  # trusted: the test's own file
    x = torch.randn(5, 1, 4, 4)
    assert torch.equal(loaded.module(x), reference(x))
    assert (loaded.input_shape, loaded.num_classes) == ((1, 4, 4), 3)
    names = [n.name for n in loaded.program.graph.nodes if n.op != "output"]
    assert names == [f"n{i}" for i in range(len(names))]  # nothing named from the file


def test_metadata_with_code_is_dropped_not_run(valid: Path, tmp_path: Path) -> None:
    """Stack traces, annotations and module stacks carrying code load: they are ignored (or,
    for nn_module_stack, kept only when every entry is a plain name), never written into the
    generated module's source."""
    marker = tmp_path / "code_ran"
    payload = f"\n{code(marker)}\n"

    def edit(doc: dict) -> None:
        for i, node in enumerate(nodes(doc)):
            node["metadata"]["stack_trace"] = f'File "x.py", line 1, in f\n    {payload}\r{payload}'
            node["metadata"]["custom"] = json.dumps({"k": payload})
            if i % 2:
                node["metadata"]["nn_module_stack"] = f"L__self__,x{payload},torch.nn.Linear"

    evil = tmp_path / "meta.pt2"
    rewrite(valid, evil, edit_json(MODEL, edit))
    loaded = load_model(evil)
    assert "open(" not in loaded.module.code
    for node in loaded.program.graph.nodes:
        assert set(node.meta) <= {"val", "nn_module_stack", "unbacked_bindings"}
        for path, type_name in node.meta.get("nn_module_stack", {}).values():
            assert "open" not in path + type_name
    loaded.module(torch.randn(2, 1, 4, 4))
    assert not marker.exists()


def test_plain_size_guards_are_ignored(valid: Path, tmp_path: Path) -> None:
    def edit(doc: dict) -> None:
        doc["guards_code"] = ["L['input'].size()[0] <= 1024", "2 <= L['input'].size()[0]"]

    rewrite(valid, tmp_path / "guarded.pt2", edit_json(MODEL, edit))
    loaded = load_model(tmp_path / "guarded.pt2")
    assert loaded.module(torch.randn(1, 1, 4, 4)).shape == (1, 3)  # the guard was not run


def test_reading_never_calls_torch_or_pickle_loaders(valid: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The loaders that would run code from the file are made to fail for the duration of a
    load: the reader never reaches them (the example inputs are parsed, not unpickled)."""
    import pickle

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the reader called a loader that runs code from the file")

    for owner, name in ((torch, "load"), (torch.export, "load"), (pickle, "loads"),
                        (pickle, "load"), (torch._C, "_pickle_load_obj")):
        monkeypatch.setattr(owner, name, forbidden)
    program, digest = read_pt2(valid)
    assert digest == sha(valid) and program.example_inputs is None

"""A model's layer tree from its headers alone: what the app shows and ``mal inspect --headers``
prints before (or instead of) reading a large model's weights.

The proof that no tensor data is read: every way of reading it raises, and a folder whose data
holds NaN (which loading refuses) opens. The header tree must be the loaded model's tree but
for the statistics, or the app would swap one layout for another once the weights are read.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
import torch

from mal_desktop.core.arch.families import build_model
from mal_desktop.core.errors import MalError, ModelFileError
from mal_desktop.core.graph.tree import build_layer_tree
from mal_desktop.core.io.files import load_model, open_from_headers, save_model
from mal_desktop.core.io.model import LoadedModel

transformers = pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent))  # tests/core is not a package
from test_hf_folders import forbid_reading, write_llama  # noqa: E402


def _poison(file: Path, name: str) -> None:
    """Overwrite tensor ``name``'s first float32 value in a safetensors file with NaN."""
    raw = file.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    begin = json.loads(raw[8:8 + n])[name]["data_offsets"][0]
    with open(file, "r+b") as f:
        f.seek(8 + n + begin)
        f.write(struct.pack("<f", float("nan")))


def test_a_folder_tree_from_headers_reads_no_tensor_data(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = write_llama(tmp_path / "m", shard_bytes=4000)
    loaded_tree = build_layer_tree(load_model(folder))
    with monkeypatch.context() as m:
        forbid_reading(m)
        model = open_from_headers(folder)
        tree = build_layer_tree(model)
    assert model is not None and model.form == "hf-folder"
    assert all(t.is_meta for t in model.module.parameters())
    assert not tree.has_stats and loaded_tree.has_stats
    weight = tree.find("model.layers.0.mlp.down_proj").tensors[0]
    assert weight.norm != weight.norm  # NaN: not computed, the app says "reading"
    # the same modules, tensors and spaces as once loaded: the app fills the statistics in
    assert tree.same_layout(loaded_tree) and tree.total_params == loaded_tree.total_params


def test_weights_that_loading_refuses_still_show_their_tree(tmp_path: Path) -> None:
    folder, _ = write_llama(tmp_path / "m")
    _poison(folder / "model.safetensors", "model.layers.0.mlp.up_proj.weight")
    with pytest.raises(ModelFileError, match="NaN"):
        load_model(folder)
    assert build_layer_tree(open_from_headers(folder)).find("model.layers.0.mlp.up_proj")


def test_the_stored_dtype_is_kept(tmp_path: Path) -> None:
    """bf16 weights build a bf16 meta module: the spaces found for the headers are the loaded
    model's (the spec cache keys on dtypes), so the app's tree does not change under the user."""
    folder, _ = write_llama(tmp_path / "m", torch_dtype="bfloat16")
    from mal_desktop.core.io.hf_write import write_hf_folder
    from mal_desktop.core.io.meta import tie_groups

    module = load_model(folder).module.to(torch.bfloat16)
    write_hf_folder(tmp_path / "b", module.state_dict(), json.loads(
        (folder / "config.json").read_text()), tied=tie_groups(module))
    model = open_from_headers(tmp_path / "b")
    assert {p.dtype for p in model.module.parameters()} == {torch.bfloat16}
    assert build_layer_tree(model).same_layout(build_layer_tree(load_model(tmp_path / "b")))


def _family_model() -> LoadedModel:
    config = {"input_shape": [1, 8, 8], "num_classes": 10, "widths": [32, 16]}
    torch.manual_seed(0)
    return LoadedModel(build_model("mlp", config), {"kind": "family", "family": "mlp",
                                                    "config": config}, (1, 8, 8), 10)


@pytest.mark.parametrize("name", ["mlp.safetensors", "mlp-shards"])
def test_mal_files_and_shard_folders_from_headers(tmp_path: Path, name: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_model(_family_model(), tmp_path / name, max_shard_bytes=2000)
    loaded_tree = build_layer_tree(load_model(path))
    if path.is_dir():  # shards are memory-mapped to read their headers: nothing is paged in
        model = open_from_headers(path)
    else:
        with monkeypatch.context() as m:
            forbid_reading(m)
            model = open_from_headers(path)
    assert all(t.is_meta for t in model.module.parameters())
    assert build_layer_tree(model).same_layout(loaded_tree)


def test_forms_whose_architecture_comes_with_the_tensors_are_not_built(tmp_path: Path) -> None:
    model = _family_model()
    plain = tmp_path / "plain.pt"
    torch.save(model.module.state_dict(), plain)
    assert open_from_headers(plain) is None
    program = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(model.module, (torch.zeros(2, 1, 8, 8),)), program)
    assert open_from_headers(program) is None
    with pytest.raises(ModelFileError, match="no such file"):
        open_from_headers(tmp_path / "missing.safetensors")


def test_cli_inspect_headers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mal_desktop.cli import main

    folder, _ = write_llama(tmp_path / "m")
    _poison(folder / "model.safetensors", "model.layers.0.mlp.up_proj.weight")
    assert main(["inspect", str(folder)]) == 1  # reading the weights finds the NaN
    assert "NaN" in capsys.readouterr().err
    assert main(["inspect", str(folder), "--headers"]) == 0
    out = capsys.readouterr().out
    assert "(from the headers: weights not read)" in out.splitlines()[0]
    assert "model.layers.0.mlp.up_proj" in out
    assert main(["inspect", str(folder), "--headers", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["statistics"] is False
    assert all(t["norm"] is None for layer in obj["layers"] for t in layer["tensors"])
    assert main(["inspect", str(folder), "--headers", "--self-test"]) == 1
    assert "--self-test runs the model" in capsys.readouterr().err


def test_cli_inspect_headers_of_a_program_reads_it_whole(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    from mal_desktop.cli import main

    program = tmp_path / "mlp.pt2"
    module = _family_model().module
    torch.export.save(torch.export.export(module, (torch.zeros(2, 1, 8, 8),)), program)
    assert main(["inspect", str(program), "--headers", "--json"]) == 0
    captured = capsys.readouterr()
    assert "it is read whole" in captured.err and json.loads(captured.out)["statistics"] is True


def test_malerror_is_the_header_refusal(tmp_path: Path) -> None:
    """A config that does not fit its weights is refused from the headers as by loading."""
    folder, _ = write_llama(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 32}))
    with pytest.raises(MalError, match="up_proj"):
        open_from_headers(folder)


def test_reading_weights_stops_between_tensors_when_cancelled(tmp_path: Path) -> None:
    """Loading a 7B folder reads 13 GB (the NaN check, then the statistics): a cancelled load
    stops at the next tensor, not after the whole read."""
    from cancel_after import CancelAfter

    from mal_desktop.core.progress import Cancelled, cancellable

    folder, _ = write_llama(tmp_path / "m")
    token = CancelAfter(3)
    with cancellable(token), pytest.raises(Cancelled):
        load_model(folder)
    assert token.looks == 3  # of some twenty tensors
    model = load_model(folder)  # outside the block nothing is checked
    token = CancelAfter(3)
    with cancellable(token), pytest.raises(Cancelled):
        build_layer_tree(model)
    assert token.looks == 3

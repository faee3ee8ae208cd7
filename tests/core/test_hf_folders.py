"""Hugging Face model folders (config.json + safetensors + tokenizer.json): opened with no code
from the folder, tied weights, shards through the index, headers without tensor data, refusals.

Every folder is written here from a tiny config (no downloads), by our writer and by
transformers' own ``save_pretrained``; skipped without the optional [hf] extra.
"""

from __future__ import annotations

import json
import math
import struct
import warnings
from pathlib import Path

import pytest
import torch

from mal_desktop.core.errors import ModelFileError
from mal_desktop.core.io.files import load_model, model_form, read_header, save_model
from mal_desktop.core.io.hf_config import build_module
from mal_desktop.core.io.meta import tie_groups
from mal_desktop.core.io.hf_write import save_hf_folder, write_hf_folder

transformers = pytest.importorskip("transformers")

CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 96,
          "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "intermediate_size": 24, "max_position_embeddings": 32,
          "tie_word_embeddings": True}


def write_llama(folder: Path, seed: int = 0, shard_bytes: int | None = None,
                **changes) -> tuple[Path, torch.nn.Module]:
    """A random tiny Llama written as a model folder; returns it and the module it holds."""
    config = {**CONFIG, **changes}
    torch.manual_seed(seed)
    module = build_module(folder, config, device="cpu")
    write_hf_folder(folder, module.state_dict(), config, tied=tie_groups(module),
                    max_shard_bytes=shard_bytes)
    return folder, module


def ids(n: int = 2, length: int = 12, vocab: int = 96) -> torch.Tensor:
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(5))


def refused(path: Path, *words: str) -> str:
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
    return message


def test_open_folder_gives_the_same_logits(tmp_path: Path) -> None:
    folder, module = write_llama(tmp_path / "tiny-llama")
    for path in (folder, folder / "config.json"):
        model = load_model(path)
        assert model.form == "hf-folder" and model_form(path) == "hf-folder"
        assert model.name == "tiny-llama" and model.path == folder.resolve()
        assert model.num_classes == 96 and model.input_shape == (32,)
        assert model.probe_dtype() == torch.int64 and model.id_range() == 96
        with torch.no_grad():
            assert torch.equal(model.module(ids()), module(ids()))
        assert model.arch["kind"] == "hf" and model.arch["class"] == "LlamaForCausalLM"


def test_weights_are_the_files_pages_not_a_copy(tmp_path: Path) -> None:
    folder, _ = write_llama(tmp_path / "m")
    model = load_model(folder)
    weight = model.module.model.layers[0].mlp.up_proj.weight
    # the safetensors memory map: the storage is the file's (not resizable, not our allocation)
    assert not weight.untyped_storage().resizable()
    with torch.no_grad():
        weight.add_(1.0)  # copy-on-write: the file never changes
    again = load_model(folder).module.model.layers[0].mlp.up_proj.weight
    assert not torch.equal(weight, again)


def test_tied_weights_are_one_parameter(tmp_path: Path) -> None:
    folder, _ = write_llama(tmp_path / "tied")
    header = read_header(folder)
    model = load_model(folder)
    assert model.module.lm_head.weight is model.module.model.embed_tokens.weight
    assert set(model.state()) == set(header.shapes)  # both names, as the module has them
    stored = json.loads((folder / "model.safetensors").read_bytes()[8:].split(b"}}")[0] + b"}}")
    assert "lm_head.weight" not in stored  # written once, as save_pretrained does
    assert header.metadata["stored_parameters"] < header.num_parameters
    untied, module = write_llama(tmp_path / "untied", tie_word_embeddings=False)
    model = load_model(untied)
    assert model.module.lm_head.weight is not model.module.model.embed_tokens.weight
    with torch.no_grad():
        assert torch.equal(model.module(ids()), module(ids()))


def test_tied_names_with_different_values_are_refused(tmp_path: Path) -> None:
    folder, module = write_llama(tmp_path / "m")
    state = dict(module.state_dict())
    state["lm_head.weight"] = state["lm_head.weight"] + 1.0
    write_hf_folder(folder, state, CONFIG)  # both names written, no longer equal
    refused(folder, "lm_head.weight", "tied", "differ")


def test_folder_saved_by_transformers_opens(tmp_path: Path) -> None:
    config = transformers.LlamaConfig(**{k: v for k, v in CONFIG.items()
                                         if k not in ("model_type", "architectures")})
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = transformers.LlamaForCausalLM(config).eval()
        module.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    model = load_model(tmp_path / "hf")
    with torch.no_grad():
        assert torch.equal(model.module(ids()), module(ids()).logits)


def test_sharded_folder_reads_through_the_index(tmp_path: Path) -> None:
    single, module = write_llama(tmp_path / "single")
    sharded, _ = write_llama(tmp_path / "sharded", shard_bytes=4000)
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert len(shards) >= 3 and (sharded / "model.safetensors.index.json").is_file()
    a, b = load_model(single), load_model(sharded)
    assert {k: tuple(v.shape) for k, v in a.state().items()} == \
        {k: tuple(v.shape) for k, v in b.state().items()}
    assert all(torch.equal(a.state()[k], b.state()[k]) for k in a.state())
    assert read_header(sharded).shapes == read_header(single).shapes
    assert read_header(sharded).metadata["files"] == shards


def _edit_index(folder: Path, edit) -> None:
    path = folder / "model.safetensors.index.json"
    doc = json.loads(path.read_text())
    edit(doc["weight_map"])
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("name", ["../model-00001-of-00003.safetensors", "/etc/passwd",
                                  "sub/model.safetensors", "..\\x.safetensors", "x.bin", ".."])
def test_shard_names_outside_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    folder, _ = write_llama(tmp_path / "m", shard_bytes=4000)

    def edit(weight_map: dict) -> None:
        weight_map[next(iter(weight_map))] = name

    _edit_index(folder, edit)
    refused(folder, "model.safetensors.index.json", "shard name")


def test_index_and_shards_must_agree(tmp_path: Path) -> None:
    folder, _ = write_llama(tmp_path / "m", shard_bytes=4000)
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))

    def misplace(weight_map: dict) -> None:
        key = next(k for k, v in weight_map.items() if v == shards[0])
        weight_map[key] = shards[1]

    _edit_index(folder, misplace)
    refused(folder, "the index puts tensor", "does not hold it")
    folder, _ = write_llama(tmp_path / "n", shard_bytes=4000)
    (folder / shards[-1]).unlink()
    refused(folder, "is missing")


def forbid_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way of reading tensor data raises: what runs now reads headers only."""
    import safetensors
    import safetensors.torch

    def no_data(*args, **kwargs):
        raise AssertionError("tensor data was read")

    monkeypatch.setattr(safetensors, "safe_open", no_data)
    monkeypatch.setattr(safetensors.torch, "load_file", no_data)
    monkeypatch.setattr(torch, "load", no_data)
    monkeypatch.setattr(torch.UntypedStorage, "from_file", no_data)


def test_header_reads_no_tensor_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, module = write_llama(tmp_path / "m", shard_bytes=4000)
    forbid_reading(monkeypatch)
    header = read_header(folder)
    state = module.state_dict()
    assert header.form == "hf-folder" and header.arch["class"] == "LlamaForCausalLM"
    assert header.shapes == {k: tuple(v.shape) for k, v in state.items()}
    assert header.dtypes == {k: "float32" for k in state}
    assert header.num_parameters == sum(v.numel() for v in state.values())
    assert header.input_shape == (32,) and header.num_classes == 96


def _sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], code: str = "BF16",
                        itemsize: int = 2) -> int:
    """A safetensors file whose data section is a hole (no disk, no bytes to read): only a
    header reader can open it in no time."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape) * itemsize
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    return offset


def test_large_folder_header_from_sparse_shards(tmp_path: Path) -> None:
    """A 7B-shaped Llama folder (bf16, 13 GB of holes in 2 shards): the header and the layer
    shapes come from the headers alone (benchmarks/hf_folder_header.py measures time and RSS)."""
    config = {**CONFIG, "vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008,
              "max_position_embeddings": 4096, "tie_word_embeddings": False}
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build_module(folder, config).state_dict().items()}
    names = sorted(shapes)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:])):
        shard = f"model-{i + 1:05d}-of-00002.safetensors"
        _sparse_safetensors(folder / shard, {k: shapes[k] for k in part})
        weight_map.update({k: shard for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    header = read_header(folder)
    assert header.shapes == shapes and set(header.dtypes.values()) == {"bfloat16"}
    assert header.num_parameters > 6.7e9 and header.nbytes > 13 * 10**9


def test_custom_code_is_refused_and_never_imported(tmp_path: Path) -> None:
    folder, _ = write_llama(tmp_path / "m")
    marker = tmp_path / "ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    refused(folder, "custom code", "auto_map", "trust_remote_code is never used")
    with pytest.raises(ModelFileError, match="custom code"):
        read_header(folder)
    assert not marker.exists()


@pytest.mark.parametrize("name, words", [
    ("EvilForCausalLM", ("'EvilForCausalLM' is not a model class of transformers",)),
    ("AutoTokenizer", ("is not a model class",)),
    ("os.system", ("'architectures' must list a class name",)),
    ("BertForMaskedLM", ("expects model type 'bert'", "'llama'")),
])
def test_only_transformers_own_classes(tmp_path: Path, name: str, words: tuple[str, ...]) -> None:
    folder, _ = write_llama(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = [name]
    (folder / "config.json").write_text(json.dumps(config))
    refused(folder, *words)


def test_other_refusals_name_the_folder(tmp_path: Path) -> None:
    folder, _ = write_llama(tmp_path / "wrong", hidden_size=16)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 40}))
    refused(folder, str(folder), "weights do not fit", "mlp")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps(CONFIG))
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    refused(pickled, "pytorch_model.bin holds pickled weights")
    (pickled / "config.json").write_text('{"model_type": "llama", "model_type": "x"}')
    refused(pickled, "duplicate key")
    (pickled / "config.json").write_text(json.dumps({**CONFIG, "num_hidden_layers": 10**6}))
    refused(pickled, "layers")
    (pickled / "config.json").write_text(json.dumps({**CONFIG, "quantization_config": {}}))
    refused(pickled, "quantized")
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, "is a directory", "no config.json")


def test_merged_model_saves_and_reloads(tmp_path: Path) -> None:
    folder, _ = write_llama(tmp_path / "m")
    model = load_model(folder)
    halved = model.with_state({k: v / 2 for k, v in model.state().items()})
    saved = load_model(save_model(halved, tmp_path / "half.safetensors"))
    assert saved.arch["kind"] == "hf" and saved.form == "mal-safetensors"
    assert saved.module.lm_head.weight is saved.module.model.embed_tokens.weight
    with torch.no_grad():
        assert torch.equal(saved.module(ids()), halved.module(ids()))
    again = load_model(save_hf_folder(halved, tmp_path / "half", max_shard_bytes=4000))
    with torch.no_grad():
        assert torch.equal(again.module(ids()), halved.module(ids()))
    with pytest.raises(ModelFileError, match="own input folder"):
        save_hf_folder(model, folder)


def test_cli_inspect_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mal_desktop.cli import main

    folder, _ = write_llama(tmp_path / "m")
    assert main(["inspect", str(folder), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["form"] == "hf-folder" and obj["num_classes"] == 96
    assert any(not s["fixed"] for s in obj["spaces"])  # heads and the stream can move
    # grouped-query attention (2 key/value heads): the key/value heads move with their query
    # heads and the V/O dims inside them; why the Q/K dims do not move reaches the user
    heads = [s["heads"] for s in obj["spaces"] if "heads" in s]
    assert heads and all((h["heads"], h["dim"]) == (2, 4) for h in heads)
    assert all(h["query_heads_per_group"] == 2 for h in heads)  # 4 query heads on 2
    pinned = [p["pinned"] for h in heads for p in h["parts"]]
    assert sum("rotary" in why for why in pinned) == sum(not why for why in pinned) == 2
    # without grouped-query attention the same, with 4 heads
    for kv in (4, 2):
        full, _ = write_llama(tmp_path / f"kv{kv}", num_key_value_heads=kv)
        assert main(["inspect", str(full)]) == 0
        text = capsys.readouterr().out
        assert f"heads P_heads_model.layers.0.self_attn.v_proj: {kv} heads of 4 dims" in text
        assert ("2 query heads per key/value head (their order inside a group may move too)"
                in text) == (kv == 2)
        assert "dims inside a head pinned: combined with a constant that varies along this " \
               "axis (aten.mul.Tensor in model.layers.0.self_attn; e.g. a rotary embedding " \
               "table)" in text


def test_plan_on_folders_assembles_saves_as_shards_and_reloads(tmp_path: Path) -> None:
    from mal_desktop.core.jobs import assemble_job
    from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep
    from mal_desktop.core.progress import run_job

    base, _ = write_llama(tmp_path / "base", seed=0)
    donor, _ = write_llama(tmp_path / "donor", seed=1)
    layer = "model.layers.1.mlp.down_proj"
    plan = AssemblyPlan(base=str(base), zoo={"d": str(donor)},
                        steps=[AssemblyStep("d", layer, layer, 0.5, "chain")])
    result = run_job(assemble_job(plan, out=tmp_path / "merged.safetensors"))
    merged = load_model(result.out)
    assert merged.arch["kind"] == "hf" and merged.metadata["kind"] == "assembly"
    a, b = load_model(base).state(), load_model(donor).state()
    assert not torch.equal(merged.state()[f"{layer}.weight"], a[f"{layer}.weight"])
    assert torch.equal(merged.state()["model.layers.0.mlp.up_proj.weight"],
                       a["model.layers.0.mlp.up_proj.weight"])  # other layers: the base's
    folder = save_hf_folder(merged, tmp_path / "merged-folder", max_shard_bytes=3000)
    assert len(list(folder.glob("model-*.safetensors"))) >= 3
    again = load_model(folder)
    assert all(torch.equal(again.state()[k], v) for k, v in merged.state().items())
    with torch.no_grad():
        assert torch.equal(again.module(ids()), merged.module(ids()))


@pytest.mark.parametrize("shard_bytes", [None, 3000])
def test_a_merge_of_folders_saved_as_a_folder_loads_in_transformers(
        tmp_path: Path, shard_bytes: int | None, capsys: pytest.CaptureFixture) -> None:
    """``--out NAME`` with a Hugging Face base writes a model folder (config, tokenizer,
    weights) that transformers' own ``from_pretrained`` loads to the same logits, and that mal
    reopens with the merge's provenance."""
    from mal_desktop.core.jobs import assemble_job
    from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep
    from mal_desktop.core.progress import run_job

    base, _ = write_llama(tmp_path / "base", seed=0)
    (base / "tokenizer.json").write_text('{"model": {"type": "BPE"}}', encoding="utf-8")
    # what tells a user of the merge its special tokens, chat template and generation defaults
    companions = {"tokenizer_config.json": '{"bos_token": "<s>", "model_max_length": 2048}',
                  "generation_config.json": '{"bos_token_id": 1, "max_length": 2048}'}
    for name, text in companions.items():
        (base / name).write_text(text, encoding="utf-8")
    donor, _ = write_llama(tmp_path / "donor", seed=1)
    layer = "model.layers.1.mlp.down_proj"
    plan = AssemblyPlan(base=str(base), zoo={"d": str(donor)},
                        steps=[AssemblyStep("d", layer, layer, 0.5, "chain")])
    merged = run_job(assemble_job(plan)).model
    folder = save_model(merged, tmp_path / "merged", max_shard_bytes=shard_bytes or 2**40)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "tokenizer.json"} <= names
    assert all((folder / n).read_text() == text for n, text in companions.items())
    assert transformers.GenerationConfig.from_pretrained(folder).max_length == 2048
    assert ("model.safetensors" in names) == (shard_bytes is None)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    with torch.no_grad():
        assert torch.allclose(hf(ids()).logits, merged.module(ids()), atol=1e-6)
    again = load_model(folder)
    assert again.form == "hf-folder" and again.metadata["kind"] == "assembly"
    from mal_desktop.cli import main

    assert main(["inspect", str(folder)]) == 0
    assert f"assembled by mal_desktop {again.metadata['created_at']}: 1 step into base " \
           f"{base}" in capsys.readouterr().out
    assert again.metadata["plan"]["steps"][0]["base_layer"] == layer
    assert all(torch.equal(again.state()[k], v) for k, v in merged.state().items())


def test_a_step_between_layouts_is_refused_from_the_headers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A query projection (heads of 8 dims) into an MLP layer cannot be lined up: for large
    models this is found from the headers, before their weights are read (it took 31 s of
    loading at hidden 4096, minutes at 7B). Tiny folders count as large here."""
    from mal_desktop.core import jobs
    from mal_desktop.core.errors import PlanError
    from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep
    from mal_desktop.core.progress import run_job

    base, _ = write_llama(tmp_path / "base", seed=0)
    donor, _ = write_llama(tmp_path / "donor", seed=1)
    plan = AssemblyPlan(base=str(base), zoo={"d": str(donor)}, steps=[
        AssemblyStep("d", "model.layers.0.mlp.down_proj", "model.layers.0.mlp.down_proj"),
        AssemblyStep("d", "model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj")])
    monkeypatch.setattr(jobs, "HEADER_FIRST_PARAMETERS", 0)

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were read before the plan was checked")

    monkeypatch.setattr(jobs, "load_model", no_loading)
    with pytest.raises(PlanError, match=r"step 2 .*their output layouts differ \(model.layers.0."
                                        r"self_attn.q_proj outputs: 16, one copy of its units, 8 "
                                        r"rows per unit; model.layers.0.mlp.up_proj outputs: 24, "
                                        r"one copy of its units\)"):
        run_job(jobs.assemble_job(plan))
    # a plan that fits loads the models once, with the spaces found from the headers
    monkeypatch.undo()
    monkeypatch.setattr(jobs, "HEADER_FIRST_PARAMETERS", 0)
    plan.steps.pop()
    result = run_job(jobs.assemble_job(plan))
    assert result.steps[0].align == "chain"


def test_an_embedding_named_as_a_step_is_refused_as_what_it_is(tmp_path: Path) -> None:
    """It used to read "has no weight layer 'model.embed_tokens'" while the hint beside a
    typo listed it among the layers."""
    from mal_desktop.core.errors import PlanError
    from mal_desktop.core.jobs import assemble_job
    from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep
    from mal_desktop.core.progress import run_job

    base, _ = write_llama(tmp_path / "base", seed=0)
    donor, _ = write_llama(tmp_path / "donor", seed=1)
    plan = AssemblyPlan(base=str(base), zoo={"d": str(donor)}, steps=[AssemblyStep(
        "d", "model.layers.0.mlp.up_proj", "model.embed_tokens")])
    with pytest.raises(PlanError, match="the base's model.embed_tokens is not a linear or conv "
                                        r"layer \(an embedding or a norm, say\)"):
        run_job(assemble_job(plan))


def test_a_norm_without_a_counterpart_is_refused(tmp_path: Path) -> None:
    from mal_desktop.core.errors import PlanError
    from mal_desktop.core.jobs import assemble_job
    from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep
    from mal_desktop.core.progress import run_job

    base, _ = write_llama(tmp_path / "base", seed=0)
    donor, _ = write_llama(tmp_path / "donor", seed=1)
    q = "model.layers.0.self_attn.q_proj"
    plan = AssemblyPlan(base=str(base), zoo={"d": str(donor)}, steps=[AssemblyStep(
        "d", q, q, norms=(("model.layers.0.pre_norm", "model.layers.0.input_layernorm"),))])
    with pytest.raises(PlanError, match="norm model.layers.0.input_layernorm of the base has no "
                                        "counterpart model.layers.0.pre_norm"):
        run_job(assemble_job(plan))


def test_a_user_folder_is_never_replaced_by_a_model_folder(tmp_path: Path) -> None:
    """The one folder writer replaces a folder only when it holds model files alone."""
    from mal_desktop.core.io.hf_write import save_hf_folder

    folder, _ = write_llama(tmp_path / "m")
    model = load_model(folder)
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.tex").write_text("years of work")
    with pytest.raises(ModelFileError, match="exists and is not a model folder"):
        save_hf_folder(model, documents)
    assert (documents / "thesis.tex").read_text() == "years of work"
    # a model folder is replaced in place, atomically
    again = save_hf_folder(model, tmp_path / "copy")
    assert save_hf_folder(model, again) == again
    assert sorted(p.name for p in again.iterdir()) == ["config.json", "model.safetensors"]


def test_opening_a_folder_hashes_nothing_until_its_hash_is_asked_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Like a plain file, a folder is hashed when provenance needs it (content_sha256, a saved
    merge), never when it is opened; each file once per version."""
    from mal_desktop.core.io import hashing
    from mal_desktop.core.io.hf_folder import folder_sha256

    folder, _ = write_llama(tmp_path / "m", shard_bytes=4000)
    (folder / "tokenizer.json").write_text('{"model": {"type": "BPE"}}', encoding="utf-8")
    monkeypatch.setenv("MAL_HASH_CACHE", str(tmp_path / "hashes"))
    monkeypatch.setattr(hashing, "_memo", {})
    hashed: list[str] = []
    real = hashing.file_sha256

    def counting(path, *args, **kwargs):
        hashed.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(hashing, "file_sha256", counting)
    model = load_model(folder)
    assert hashed == []  # opening hashed no file: not the weights, not the tokenizer
    assert model.sha256 is None and "tokenizer" in model.arch
    digest = model.content_sha256()
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert sorted(hashed) == sorted(["config.json", "model.safetensors.index.json",
                                     "tokenizer.json", *shards])
    assert digest == folder_sha256(folder)
    assert model.content_sha256() == digest and len(hashed) == len(shards) + 3  # cached
    # saving a model made from it records the tokenizer's hash, computed then
    merged = model.with_state(model.state())
    assert merged.content_sha256() is None  # made in memory: no file to hash
    out = save_model(merged, tmp_path / "merged.safetensors")
    assert read_header(out).arch["tokenizer_sha256"] == real(folder / "tokenizer.json")
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")
    assert model.content_sha256() != digest  # an edited file is another version


def test_a_block_of_a_permuted_copy_merges_back_with_a_chain_bounded_in_memory(
        tmp_path: Path, monkeypatch) -> None:
    """Merging one block of a permuted copy (query heads reordered inside their groups too) at
    lambda 1 (its layers, and its norms, which the copy has of its own) gives the base with the
    copy's norms put back in the base's order, also when the chain's working copies are over
    the limit and it starts at the block (its residual stream solved from the block's own
    weights), as for a deep block of a 7B model."""
    from mal_desktop.core.graph.discover import discover_spec
    from mal_desktop.core.graph.selftest import random_copy_orders, random_permutations
    from mal_desktop.core.graph.spec import permute_state
    from mal_desktop.core.jobs import assemble_job
    from mal_desktop.core.merge import chains
    from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep
    from mal_desktop.core.merge.blocks import block_steps
    from mal_desktop.core.progress import run_job

    folder, module = write_llama(tmp_path / "base", hidden_size=32, intermediate_size=64,
                                 vocab_size=64)
    base = load_model(folder)
    spec = discover_spec(base)
    # the copy's block 1 has norms of its own: merging the block must bring them, unpermuted
    norms = [f"model.layers.1.{n}.weight" for n in ("input_layernorm", "post_attention_layernorm")]
    own = {k: torch.rand(32, generator=torch.Generator().manual_seed(i)) + 0.5
           for i, k in enumerate(norms)}
    copy = permute_state({**base.state(), **own}, spec, random_permutations(spec, seed=3),
                         random_copy_orders(spec, seed=3))
    config = json.loads((folder / "config.json").read_text())
    write_hf_folder(tmp_path / "copy", copy, config, tied=tie_groups(module))
    layers = [f"model.layers.1.{name}" for name in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    # the block as one drop (merge/blocks.py): its seven layers, in execution order
    steps = block_steps("copy", spec, "model.layers.1", spec, "model.layers.1", lam=1.0,
                        align="chain")
    pre_norms = tuple((m, m) for m in ("model.layers.1.input_layernorm",
                                       "model.layers.1.post_attention_layernorm"))
    assert steps == [AssemblyStep("copy", name, name, 1.0, "chain",
                                  norms=pre_norms if i == 0 else ())
                     for i, name in enumerate(layers)]  # the norms go with q_proj (the stream)
    plan = AssemblyPlan(base=str(folder), zoo={"copy": str(tmp_path / "copy")}, steps=steps)
    x = ids(vocab=64)
    with torch.no_grad():
        expected = base.with_state({**base.state(), **own}).module(x)
    # float32 copies of block 1, base and donor: the chain from block 1 fits, from block 0 not
    block = 8 * sum(v.numel() for k, v in base.state().items() if k.startswith("model.layers.1."))
    for limit in (chains.CHAIN_WORKING_BYTES, int(1.2 * block)):
        monkeypatch.setattr(chains, "CHAIN_WORKING_BYTES", limit)
        result = run_job(assemble_job(plan))
        notes = {step.note for step in result.steps}
        assert len(notes) == 1, notes  # one solve serves the seven steps
        note = notes.pop()
        assert "through model.layers.1.mlp.down_proj serves 7 steps" in note
        assert ("the chain starts at model.layers.1.self_attn.q_proj" in note) == (limit < 2**30)
        merged = result.model.state()
        assert all(torch.allclose(merged[k], v) for k, v in own.items()), limit
        with torch.no_grad():
            assert torch.allclose(result.model.module(x), expected, atol=1e-4), limit


def test_a_plan_step_naming_two_blocks_merges_the_block(tmp_path, capsys) -> None:
    """A plan file could name layers only: a transformer layer had to be written as seven
    steps and their norms by hand (the app's block drop makes them). A step naming two blocks
    now expands to those steps, with the step's lambda and method: the same merged file bit
    for bit as the seven steps written out, and a refusal naming the blocks when they differ."""
    from mal_desktop.cli import main
    from mal_desktop.core.graph.discover import discover_spec
    from mal_desktop.core.merge.blocks import block_steps
    from mal_desktop.core.merge.plan import AssemblyPlan

    base, _ = write_llama(tmp_path / "a", seed=0)
    donor, _ = write_llama(tmp_path / "b", seed=1)
    spec = discover_spec(load_model(base))
    block = {"source": "b", "source_layer": "model.layers.0", "base_layer": "model.layers.1",
             "lambda": 0.3, "method": "ties", "params": {"density": 0.5}}
    written = block_steps("b", spec, "model.layers.0", spec, "model.layers.1", lam=0.3,
                          method="ties", params=(("density", 0.5),))
    plans = {"block.json": {"base": str(base), "zoo": {"b": str(donor)}, "steps": [block]},
             "steps.json": AssemblyPlan(str(base), {"b": str(donor)}, steps=written).to_json()}
    outputs = {}
    for name, doc in plans.items():
        (tmp_path / name).write_text(json.dumps(doc))
        assert main(["assemble", str(tmp_path / name), "--out", str(tmp_path / name[:-5]),
                     "--json", "--quiet"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert len(report["steps"]) == 7
        outputs[name] = load_model(tmp_path / name[:-5]).state()
    a, b = outputs.values()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    block["base_layer"] = "model.layers.1.mlp"  # an attention block into an MLP block
    (tmp_path / "bad.json").write_text(json.dumps(plans["block.json"]))
    assert main(["assemble", str(tmp_path / "bad.json"), "--out", str(tmp_path / "bad")]) != 0
    err = capsys.readouterr().err
    assert "model.layers.0 and model.layers.1.mlp hold different layers" in err
    assert "Traceback" not in err and not (tmp_path / "bad").exists()


def test_a_step_from_another_kind_of_model_is_merged_with_a_note(tmp_path, small_zoo) -> None:
    """An image MLP's layer into a language model's MLP fits by shape and merges; the app's
    drop hint says the donor reads other data, and now so does the step's report (mal
    assemble printed nothing about it)."""
    from mal_desktop.core.jobs import assemble_job
    from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep
    from mal_desktop.core.progress import run_job

    base, _ = write_llama(tmp_path / "lm", seed=0)
    plan = AssemblyPlan(str(base), {"mlp": str(small_zoo.path_of("mlp-w32-s0")),
                                    "lm": str(write_llama(tmp_path / "lm2", seed=1)[0])},
                        steps=[AssemblyStep("mlp", "layers.1", "model.layers.0.mlp.up_proj"),
                               AssemblyStep("lm", "model.layers.0.mlp.down_proj",
                                            "model.layers.0.mlp.down_proj")])
    first, second = run_job(assemble_job(plan)).steps
    assert first.note.endswith("mlp reads images or features, the base token ids (a language "
                               "model): its units learned other features")
    assert "reads" not in second.note


def test_attention_width_cases_say_what_they_count(tmp_path, capsys) -> None:
    """A key projection of 32 <- 16 rows read "out: base wider 4 <- 2" beside "out matched 32":
    heads in one place, their dims in the next. The case now names its unit (heads of 4; a
    query projection's head groups of 8 under grouped-query attention) and the CLI's counts
    are in the same unit."""
    from mal_desktop.cli import main
    from mal_desktop.core.graph.tree import build_layer_tree
    from mal_desktop.core.merge.preflight import check_step

    wide, _ = write_llama(tmp_path / "wide", hidden_size=32, num_attention_heads=8,
                          num_key_value_heads=4)
    narrow, _ = write_llama(tmp_path / "narrow", seed=1)  # 4 query heads, 2 key/value heads
    trees = [build_layer_tree(load_model(p), stats=False) for p in (wide, narrow)]
    attn = "model.layers.0.self_attn."
    cases = {name: check_step(*trees, attn + name, attn + name) for name in
             ("k_proj", "q_proj", "o_proj")}
    assert all(c.ok for c in cases.values())
    assert cases["k_proj"].case_text.startswith("out: base wider 4 <- 2 heads of 4 (zero-pad 2)")
    assert cases["q_proj"].case_text.startswith("out: base wider 4 <- 2 head groups of 8 (")
    assert cases["o_proj"].case_text.endswith("in: base wider 4 <- 2 head groups of 8 "
                                              "(zero-pad 2)")
    steps = [{"source": "n", "source_layer": attn + n, "base_layer": attn + n, "lambda": 0.5}
             for n in ("k_proj", "v_proj", "q_proj", "o_proj")]
    (tmp_path / "plan.json").write_text(json.dumps({"base": str(wide), "zoo": {"n": str(narrow)},
                                                    "steps": steps}))
    assert main(["assemble", str(tmp_path / "plan.json"), "--out", str(tmp_path / "out"),
                 "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "out heads matched 2, padded 2, dropped 0" in lines[1], lines[1]  # k_proj
    assert "out head groups matched 2, padded 2, dropped 0" in lines[3], lines[3]  # q_proj
    assert "out matched 16, padded 16, dropped 0" in lines[4], lines[4]  # o_proj: rows


def test_query_heads_reordered_in_their_groups_are_put_back_and_reported(tmp_path,
                                                                         capsys) -> None:
    """A copy whose query heads are reordered inside their groups (and its spaces permuted):
    chain steps of its query and output projections at lambda 1 give the base's own layers,
    and `mal assemble` says what the alignment did inside the groups."""
    from mal_desktop.cli import main
    from mal_desktop.core.graph.discover import discover_spec
    from mal_desktop.core.graph.selftest import random_copy_orders, random_permutations
    from mal_desktop.core.graph.spec import permute_state

    folder, module = write_llama(tmp_path / "base")
    base = load_model(folder)
    spec = discover_spec(base)
    orders = random_copy_orders(spec, seed=4)
    assert orders and all(bool((o != torch.arange(2)).any(1).all()) for o in orders.values())
    copy = permute_state(base.state(), spec, random_permutations(spec, seed=4), orders)
    write_hf_folder(tmp_path / "copy", copy, json.loads((folder / "config.json").read_text()),
                    tied=tie_groups(module))
    attn = "model.layers.1.self_attn."
    steps = [{"source": "c", "source_layer": attn + n, "base_layer": attn + n, "lambda": 1.0}
             for n in ("q_proj", "o_proj")]
    (tmp_path / "plan.json").write_text(json.dumps({"base": str(folder),
                                                    "zoo": {"c": str(tmp_path / "copy")},
                                                    "steps": steps}))
    assert main(["assemble", str(tmp_path / "plan.json"), "--out", str(tmp_path / "out"),
                 "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "out: query heads reordered inside 2 of 2 key/value head groups" in lines[1], lines[1]
    assert "in: query heads reordered inside 2 of 2 key/value head groups" in lines[2], lines[2]
    merged, state = load_model(tmp_path / "out").state(), base.state()
    for name in ("q_proj", "o_proj"):
        key = f"{attn}{name}.weight"
        assert torch.allclose(merged[key], state[key], atol=1e-6), key

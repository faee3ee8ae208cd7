"""Language models evaluate on text: ``text:PATH`` datasets and Python's own code and docstrings,
tokenised with each model's tokenizer.json, scored per next token (loss, perplexity, accuracy)
in curves, the evaluation matrix and the CLI; and the language demo zoo.

Models are tiny Llama folders written here and zoo models trained for a few dozen steps;
skipped without the optional [hf] extra.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mal_desktop.core.errors import DatasetError
from mal_desktop.core.evaluate.datasets import available_datasets, load_dataset
from mal_desktop.core.evaluate.evaluator import evaluate_model, token_scores
from mal_desktop.core.evaluate.text import split_python_source, token_windows
from mal_desktop.core.io.files import load_model
from mal_desktop.core.io.hf_config import build_module
from mal_desktop.core.io.meta import tie_groups
from mal_desktop.core.io.hf_write import write_hf_folder
from mal_desktop.core.jobs import model_curve_job
from mal_desktop.core.progress import run_job
from mal_desktop.core.toolkit.matrix import eval_matrix_job

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

TEXT = {"a.txt": "The quick brown fox jumps over the lazy dog. " * 30,
        "sub/b.txt": "def add(a, b):\n    return a + b\n\n" * 40}


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> dict[str, Path]:
    """A byte-level BPE tokenizer and two random tiny Llama folders sharing it, plus a folder
    of text files."""
    from mal_desktop.core.zoo.language import train_tokenizer

    root = tmp_path_factory.mktemp("lm")
    text = root / "text"
    for name, body in TEXT.items():
        (text / name).parent.mkdir(parents=True, exist_ok=True)
        (text / name).write_text(body)
    tokenizer = train_tokenizer(list(TEXT.values()), 300, root / "tokenizer.json")
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 300,
              "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 24, "max_position_embeddings": 16,
              "tie_word_embeddings": True}
    out = {"text": text, "tokenizer": tokenizer}
    for seed in (0, 1):
        torch.manual_seed(seed)
        module = build_module(root, config, device="cpu")
        out[f"lm{seed}"] = write_hf_folder(root / f"lm{seed}", module.state_dict(), config,
                                           tokenizer=tokenizer, tied=tie_groups(module))
    bare = root / "no-tokenizer"
    out["bare"] = write_hf_folder(bare, module.state_dict(), config, tied=tie_groups(module))
    return out


def test_text_specs(lm) -> None:
    folder = load_dataset(f"text:{lm['text']}")
    assert folder.text is not None and folder.name == "text"
    assert [name for name, _ in folder.text.test] == ["a.txt", "sub/b.txt"]
    single = load_dataset(f"text:{lm['text'] / 'a.txt'};context=8")
    assert single.text.context == 8 and [n for n, _ in single.text.test] == ["a.txt"]
    assert single.fingerprint() != folder.fingerprint()
    with_tok = load_dataset(f"text:{lm['text']};tokenizer={lm['tokenizer']}")
    assert with_tok.text.tokenizer == lm["tokenizer"]
    for spec, words in [(f"text:{lm['text'] / 'missing.txt'}", "no such text file"),
                        (f"text:{lm['text']};colour=red", "unknown option"),
                        (f"text:{lm['text']};context=1", "unknown option"),
                        (f"text:{lm['text']};tokenizer=/no/such.json", "does not exist")]:
        with pytest.raises(DatasetError, match=words):
            load_dataset(spec)


def test_windows_score_every_next_token_once(lm) -> None:
    data = load_dataset(f"text:{lm['text']}")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(lm["tokenizer"]))
    n_ids = [len(tok.encode(body, add_special_tokens=False).ids) for body in TEXT.values()]
    windows = token_windows(data.text, "test", lm["tokenizer"], 16)
    assert windows.n_tokens == sum(n - 1 for n in n_ids)
    assert windows.inputs.shape[1] == 16 and set(windows.categories) == {"a.txt", "sub/b.txt"}


def test_loss_is_the_models_own_next_token_loss(lm) -> None:
    """Our per-token loss equals transformers' own causal-LM loss on the same window."""
    model = load_model(lm["lm0"])
    data = load_dataset(f"text:{lm['text'] / 'a.txt'}")
    windows = token_windows(data.text, "test", lm["tokenizer"], 16)
    first = windows.inputs[:1]
    labels = torch.cat([first, windows.targets[:1, -1:]], dim=1)  # the window and its next token
    with torch.no_grad():
        hf = type(model.module).forward(model.module, input_ids=labels[:, :-1],
                                        labels=labels[:, :-1], use_cache=False)
        ours = token_scores(model, data)
    # transformers scores tokens 1..15 of the window; ours are tokens 1..16 of the first window
    assert float(hf.loss) == pytest.approx(float(ours.loss[:15].mean()), rel=1e-5)
    result = evaluate_model(model, data)
    assert result.n == windows.n_tokens and result.loss == pytest.approx(ours.loss.mean())
    assert 0.0 <= result.accuracy <= 1.0


def test_a_context_beyond_the_models_positions_is_refused(lm) -> None:
    """context=1000 on a 64-position model scored positions it never saw (perplexity 71 against
    50) without a word; now it is refused, naming the model's positions. Up to them it runs."""
    model = load_model(lm["lm0"])  # max_position_embeddings 16
    with pytest.raises(DatasetError, match=r"context=32 is longer than the 16 positions of "
                                           r"model lm0 \(max_position_embeddings"):
        evaluate_model(model, load_dataset(f"text:{lm['text']};context=32"))
    assert evaluate_model(model, load_dataset(f"text:{lm['text']};context=16")).n > 0


def test_scoring_text_stops_between_batches_when_cancelled(lm) -> None:
    """A batch of a large language model takes seconds, a curve point many batches: Cancel is
    seen between batches, not once the point is done."""
    from cancel_after import CancelAfter

    from mal_desktop.core.progress import Cancelled

    token = CancelAfter(2)
    with pytest.raises(Cancelled):
        evaluate_model(load_model(lm["lm0"]), load_dataset(f"text:{lm['text']}"), batch_size=1,
                       cancel=token)
    assert token.looks == 2  # the first batch ran, the second was not started


def test_curve_endpoints_are_the_models_perplexities(lm) -> None:
    data = f"text:{lm['text']}"
    own = [evaluate_model(load_model(lm[k]), load_dataset(data)).loss for k in ("lm0", "lm1")]
    curve = run_job(model_curve_job(str(lm["lm0"]), str(lm["lm1"]), data, grid=3,
                                    align="weight"))
    assert curve.naive.loss[0] == own[0] and curve.naive.loss[-1] == own[1]
    assert math.exp(curve.naive.loss[0]) == math.exp(own[0])
    assert curve.aligned.loss[0] == own[0]
    # the aligned target is the target with its units permuted: the same function
    assert math.exp(curve.aligned.loss[-1]) == pytest.approx(math.exp(own[1]), rel=1e-5)
    assert curve.dataset == "text" and len(curve.naive.loss) == 3 and curve.per_token


def test_matrix_scores_tokens_per_document(lm, tmp_path) -> None:
    refs = [str(lm["lm0"]), str(lm["lm1"] / "config.json")]
    data = [f"text:{lm['text']}"]
    result = run_job(eval_matrix_job(refs, data, cache_dir=tmp_path,
                                     metrics=["loss", "perplexity", "accuracy"]))
    assert not result.errors and result.computed == 2
    for cell, key in zip(result.cells, ("lm0", "lm1")):
        own = evaluate_model(load_model(lm[key]), load_dataset(data[0]))
        assert cell.metrics["loss"] == pytest.approx(own.loss)
        assert cell.metrics["perplexity"] == pytest.approx(math.exp(own.loss))
        assert set(cell.per_category) == {"a.txt", "sub/b.txt"}
        assert cell.n == own.n
    again = run_job(eval_matrix_job(refs, data, cache_dir=tmp_path,
                                    metrics=["loss", "perplexity"]))
    assert again.cached == 2 and again.computed == 0
    # the default metrics leave out accuracy per token id: the CSV had a column per token
    default = run_job(eval_matrix_job(refs, data, cache_dir=tmp_path))
    assert "per_class_accuracy" not in default.cells[0].metrics
    assert "per_class_accuracy[" not in default.to_csv().splitlines()[0]


def test_tokenizer_comes_from_the_model_or_the_spec(lm) -> None:
    bare = load_model(lm["bare"])
    data = load_dataset(f"text:{lm['text']}")
    with pytest.raises(DatasetError, match="no tokenizer.json.*tokenizer=FILE"):
        evaluate_model(bare, data)
    named = load_dataset(f"text:{lm['text']};tokenizer={lm['tokenizer']}")
    assert evaluate_model(bare, named).n > 0


def test_python_text_datasets() -> None:
    names = available_datasets()
    assert {"python-code", "python-docstrings"} <= set(names)
    code, docs = load_dataset("python-code").text, load_dataset("python-docstrings").text
    assert code.train and code.test and docs.train and docs.test
    assert [n for n, _ in code.test] != [n for n, _ in code.train][:len(code.test)]
    assert not {n for n, _ in code.test} & {n for n, _ in code.train}
    source = '"""Module doc."""\n# a comment\ndef f():\n    """Say hi."""\n    return 1\n'
    only_code, only_docs = split_python_source(source)
    assert "Module doc" not in only_code and "comment" not in only_code and "return 1" in only_code
    assert only_docs.split("\n\n") == ["Module doc.", "Say hi.\n"]


@pytest.fixture(scope="module")
def lm_zoo(tmp_path_factory):
    """The --small language zoo built through the CLI (three width-32 models, 30 steps)."""
    from mal_desktop.cli import main

    out = tmp_path_factory.mktemp("lm-zoo")
    assert main(["zoo", "build", "--language", "--small", "--out", str(out), "--quiet"]) == 0
    return out


def test_language_zoo_folders(lm_zoo, capsys) -> None:
    from mal_desktop.cli import main
    from mal_desktop.core.zoo.build import load_zoo_index

    index = load_zoo_index(lm_zoo)
    assert index.names() == ["llama-w32-s0-code", "llama-w32-s1-code", "llama-w32-s1-docstrings"]
    for info in index.entries:
        folder = index.path_of(info.name)
        model = load_model(folder)
        assert model.arch["class"] == "LlamaForCausalLM" and model.num_classes == 320
        cfg = json.loads((folder / "config.json").read_text())
        assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]  # grouped-query attention
        # trained, not random: well below the perplexity of a uniform guess (320)
        assert math.exp(info.test_loss) < 200
        assert evaluate_model(model, load_dataset(info.dataset)).loss == \
            pytest.approx(info.test_loss, rel=1e-6)
    assert main(["zoo", "list", "--dir", str(lm_zoo), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["models"]
    assert all(m["test_perplexity"] < 200 for m in listed)
    assert main(["inspect", str(folder)]) == 0  # next-token logits, not "320 classes"
    assert "320-token vocabulary" in capsys.readouterr().out.splitlines()[0]


def test_language_zoo_is_deterministic_and_cached(lm_zoo, tmp_path) -> None:
    from mal_desktop.core.io.hashing import file_sha256
    from mal_desktop.core.zoo.language import build_lm_zoo_job, default_lm_zoo

    entry = default_lm_zoo(small=True)[0]
    index = run_job(build_lm_zoo_job(tmp_path, [entry]))
    name = "model.safetensors"
    assert file_sha256(tmp_path / entry.name / name) == file_sha256(lm_zoo / entry.name / name)
    events = []
    run_job(build_lm_zoo_job(tmp_path, [entry]), events.append)
    assert any("cached" in e.message for e in events)
    assert index.entries[0].test_loss == pytest.approx(
        next(e for e in run_job(build_lm_zoo_job(tmp_path, [entry])).entries).test_loss)


def test_cli_evaluate_and_curve_on_text(lm_zoo, capsys) -> None:
    from mal_desktop.cli import main

    a, b = lm_zoo / "llama-w32-s0-code", lm_zoo / "llama-w32-s1-code"
    assert main(["evaluate", str(a), "--data", "python-code", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["perplexity"] == pytest.approx(math.exp(obj["loss"]))
    assert main(["curve", "--base", str(a), "--target", str(b), "--data", "python-code",
                 "--grid", "3", "--align", "none", "--json"]) == 0
    curve = json.loads(capsys.readouterr().out)
    assert curve["naive"]["loss"][0] == pytest.approx(obj["loss"], rel=1e-12)
    # the curve's perplexity endpoint is the model's own perplexity, in JSON and in the table
    assert curve["naive"]["perplexity"][0] == pytest.approx(obj["perplexity"], rel=1e-12)
    assert main(["curve", "--base", str(a), "--target", str(b), "--data", "python-code",
                 "--grid", "3", "--align", "none"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "ppl" in table[0] and f"{obj['perplexity']:.2f}" in table[1]
    assert main(["curve", "--base", str(a), "--target", str(b), "--data", "python-code",
                 "--align", "activation"]) == 1
    assert "needs input samples" in capsys.readouterr().err
    # assembling with the plan's text: the scores read as mal evaluate's (perplexity, tokens)
    plan = lm_zoo / "plan.json"
    k = "model.layers.0.self_attn.k_proj"
    plan.write_text(json.dumps({"base": str(a), "zoo": {"b": str(b)}, "data": "python-code",
                                "steps": [{"source": "b", "source_layer": k, "base_layer": k,
                                           "lambda": 0.0}]}))
    assert main(["assemble", str(plan), "--out", str(lm_zoo / "merged"), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (f"  base on python-code: loss {obj['loss']:.4f}, perplexity "
                        f"{obj['perplexity']:.2f}, next-token accuracy {obj['accuracy']:.2%}")
    assert lines[2] == lines[1].replace("base on", "merged on")  # lambda 0: the base itself


def test_a_language_model_refuses_image_data_by_name(lm, tmp_path) -> None:
    """Images of the model's input length would reshape into its input: the pixel values must
    not reach the embedding as token ids (that was an internal error, shown as a bug)."""
    import numpy as np

    model = load_model(lm["lm0"])
    images = tmp_path / "images.npz"
    np.savez(images, x=np.random.default_rng(0).random((8, *model.input_shape), np.float32),
             y=np.zeros(8, np.int64))
    with pytest.raises(DatasetError, match="lm0 reads token ids.*images holds images"):
        evaluate_model(model, load_dataset(str(images)))
    result = run_job(eval_matrix_job([str(lm["lm0"])], [str(images)], cache_dir=tmp_path))
    assert "reads token ids" in result.cells[0].error


def test_binary_files_and_text_without_its_prefix_are_refused_by_name(tmp_path) -> None:
    binary = tmp_path / "program.txt"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)))
    with pytest.raises(DatasetError, match="program.txt: not a text file .*NUL bytes"):
        load_dataset(f"text:{binary}")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))  # not UTF-8, still text
    assert load_dataset(f"text:{latin}").text is not None
    with pytest.raises(DatasetError, match=f"scored per token with text:{latin}"):
        load_dataset(str(latin))
    with pytest.raises(DatasetError, match=f"text:{tmp_path}"):
        load_dataset(str(tmp_path))


def test_text_for_an_image_model_names_the_mismatch(small_zoo, tmp_path) -> None:
    # not "it has no tokenizer.json", which sent the user looking for one
    (tmp_path / "a.txt").write_text("def f(x):\n    return x + 1\n" * 20)
    model = load_model(small_zoo.path_of("mlp-w32-s0"))
    with pytest.raises(DatasetError, match="reads images or features, not token ids; dataset "
                                           ".* is text"):
        evaluate_model(model, load_dataset(f"text:{tmp_path / 'a.txt'}"))


def test_the_curve_of_a_block_step_sweeps_its_layers_as_the_app_does(lm, tmp_path,
                                                                      capsys) -> None:
    """`mal curve --layers` cannot name a block (a curve's layer pairs carry no norms); a plan
    step naming two blocks can, and `mal curve --plan` sweeps one of its layer steps with the
    ones before it merged, as the app's Run does after a block drop."""
    from mal_desktop.cli import main

    plan = {"base": str(lm["lm0"]), "zoo": {"b": str(lm["lm1"])}, "data": f"text:{lm['text']}",
            "steps": [{"source": "b", "source_layer": "model.layers.0",
                       "base_layer": "model.layers.0", "lambda": 0.5}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    capsys.readouterr()
    assert main(["curve", "--plan", str(tmp_path / "plan.json"), "--grid", "3", "--json",
                 "--quiet"]) == 0
    curve = json.loads(capsys.readouterr().out)
    assert curve["alignment"]["plan_steps"] == 7  # the block's seven layers
    assert curve["alignment"]["steps"][0]["index"] == 6  # the last, by default
    assert all(math.isfinite(v) for v in curve["aligned"]["perplexity"])

"""The language demo zoo: small Llama-style causal language models (RMSNorm, rotary positions,
SwiGLU, grouped-query attention; transformers' ``LlamaForCausalLM``) trained here, in seconds to
a minute each on two CPU cores, on text that ships with Python itself: the standard library's
code and its docstrings (``python-code``, ``python-docstrings``, see ``evaluate.text``).

All models share one byte-level BPE tokenizer (trained with ``tokenizers`` on both corpora's
training text), so any two can be merged and compared on the same tokens. Each model is saved
as a Hugging Face model folder (config.json, model.safetensors, tokenizer.json) that the app and
``mal`` open like any model folder, and ``transformers`` reads with ``from_pretrained``.

The folder holds ``zoo.json`` in the demo zoo's index format (``family`` "llama", ``path`` the
model folder, ``epochs`` the training steps, test accuracy and loss per token), so
``mal zoo list --dir`` and ``zoo:NAME`` references work on it. A model whose folder already
holds its entry hash (recipe, tokenizer and training text included) is not trained again.
Needs the optional ``[hf]`` extra (transformers and tokenizers).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MalError, ModelFileError
from ..evaluate.datasets import load_dataset
from ..evaluate.evaluator import evaluate_model
from ..evaluate.text import load_tokenizer
from ..io.atomic import atomic_write_text
from ..io.hashing import file_sha256
from ..io.hf_config import build_module, hf_arch, input_spec
from ..io.meta import tie_groups
from ..io.hf_folder import WEIGHTS_NAME
from ..io.hf_write import write_hf_folder
from ..io.model import LoadedModel
from ..io.safetensors_io import read_safetensors_header
from ..progress import CancelToken, ProgressEvent, map_events, never_cancelled
from ..user_dirs import user_cache_dir
from .build import INDEX_NAME, INDEX_VERSION, ZooIndex, ZooModelInfo

#: Part of every entry hash: bump it when the recipe changes so old folders are rebuilt.
RECIPE_VERSION = 1
TOKENIZER_NAME = "tokenizer.json"
DATASETS = ("python-code", "python-docstrings")
_META_KEY = "mal_zoo"  # safetensors metadata entry holding the entry and its scores


@dataclass(frozen=True)
class LMEntry:
    """One language model to build.

    name: folder name, e.g. "llama-w128-s0-code". width: hidden size; the MLP is 8/3 of it
    (SwiGLU), heads of 16 dimensions (at least 2 query heads), half as many key/value heads.
    dataset: "python-code" or "python-docstrings". seed: init and batch sampling. steps /
    batch_size / context / lr: the training recipe (AdamW, warm-up then cosine decay).
    """

    name: str
    width: int
    dataset: str = "python-code"
    seed: int = 0
    layers: int = 2
    context: int = 64
    steps: int = 400
    batch_size: int = 16
    lr: float = 3e-3

    def config(self, vocab: int) -> dict[str, Any]:
        """The transformers LlamaConfig of this entry (as config.json holds it)."""
        heads = max(2, self.width // 16)
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": vocab, "hidden_size": self.width,
            "intermediate_size": 8 * -(-self.width * 8 // 3 // 8),
            "num_hidden_layers": self.layers, "num_attention_heads": heads,
            "num_key_value_heads": max(1, heads // 2), "max_position_embeddings": self.context,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "hidden_act": "silu",
            "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
        }

    def entry_hash(self, tokenizer_sha: str, data_fingerprint: str) -> str:
        """Equal hashes mean the same model: the entry, the recipe, the tokenizer and the text."""
        text = json.dumps({"entry": asdict(self), "recipe": RECIPE_VERSION,
                           "tokenizer": tokenizer_sha, "data": data_fingerprint},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _entry(width: int, seed: int, dataset: str = "python-code", **recipe: Any) -> LMEntry:
    kind = dataset.removeprefix("python-")
    return LMEntry(f"llama-w{width}-s{seed}-{kind}", width, dataset, seed, **recipe)


def default_lm_zoo(small: bool = False) -> list[LMEntry]:
    """The language zoo's entries.

    Full: widths 64, 128 and 192 on code; a second seed at width 128 on code (same data,
    different seed) and on docstrings (different data). ``small``: three width-32 models
    trained for a few dozen steps, for tests.
    """
    if small:
        tiny = {"steps": 30, "batch_size": 8, "context": 32}
        return [_entry(32, 0, **tiny), _entry(32, 1, **tiny),
                _entry(32, 1, "python-docstrings", **tiny)]
    return [_entry(64, 0), _entry(128, 0), _entry(128, 1), _entry(128, 1, "python-docstrings"),
            _entry(192, 0)]


def default_lm_zoo_dir() -> Path:
    """Where the language zoo lives: $MAL_LM_ZOO_DIR, else the user cache / mal_desktop/lm-zoo."""
    return user_cache_dir("lm-zoo", "MAL_LM_ZOO_DIR")


def train_tokenizer(texts: Sequence[str], vocab_size: int, path: Path) -> Path:
    """Train a byte-level BPE tokenizer (every byte is a token, so any text encodes) and save
    it as ``path`` (a tokenizer.json), atomically, only when its content changed: retraining
    on the same text gives the same file, so the models built on it stay valid.

    Raises:
        MalError: the tokenizers package is missing.
    """
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise MalError("the language zoo needs the optional Hugging Face support: "
                       "pip install 'mal_desktop[hf]'") from None
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(list(texts), trainer)
    text = tokenizer.to_str(pretty=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return path


def _train_ids(dataset: str, tokenizer: Path) -> torch.Tensor:
    """The training text of ``dataset`` as one stream of token ids."""
    corpus = load_dataset(dataset).text
    assert corpus is not None
    tok = load_tokenizer(tokenizer)
    encoded = tok.encode_batch([text for _, text in corpus.train], add_special_tokens=False)
    return torch.tensor([i for enc in encoded for i in enc.ids], dtype=torch.int64)


def train_lm_job(module: nn.Module, ids: torch.Tensor, *, steps: int, batch_size: int,
                 context: int, lr: float, seed: int, cancel: CancelToken | None = None
                 ) -> Generator[ProgressEvent, None, float]:
    """Train a causal LM in place on random windows of ``ids`` (next-token cross-entropy).

    Deterministic for a seed: batches come from a private generator, and torch runs on one
    thread while training (the thread count is restored after). AdamW, 5% linear warm-up, then
    cosine decay to 10% of ``lr``. Yields stage "train" events every 10 steps (payload
    {"step", "loss"}); checks ``cancel`` at every step. Returns the mean loss of the last 10
    steps. The module is left in eval mode.
    """
    cancel = cancel if cancel is not None else never_cancelled()
    if len(ids) <= context + 1:
        raise MalError(f"{len(ids)} training tokens are too few for windows of {context}")
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)

    def rate(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        done = (step - warm) / max(1, steps - warm)
        return 0.1 + 0.45 * (1.0 + math.cos(math.pi * done))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    threads = torch.get_num_threads()
    recent: list[float] = []
    try:
        torch.set_num_threads(1)  # bit-identical runs: one thread sums in one order
        module.train()
        for step in range(1, steps + 1):
            cancel.raise_if_cancelled()
            starts = torch.randint(0, len(ids) - context - 1, (batch_size,), generator=gen)
            batch = torch.stack([ids[s:s + context + 1] for s in starts.tolist()])
            # grad mode is thread-local: entered here, between the yields
            with torch.enable_grad():
                logits = module(batch[:, :-1])
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                       batch[:, 1:].reshape(-1))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
            recent = (recent + [float(loss.detach())])[-10:]
            if step % 10 == 0 or step == steps:
                mean = sum(recent) / len(recent)
                yield ProgressEvent("train", step / steps, f"step {step}/{steps} loss {mean:.3f}",
                                    {"step": step, "loss": mean})
    finally:
        torch.set_num_threads(threads)
        module.eval()
    return sum(recent) / len(recent) if recent else math.nan


def _cached_info(entry: LMEntry, folder: Path, entry_hash: str) -> ZooModelInfo | None:
    """The index line of a folder that already holds ``entry_hash``, else None."""
    try:
        meta = read_safetensors_header(folder / WEIGHTS_NAME).metadata.get(_META_KEY)
        info = json.loads(meta) if meta else None
    except (ModelFileError, OSError, ValueError):
        return None  # missing or foreign: rebuilt (the folder is replaced whole)
    if not isinstance(info, dict) or info.get("entry_hash") != entry_hash:
        return None
    try:
        return ZooModelInfo(entry.name, entry.name, "llama", dict(info["config"]), entry.dataset,
                            entry.seed, entry.steps, float(info["test_accuracy"]),
                            float(info["test_loss"]), entry_hash)
    except (KeyError, TypeError, ValueError):
        return None


def _index_json(infos: Sequence[ZooModelInfo]) -> str:
    doc = {"version": INDEX_VERSION, "kind": "language",
           "entries": [asdict(i) for i in infos]}
    return json.dumps(doc, indent=1, sort_keys=True, allow_nan=True) + "\n"


def _check(entries: Sequence[LMEntry]) -> None:
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise MalError(f"language zoo entries have duplicate names: "
                       f"{', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    for e in entries:
        if e.dataset not in DATASETS:
            raise MalError(f"language zoo entry {e.name}: dataset must be one of "
                           f"{', '.join(DATASETS)}, not {e.dataset!r}")


def build_lm_zoo_job(out_dir: Path, entries: Sequence[LMEntry] | None = None,
                     cancel: CancelToken | None = None, vocab_size: int | None = None
                     ) -> Generator[ProgressEvent, None, ZooIndex]:
    """Train the tokenizer and the language models ``entries`` (default :func:`default_lm_zoo`)
    into ``out_dir``, one Hugging Face model folder each, with ``zoo.json`` rewritten after every
    model so an interrupted build keeps what it finished.

    vocab_size: of the shared tokenizer (default 512; 320 when every entry is tiny).
    Yields stage "zoo" events (fraction over all training steps). Returns the ZooIndex.
    Raises MalError for duplicate names, an unknown dataset or missing [hf] packages; Cancelled.
    """
    cancel = cancel if cancel is not None else never_cancelled()
    entries = list(default_lm_zoo() if entries is None else entries)
    _check(entries)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if vocab_size is None:
        vocab_size = 320 if all(e.width <= 32 for e in entries) else 512
    yield ProgressEvent("zoo", 0.0, "training the tokenizer")
    texts = [text for name in DATASETS for _, text in load_dataset(name).text.train]
    tokenizer = train_tokenizer(texts, vocab_size, out_dir / TOKENIZER_NAME)
    tok_sha = file_sha256(tokenizer)
    total = max(1, sum(e.steps for e in entries))
    done = 0
    infos: list[ZooModelInfo] = []
    for k, entry in enumerate(entries, start=1):
        cancel.raise_if_cancelled()
        where = f"{entry.name} ({k}/{len(entries)})"
        data = load_dataset(entry.dataset)
        entry_hash = entry.entry_hash(tok_sha, data.fingerprint())
        info = _cached_info(entry, out_dir / entry.name, entry_hash)
        if info is None:
            info = yield from _train_entry(entry, out_dir, tokenizer, entry_hash, where,
                                           done / total, entry.steps / total, cancel)
            message = f"trained {where}: test perplexity {math.exp(info.test_loss):.1f}"
        else:
            message = f"cached {where}"
        infos.append(info)
        atomic_write_text(out_dir / INDEX_NAME, _index_json(infos))
        done += entry.steps
        yield ProgressEvent("zoo", done / total, message,
                            {"name": entry.name, "test_loss": info.test_loss})
    return ZooIndex(tuple(infos), out_dir)


def _train_entry(entry: LMEntry, out_dir: Path, tokenizer: Path, entry_hash: str, where: str,
                 start: float, share: float, cancel: CancelToken
                 ) -> Generator[ProgressEvent, None, ZooModelInfo]:
    """Job: build ``entry`` from its seed, train it, save its folder, score it on test text."""
    vocab = load_tokenizer(tokenizer).get_vocab_size()
    tok_sha = file_sha256(tokenizer)
    config = entry.config(vocab)
    ids = _train_ids(entry.dataset, tokenizer)
    torch.manual_seed(entry.seed)
    module = build_module(out_dir / entry.name, config, device="cpu")

    def as_zoo(event: ProgressEvent) -> ProgressEvent:
        return ProgressEvent("zoo", start + share * event.fraction,
                             f"training {where}: {event.message}",
                             {"name": entry.name, **event.payload})

    train_loss = yield from map_events(
        train_lm_job(module, ids, steps=entry.steps, batch_size=entry.batch_size,
                     context=entry.context, lr=entry.lr, seed=entry.seed, cancel=cancel), as_zoo)
    cancel.raise_if_cancelled()
    folder = out_dir / entry.name
    input_shape, num_classes, input_dtype, id_range = input_spec(folder, module, config)
    # the model as the folder will open (same architecture record, same input length)
    model = LoadedModel(module, hf_arch("LlamaForCausalLM", config, tokenizer, tok_sha),
                        input_shape, num_classes, input_dtype=input_dtype, input_range=id_range)
    result = evaluate_model(model, load_dataset(entry.dataset))
    meta = {"entry": asdict(entry), "entry_hash": entry_hash, "config": config,
            "test_loss": result.loss, "test_accuracy": result.accuracy,
            "train_loss": train_loss}  # no times: the same entry gives the same bytes
    # the scores go into the header, so a later build reuses the folder as it is
    write_hf_folder(folder, module.state_dict(), config, tokenizer=tokenizer,
                    tied=tie_groups(module), metadata={_META_KEY: json.dumps(meta)})
    return ZooModelInfo(entry.name, entry.name, "llama", config, entry.dataset, entry.seed,
                        entry.steps, result.accuracy, result.loss, entry_hash)

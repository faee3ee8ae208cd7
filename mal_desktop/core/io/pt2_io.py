"""torch.export programs (.pt2): a safety check of the archive, loading, and what the engine needs
to know about a program (input shape, classes, a runnable module).

What torch 2.13's ``torch.export.load`` trusts (read in torch/export/__init__.py,
torch/export/pt2_archive/_package.py and torch/_export/serde/serialize.py), and how each is
guarded here before torch sees the bytes:

1. The example inputs (``data/sample_inputs/<model>.pt``) go through
   ``serialize.deserialize_torch_artifact``, which tries ``torch.load(weights_only=True)`` and, when
   that fails, *falls back to* ``torch.load(weights_only=False)``: a crafted .pt2 runs arbitrary
   code on load (verified: an archive whose sample inputs pickle an ``os.system`` call executes
   it). Guard: the same bytes must load with ``weights_only=True`` here first.
2. Weights or tensor constants flagged ``use_pickle`` in the payload configs are read with
   ``torch.load(weights_only=False)``; "opaque" constants with ``pickle.loads``; "custom_obj"
   constants with the TorchScript unpickler. Guard: refuse any pickled entry.
3. Legacy layouts (``data/weights/<model>.pt``, or the pre-2.7 zip with a top-level "version"
   member) are deserialized through the same fallback. Guard: refuse them; require
   ``archive_format`` == "pt2" and the current ``archive_version``, with every member under one
   root folder (so the legacy branch, reached when the new loader raises, cannot find its
   top-level "version" member).
4. Symbolic shape expressions (``expr_str`` in models/<model>.json) are parsed with
   ``sympy.sympify``, which calls ``eval`` (verified: an ``__import__('os').system(...)`` expression
   runs). Guard: every expression must tokenize to whitelisted sympy / torch sympy names, symbol
   names, numbers and arithmetic - no attribute access, subscripts or other names.
5. ``data/aotinductor/`` holds compiled shared libraries that would be loaded into the process.
   Guard: refuse.
6. Graph targets are resolved by ``getattr`` walks from ``torch``, ``operator`` and ``math``, so a
   graph could name e.g. ``torch.load``. torch's own verifier refuses such targets for the default
   (ATen) dialect; as a defence that does not depend on the dialect, every call must also pass
   ``check_program``: an operator overload, a higher-order operator or a symbolic-shape helper.

The file is read once into memory; the check, the hash and torch all use those same bytes, so the
file cannot change between being checked and being loaded.
"""

from __future__ import annotations

import io
import json
import re
import tokenize
import types
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import nn

from ..errors import ModelFileError
from .hashing import bytes_sha256

# sympy constructors that srepr() writes for shape expressions, plus boolean / comparison forms.
_SYMPY_NAMES = frozenset("""
    Symbol Dummy Integer Rational Float Add Mul Pow Mod Max Min floor ceiling Abs sign Piecewise
    ExprCondPair Eq Ne Lt Le Gt Ge Equality Unequality StrictLessThan StrictGreaterThan LessThan
    GreaterThan And Or Not BooleanTrue BooleanFalse true false True False oo zoo nan Infinity
    NegativeInfinity NaN One Zero NegativeOne Half IntInfinity NegativeIntInfinity
""".split())
_KEYWORDS = frozenset("""
    algebraic antihermitian commutative complex composite even extended_negative
    extended_nonnegative extended_nonpositive extended_nonzero extended_positive extended_real
    finite hermitian imaginary infinite integer irrational negative noninteger nonnegative
    nonpositive nonzero odd polar positive prime rational real transcendental zero precision
""".split())
_SYMBOL_RE = re.compile(r"^[a-z]{1,4}\d+$")  # torch's shape symbols: s0, u3, ps12, ...
_STRING_RE = re.compile(r"""^(['"])([A-Za-z_]\w*|[-+]?[0-9.]+([eE][-+]?\d+)?)\1$""")
_OPS = frozenset("( ) , = + - * / % < > <= >= == !=".split())


def _torch_sympy_names() -> frozenset[str]:
    from torch.utils._sympy import functions

    return frozenset(getattr(functions, "__all__", ()))


def _check_expr(path: Path, expr: str) -> None:
    """Refuse a shape expression that could do more than build a sympy expression when eval'd."""
    allowed = _SYMPY_NAMES | _KEYWORDS | _torch_sympy_names()
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(expr).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        tokens = None
    ok = tokens is not None
    for tok in tokens or ():
        if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.NUMBER):
            continue
        if tok.type == tokenize.NAME and (tok.string in allowed or _SYMBOL_RE.match(tok.string)):
            continue
        if tok.type == tokenize.STRING and _STRING_RE.match(tok.string):
            continue
        if tok.type == tokenize.OP and tok.string in _OPS:
            continue
        ok = False
        break
    if not ok:
        shown = expr if len(expr) <= 60 else expr[:57] + "..."
        raise ModelFileError(path, f"refusing to load: the program holds a shape expression that "
                                   f"is not plain arithmetic ({shown!r}); torch would eval it")


def _expr_strings(node: Any) -> list[str]:
    found: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "expr_str" and isinstance(value, str):
                    found.append(value)
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _check_payload_config(path: Path, raw: bytes, kind: str) -> None:
    try:
        config = json.loads(raw.decode("utf-8"))["config"]
        entries = list(config.items())
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise ModelFileError(path, f"corrupt .pt2 archive: unreadable {kind} config") from None
    for fqn, meta in entries:
        if not isinstance(meta, dict):
            raise ModelFileError(path, f"corrupt .pt2 archive: bad {kind} entry {fqn!r}")
        name = str(meta.get("path_name", ""))
        if meta.get("use_pickle") or (kind == "constants" and not name.startswith("tensor_")):
            raise ModelFileError(path, f"refusing to unpickle: {kind[:-1]} {fqn} is stored as a "
                                       "pickled Python object, which could run code")


def inspect_pt2_archive(path: Path, data: bytes) -> None:
    """Refuse a .pt2 archive that would make ``torch.export.load`` run code (see module doc).

    Parameters:
        path: the file (named in errors).
        data: its complete bytes.
    Raises:
        ModelFileError: not a zip, not a current torch.export archive, or any unsafe content.
    """
    from torch.export.pt2_archive import constants as pt2

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ModelFileError(path, "not a zip archive (.pt2 files are written by "
                                   "torch.export.save)") from None
    if len(set(names)) != len(names):
        raise ModelFileError(path, "malformed .pt2 archive: duplicate member names")
    roots = {PurePosixPath(n).parts[0] if "/" in n else "" for n in names}
    if len(roots) != 1 or "" in roots:
        raise ModelFileError(path, "not a torch.export program archive (members must share one "
                                   "root folder)")
    root = roots.pop()
    rel = {n[len(root) + 1:]: n for n in names}

    def read(name: str) -> bytes:
        return archive.read(rel[name])

    if rel.get(pt2.ARCHIVE_FORMAT_PATH) is None or read(pt2.ARCHIVE_FORMAT_PATH) != \
            pt2.ARCHIVE_FORMAT_VALUE.encode():
        raise ModelFileError(path, "not a torch.export program archive (no archive_format "
                                   "'pt2'; files from torch < 2.7 must be re-saved with "
                                   "torch.export.save)")
    if rel.get(pt2.ARCHIVE_VERSION_PATH) is None or read(pt2.ARCHIVE_VERSION_PATH) != \
            pt2.ARCHIVE_VERSION_VALUE.encode():
        version = torch.__version__.split("+")[0]
        raise ModelFileError(path, "unsupported .pt2 archive version; re-save it with "
                                   f"torch.export.save from torch {version}")
    for name in rel:
        if name.startswith(pt2.AOTINDUCTOR_DIR):
            raise ModelFileError(path, "refusing to load: the archive contains AOTInductor "
                                       "compiled native code")
        if name.startswith((pt2.WEIGHTS_DIR, pt2.CONSTANTS_DIR)) and name.endswith(".pt"):
            raise ModelFileError(path, "refusing to unpickle: the archive stores weights in the "
                                       "legacy pickle layout; re-save it with torch.export.save")

    # Model names are derived exactly as torch derives them (every member under models/, the
    # "models/{}.json" prefix and suffix cut off), so each program torch will load is checked.
    prefix, suffix = pt2.MODELS_FILENAME_FORMAT.split("{}")
    models = {n[len(prefix):len(n) - len(suffix)]: n for n in rel if n.startswith(prefix)}
    if "model" not in models:
        raise ModelFileError(path, "not a torch.export program archive (no models/model.json)")
    for model, member in models.items():
        for kind, fmt in (("weights", pt2.WEIGHTS_CONFIG_FILENAME_FORMAT),
                          ("constants", pt2.CONSTANTS_CONFIG_FILENAME_FORMAT)):
            name = fmt.format(model)
            if name not in rel:
                raise ModelFileError(path, f"corrupt .pt2 archive: {name} is missing")
            _check_payload_config(path, read(name), kind)
        sample = pt2.SAMPLE_INPUTS_FILENAME_FORMAT.format(model)
        if sample not in rel:
            raise ModelFileError(path, f"corrupt .pt2 archive: {sample} is missing")
        sample_bytes = read(sample)
        if sample_bytes:
            try:
                torch.load(io.BytesIO(sample_bytes), map_location="cpu", weights_only=True)
            except Exception:
                raise ModelFileError(path, "refusing to unpickle: the program's example inputs "
                                           "are not tensor-only (torch.export.load would unpickle "
                                           "them unsafely)") from None
        try:
            program_json = json.loads(read(member))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelFileError(path, f"corrupt .pt2 archive: {member} is not valid "
                                       "JSON") from None
        for expr in _expr_strings(program_json):
            _check_expr(path, expr)


_SYM_FUNCS = frozenset(getattr(torch, n) for n in (
    "sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt", "sym_sum")
    if hasattr(torch, n))


def _allowed_target(target: Any) -> bool:
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket,
                           torch._ops.HigherOrderOperator)):
        return True
    try:
        if target in _SYM_FUNCS:
            return True
    except TypeError:  # unhashable
        return False
    return callable(target) and getattr(target, "__module__", None) in ("_operator", "operator",
                                                                          "math")


def _training_arg(node: torch.fx.Node) -> bool:
    """Whether an operator call runs in training mode (batch statistics, active dropout)."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return False
    for i, arg in enumerate(schema.arguments):
        if arg.name in ("training", "train"):
            value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name, False)
            if value is True:
                return True
    return False


def check_program(path: Path, program: Any) -> None:
    """Refuse programs mal_desktop cannot use safely and exactly.

    Raises:
        ModelFileError: a call that is not a tensor / shape operator, a training-mode program
            (updates buffers or runs batch-norm / dropout in training mode), or not exactly one
            input tensor and one output tensor.
    """
    for gm in program.graph_module.modules():
        if not isinstance(gm, torch.fx.GraphModule):
            continue
        for node in gm.graph.nodes:
            if node.op in ("call_method", "call_module"):
                raise ModelFileError(path, f"refusing to load: the program's node {node.name} "
                                           f"is a {node.op}, which export never writes")
            if node.op != "call_function":
                continue
            if not _allowed_target(node.target):
                raise ModelFileError(path, f"refusing to load: the program calls "
                                           f"{getattr(node.target, '__name__', node.target)!s}, "
                                           "which is not a tensor operator")
            if _training_arg(node):
                raise ModelFileError(path, f"the program was exported in training mode "
                                           f"({node.target} runs with training=True); export the "
                                           "model after model.eval()")
    signature = program.graph_signature
    if signature.buffers_to_mutate:
        first = next(iter(signature.buffers_to_mutate.values()))
        raise ModelFileError(path, f"the program updates buffer {first} when it runs (exported in "
                                   "training mode?); export the model after model.eval()")
    if len(signature.user_inputs) != 1:
        raise ModelFileError(path, f"the program takes {len(signature.user_inputs)} inputs; "
                                   "mal_desktop needs models with one input tensor")
    if len(signature.user_outputs) != 1:
        raise ModelFileError(path, f"the program returns {len(signature.user_outputs)} outputs; "
                                   "mal_desktop needs models returning one logits tensor")


def _user_input_node(program: Any) -> torch.fx.Node:
    name = program.graph_signature.user_inputs[0]
    return next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)


def program_input_shape(path: Path, program: Any) -> tuple[int, ...]:
    """Per-sample input shape: the first example input without its batch axis, or else the
    input placeholder's recorded shape.

    Raises:
        ModelFileError: no shape is recorded, or it is dynamic beyond the batch axis.
    """
    example = program.example_inputs
    if example and example[0] and isinstance(example[0][0], torch.Tensor):
        shape: tuple[Any, ...] = tuple(example[0][0].shape)
    else:
        val = _user_input_node(program).meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise ModelFileError(path, "the program records no input shape")
        shape = tuple(val.shape)
    if len(shape) < 2 or not all(isinstance(s, int) for s in shape[1:]):
        raise ModelFileError(path, f"the program's input shape {shape} must be (batch, ...) with "
                                   "a static per-sample shape")
    return tuple(int(s) for s in shape[1:])


def program_num_classes(path: Path, program: Any) -> int:
    """Size of the last axis of the program's output.

    Raises:
        ModelFileError: the output is not a tensor of static width.
    """
    output = next(n for n in program.graph.nodes if n.op == "output")
    first = output.args[0][0] if isinstance(output.args[0], (tuple, list)) else output.args[0]
    val = first.meta.get("val") if isinstance(first, torch.fx.Node) else None
    if not isinstance(val, torch.Tensor) or val.ndim < 2 or not isinstance(val.shape[-1], int):
        raise ModelFileError(path, "the program's output is not a (batch, ..., classes) tensor")
    return int(val.shape[-1])


def program_batch_size(program: Any) -> int | None:
    """The batch size a program was exported with when that size is fixed, ``None`` when the
    batch axis is dynamic. A program with a fixed batch size only runs on batches of that size."""
    val = _user_input_node(program).meta.get("val")
    if isinstance(val, torch.Tensor) and val.ndim and isinstance(val.shape[0], int):
        return int(val.shape[0])
    return None


def _eval_only_train(self: nn.Module, mode: bool = True) -> nn.Module:
    if mode:
        raise NotImplementedError("an exported program runs as it was exported; it cannot be "
                                  "switched to training mode")
    return nn.Module.train(self, False)


def program_module(program: Any) -> nn.Module:
    """The program as a runnable module in eval mode.

    ``ExportedProgram.module()`` makes ``train()`` and ``eval()`` raise. Programs reaching here
    passed ``check_program`` (no training-mode ops), so ``eval()`` is made a harmless no-op on the
    graph and ``train()`` keeps raising: callers can treat every LoadedModel alike.
    """
    module = program.module()
    module.__dict__.pop("eval", None)
    module.train = types.MethodType(_eval_only_train, module)
    return module.eval()


def read_pt2(path: Path) -> tuple[Any, str]:
    """Check and load a .pt2 file.

    Parameters:
        path: an existing .pt2 file (read once, read-only).
    Returns:
        (the ExportedProgram, the sha256 of the file's bytes).
    Raises:
        ModelFileError: unsafe or unsupported archive, a deserialization failure, or a program
            ``check_program`` refuses.
    """
    data = path.read_bytes()
    inspect_pt2_archive(path, data)
    try:
        program = torch.export.load(io.BytesIO(data))
    except Exception as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise ModelFileError(path, f"cannot load the program: {type(exc).__name__}: "
                                   f"{lines[0] if lines else ''}") from None
    check_program(path, program)
    return program, bytes_sha256(data)

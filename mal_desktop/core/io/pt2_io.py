"""torch.export programs (.pt2): our own reader (never ``torch.export.load``), the checks a
program must pass, and what the engine needs to know about one (input shape, classes, a runnable
module).

The threat (docs/threat_model.md): a .pt2 file is untrusted data. ``torch.export.load`` would run
code from it in several ways (unpickled example inputs and flagged weights, shape expressions
parsed with ``eval``, guard code and generated module code built from strings in the file), so
``read_pt2`` never calls it, nor ``torch.load``, ``pickle``, ``eval`` or ``exec`` on the file's
content:

1. ``pt2_archive``: the zip is checked as hostile input (names, layout, sizes, zip bombs, JSON
   depth; example inputs are parsed for their pickle opcodes and never unpickled).
2. ``pt2_schema``: weights and constants are read from raw bytes with ``torch.frombuffer``;
   pickled entries are refused; names, targets, shape expressions and guards are checked.
3. ``pt2_program``: the graph is rebuilt with names we generate, targets from an allowlist, and
   shapes computed on fake tensors; the result is a real ``torch.export.ExportedProgram``.
4. ``check_program`` (here) refuses programs mal_desktop cannot use exactly (training mode,
   several inputs, no output) and re-checks every call target. A program may return several
   tensors (e.g. ``(logits, features)``): its module returns them as a tuple, and which one is
   the logits is the caller's choice (``program_num_classes(..., output=N)``).

The file is read once into memory; the checks, the hash and the tensors all use those same
bytes, so the file cannot change between being checked and being loaded.
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelFileError
from .hashing import bytes_sha256
from .pt2_archive import Pt2Archive
from .pt2_program import build_program
from .pt2_schema import read_payloads
from .state_dict_io import check_weight_dtypes

__all__ = ["read_pt2", "read_pt2_bytes", "program_from_bytes", "check_program",
           "program_input_shape", "program_num_classes", "program_outputs",
           "program_output_shapes", "check_output_choice", "program_batch_size",
           "program_module"]


_SYM_FUNCS = frozenset(getattr(torch, n) for n in (
    "sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt", "sym_sum")
    if hasattr(torch, n))


def _allowed_target(target: Any) -> bool:
    """The second gate on call targets (the reader's allowlist is the first): an operator
    overload, a symbolic-size helper, or an ``operator`` / ``math`` function. Higher-order
    operators (which call subgraphs or callables) are not allowed."""
    if isinstance(target, torch._ops.OpOverload):
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


def _written_input(node: torch.fx.Node) -> torch.fx.Node | None:
    """A placeholder (weight, buffer or input) the call writes to in place, if any."""
    schema = getattr(node.target, "_schema", None)
    for i, arg in enumerate(schema.arguments if schema is not None else ()):
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
        if isinstance(value, torch.fx.Node) and value.op == "placeholder":
            return value
    return None


def check_program(path: Path, program: Any) -> None:
    """Refuse programs mal_desktop cannot use safely and exactly.

    Raises:
        ModelFileError: a call that is not a tensor / shape operator, a training-mode program
            (updates buffers or runs batch-norm / dropout in training mode), not exactly one
            input tensor, or no output tensor (several are allowed: see ``program_outputs``).
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
            written = _written_input(node)
            if written is not None:
                signature = program.graph_signature
                name = (signature.inputs_to_buffers.get(written.name)
                        or signature.inputs_to_parameters.get(written.name) or "its input")
                raise ModelFileError(path, f"the program updates {name} in place when it runs "
                                           f"({node.target}; exported in training mode?); export "
                                           "the model after model.eval()")
    signature = program.graph_signature
    if signature.buffers_to_mutate:
        first = next(iter(signature.buffers_to_mutate.values()))
        raise ModelFileError(path, f"the program updates buffer {first} when it runs (exported in "
                                   "training mode?); export the model after model.eval()")
    if len(signature.user_inputs) != 1:
        raise ModelFileError(path, f"the program takes {len(signature.user_inputs)} inputs; "
                                   "mal_desktop needs models with one input tensor")
    if not signature.user_outputs:
        raise ModelFileError(path, "the program returns nothing; mal_desktop needs models "
                                   "returning a logits tensor")


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


def _user_output_values(program: Any) -> list[Any]:
    """The ``meta["val"]`` of each user output, in the order the program returns them (buffer
    updates, which ``check_program`` refuses anyway, are skipped)."""
    output = next(n for n in program.graph.nodes if n.op == "output")
    outs = list(output.args[0]) if isinstance(output.args[0], (tuple, list)) else [output.args[0]]
    specs = list(program.graph_signature.output_specs)
    return [out.meta.get("val") if isinstance(out, torch.fx.Node) else None
            for i, out in enumerate(outs)
            if i >= len(specs) or specs[i].kind.name == "USER_OUTPUT"]


def program_outputs(program: Any) -> int:
    """How many tensors the program returns (its module returns a tuple when more than one)."""
    return len(_user_output_values(program))


def program_output_shapes(program: Any) -> list[tuple[int | None, ...] | None]:
    """Per user output, its shape without the batch axis (a dynamic size is None; None for an
    output whose shape is not recorded), for telling a user which output is which."""
    shapes: list[tuple[int | None, ...] | None] = []
    for val in _user_output_values(program):
        if not isinstance(val, torch.Tensor) or val.ndim < 1:
            shapes.append(None)
            continue
        shapes.append(tuple(int(s) if isinstance(s, int) else None for s in val.shape[1:]))
    return shapes


def check_output_choice(path: Path, program: Any, output: int | None) -> int:
    """``output`` (None: 0) as the index of one of the program's outputs.

    Raises:
        ModelFileError: not a whole number >= 0, or past the program's last output.
    """
    if output is None:
        return 0
    if isinstance(output, bool) or not isinstance(output, int) or output < 0:
        raise ModelFileError(path, f"output index must be a whole number >= 0, got {output!r}")
    count = program_outputs(program)
    if output >= count:
        if count == 1:
            raise ModelFileError(path, f"the model returns one output; there is no output "
                                       f"{output}")
        raise ModelFileError(path, f"the model returns {count} outputs; there is no output "
                                   f"{output} (outputs are numbered from 0)")
    return output


def program_num_classes(path: Path, program: Any, output: int = 0) -> int:
    """Size of the last axis of the program's output ``output`` (the logits; numbered from 0
    among the tensors it returns).

    Raises:
        ModelFileError: no such output, or it is not a tensor of static width.
    """
    values = _user_output_values(program)
    if not 0 <= output < len(values):
        raise ModelFileError(path, f"the program returns {len(values)} outputs; there is no "
                                   f"output {output}")
    val = values[output]
    which = "output" if len(values) == 1 else f"output {output}"
    if not isinstance(val, torch.Tensor) or val.ndim < 2 or not isinstance(val.shape[-1], int):
        raise ModelFileError(path, f"the program's {which} is not a (batch, ..., classes) tensor")
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


def _private_input_shapes(module: torch.fx.GraphModule) -> None:
    """Give the module's input placeholders symbolic sizes of their own.

    The module checks each call's input against its placeholders' recorded sizes (torch's input
    pre-hook; a program read by us has no exec'd guard function). Those sizes share their
    ShapeEnv with the program's graph, and code that reads the graph with ``int(size)``
    (discovery) specialises the batch symbol there: the module would then accept only the
    export batch. A private ShapeEnv holding the same symbols keeps the check as exported.
    """
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    for node in module.graph.find_nodes(op="placeholder"):
        val = node.meta.get("val")
        if not isinstance(val, FakeTensor) or all(isinstance(d, int) for d in val.shape):
            continue
        env = ShapeEnv()
        sizes: list[Any] = []
        for size in val.shape:
            symbol, hint = getattr(getattr(size, "node", None), "expr", None), \
                getattr(getattr(size, "node", None), "hint", None)
            if isinstance(size, int) or not getattr(symbol, "is_Symbol", False) \
                    or not isinstance(hint, int):
                sizes.append(size if isinstance(size, int) else hint)
                continue
            if symbol not in env.backed_var_to_val:
                env.add_backed_var_to_val(symbol, hint)
            sizes.append(env.create_symintnode(symbol, hint=hint))
        if any(s is None for s in sizes):
            continue
        with FakeTensorMode(shape_env=env):
            node.meta["val"] = torch.empty(sizes, dtype=val.dtype)


def program_module(program: Any) -> nn.Module:
    """The program as a runnable module in eval mode.

    ``ExportedProgram.module()`` makes ``train()`` and ``eval()`` raise. Programs reaching here
    passed ``check_program`` (no training-mode ops), so ``eval()`` is made a harmless no-op on the
    graph and ``train()`` keeps raising: callers can treat every LoadedModel alike.
    """
    module = program.module()
    _private_input_shapes(module)
    module.__dict__.pop("eval", None)
    module.train = types.MethodType(_eval_only_train, module)
    return module.eval()


def read_pt2_bytes(path: Path) -> tuple[bytearray, str]:
    """A .pt2 file's bytes (one read, into a buffer weights can use in place) and their sha256.

    Raises:
        ModelFileError: the file cannot be read or changes size while being read.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = bytearray(size)
            got = f.readinto(data)
            more = f.read(1)
    except OSError as exc:
        raise ModelFileError(path, f"cannot read: {exc.strerror or exc}") from None
    except MemoryError:
        raise ModelFileError(path, "the file is too large to load into memory") from None
    if got != size or more:
        raise ModelFileError(path, "the file changed while it was being read")
    return data, bytes_sha256(data)


def program_from_bytes(path: Path, data: bytearray) -> Any:
    """The checked program held in a .pt2 file's bytes (see the module doc for what is checked
    and how).

    Parameters:
        path: the file, named in errors.
        data: its bytes from ``read_pt2_bytes`` (weights use this buffer in place).
    Returns:
        A ``torch.export.ExportedProgram`` with our own node names and no example inputs.
    Raises:
        ModelFileError: a hostile, unsafe, unsupported or corrupt archive, or a program
            ``check_program`` refuses.
    """
    try:
        archive = Pt2Archive(path, data)
        archive.check_sample_inputs()
        state = read_payloads(archive, "weights")
        constants = read_payloads(archive, "constants")
        tensors = {**state, **constants}
        # parameters must be mergeable floats; integer buffers and constants may stay integers
        check_weight_dtypes(path, tensors, reference={k: v for k, v in tensors.items()
                                                      if not isinstance(v, nn.Parameter)})
        program = build_program(path, archive, state, constants)
        check_program(path, program)
    except ModelFileError:
        raise
    except MemoryError:
        raise ModelFileError(path, "the program is too large to load into memory") from None
    except Exception as exc:  # a crafted file must end in a refusal, never in a crash
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise ModelFileError(path, f"cannot read the program: {type(exc).__name__}: "
                                   f"{lines[0][:160] if lines else ''}") from None
    return program


def read_pt2(path: Path) -> tuple[Any, str]:
    """Check and load a .pt2 file without running anything it holds.

    Parameters:
        path: an existing .pt2 file (read once, read-only).
    Returns:
        (the ExportedProgram, the sha256 of the file's bytes).
    Raises:
        ModelFileError: see ``program_from_bytes``.
    """
    data, sha = read_pt2_bytes(path)
    return program_from_bytes(path, data), sha

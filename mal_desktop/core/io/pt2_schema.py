"""The JSON of a .pt2 program read as hostile input: typed access to its fields, the names it
may use, the shape expressions and guard code it may hold (checked, never evaluated), and its
weights and constants read from raw bytes. ``pt2_program`` builds the graph from these pieces.
"""

from __future__ import annotations

import io
import keyword
import math
import operator
import re
import tokenize
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from ..errors import ModelFileError
from .pt2_archive import Pt2Archive

SCHEMA_MAJOR = 8
#: The most elements one tensor may have (weights, the input and every intermediate value at the
#: exported batch size): 2**31 float32 values are 8 GiB.
MAX_ELEMENTS = 1 << 31
MAX_NODES = 200_000
MAX_DIMS = 64

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_]{1,200}$")
_TARGET = re.compile(r"^torch\.ops\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)"
                     r"\.([A-Za-z_][A-Za-z0-9_]*)$")
_PLAIN_SYMBOL = re.compile(r"^Symbol\('([a-z]{1,4}[0-9]{1,9})'(?:, [a-z_]+=(?:True|False))*\)$")
_TYPE_NAME = re.compile(r"^[A-Za-z_<][A-Za-z0-9_.<>]{0,299}$")
_STACK_KEY = re.compile(r"^[A-Za-z0-9_.\[\]'\"]{1,300}$")
_MODULE_PATH = re.compile(r"^(?:[A-Za-z0-9_]{1,200}(?:\.[A-Za-z0-9_]{1,200})*)?$")

# ScalarType numbers in the schema -> torch dtypes (torch/_export/serde/schema.py).
_DTYPES = {1: torch.uint8, 2: torch.int8, 3: torch.int16, 4: torch.int32, 5: torch.int64,
           6: torch.float16, 7: torch.float32, 8: torch.float64, 9: torch.complex32,
           10: torch.complex64, 11: torch.complex128, 12: torch.bool, 13: torch.bfloat16,
           28: torch.uint16, 29: torch.float8_e4m3fn, 30: torch.float8_e5m2,
           31: torch.float8_e4m3fnuz, 32: torch.float8_e5m2fnuz, 34: torch.uint32,
           35: torch.uint64}
_MEMORY_FORMATS = {1: torch.contiguous_format, 2: torch.channels_last,
                   3: torch.channels_last_3d, 4: torch.preserve_format}
_STRIDED = 7

# Symbolic-size helpers export writes between ATen calls, by their serialized names.
_SYM_TARGETS: dict[str, Any] = {
    **{f"_operator.{name}": getattr(operator, name) for name in (
        "add", "sub", "mul", "floordiv", "truediv", "mod", "pow", "neg", "pos", "eq", "ne",
        "le", "lt", "ge", "gt", "and_", "or_")},
    "math.trunc": math.trunc, "math.ceil": math.ceil, "math.floor": math.floor,
    **{f"torch.{name}": getattr(torch, name) for name in (
        "sym_max", "sym_min", "sym_not", "sym_int", "sym_float", "sym_ite", "sym_sqrt")
       if hasattr(torch, name)},
}

# Argument and return types (as torch's schema prints them) of the ATen operators we run. A string
# argument is accepted only under one of the names below (modes and options): that keeps out
# operators taking file names, messages to print, or TorchScript values.
_ARG_TYPES = frozenset({
    "Tensor", "Optional[Tensor]", "List[Tensor]", "List[Optional[Tensor]]",
    "Optional[List[Optional[Tensor]]]", "int", "Optional[int]", "List[int]",
    "Optional[List[int]]", "float", "Optional[float]", "List[float]", "Optional[List[float]]",
    "bool", "Optional[bool]", "List[bool]", "number", "Optional[number]", "List[number]",
    "complex", "Device", "Optional[Device]", "Optional[Generator]", "str", "Optional[str]"})
_RETURN_TYPES = frozenset({"Tensor", "Optional[Tensor]", "List[Tensor]", "int", "float", "bool",
                           "number"})
_STRING_ARGS = frozenset({"approximate", "rounding_mode", "reduce", "reduction", "mode",
                          "padding_mode", "padding", "side", "equation", "indexing",
                          "interpolation", "norm", "UPLO", "driver", "ord", "p", "assert_msg",
                          "pad_mode", "padding_side"})

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
_GUARD_NAMES = frozenset("""
    L size stride storage_offset numel dim and or not True False math floor ceil trunc abs min
    max Max Min Abs Eq Ne Mod FloorDiv CeilToInt FloorToInt TruncToInt
""".split())
_SYMBOL_RE = re.compile(r"^[a-z]{1,4}\d+$")  # torch's shape symbols: s0, u3, ps12, ...
_STRING_RE = re.compile(r"""^(['"])([A-Za-z_]\w*|[-+]?[0-9.]+([eE][-+]?\d+)?)\1$""")
_OPS = frozenset("( ) , = + - * / % < > <= >= == != ** //".split())
_GUARD_OPS = _OPS | frozenset("[ ] .".split())


def _torch_sympy_names() -> frozenset[str]:
    from torch.utils._sympy import functions

    return frozenset(getattr(functions, "__all__", ()))


def _plain_tokens(text: str, names: frozenset[str], ops: frozenset[str]) -> bool:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return False
    for tok in tokens:
        if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.NUMBER):
            continue
        if tok.type == tokenize.NAME and (tok.string in names or _SYMBOL_RE.match(tok.string)):
            continue
        if tok.type == tokenize.STRING and _STRING_RE.match(tok.string):
            continue
        if tok.type == tokenize.OP and tok.string in ops:
            continue
        return False
    return True


def _check_expr(path: Path, expr: str) -> None:
    """Refuse a shape expression that is not plain sympy arithmetic. Nothing here evaluates it
    (the reader never does); an expression with more in it marks the file as crafted."""
    if not _plain_tokens(expr, _SYMPY_NAMES | _KEYWORDS | _torch_sympy_names(), _OPS):
        shown = expr if len(expr) <= 60 else expr[:57] + "..."
        raise ModelFileError(path, f"refusing to load: the program holds a shape expression that "
                                   f"is not plain arithmetic ({shown!r}); torch would eval it")


def _check_guard(path: Path, guard: Any) -> None:
    """Refuse guard code that is more than a comparison of input sizes; it is never run."""
    if not isinstance(guard, str) or len(guard) > 2000 \
            or not _plain_tokens(guard, _GUARD_NAMES | _SYMPY_NAMES, _GUARD_OPS):
        shown = str(guard)[:57] + ("..." if len(str(guard)) > 57 else "")
        raise ModelFileError(path, f"refusing to load: the program holds guard code that is not "
                                   f"a plain size check ({shown!r}); torch would exec it")


def _expr_strings(node: Any) -> list[str]:
    found: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "expr_str":
                    found.append(value if isinstance(value, str) else repr(value))
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def valid_fqn(name: Any) -> bool:
    """A parameter / buffer / constant name that is safe as an attribute path: dot-separated
    segments of letters, digits and underscores (``layers.0.weight``; a leading digit is how
    ``nn.Sequential`` names its children), no Python keyword, no dunder, nothing a GraphModule
    already has as an attribute."""
    if not isinstance(name, str) or not 0 < len(name) <= 1000:
        return False
    for segment in name.split("."):
        if not _SEGMENT.match(segment) or keyword.iskeyword(segment) \
                or segment.startswith("__") or hasattr(fx.GraphModule, segment):
            return False
    return True


def resolve_target(path: Path, text: Any) -> Any:
    """The callable a node's serialized target names, from the allowlist only (see module doc).

    Raises:
        ModelFileError: anything that is not an ATen operator with plain arguments or one of the
            symbolic-size helpers.
    """
    if not isinstance(text, str):
        raise ModelFileError(path, "corrupt .pt2 program: a node target is not a string")
    if text in _SYM_TARGETS:
        return _SYM_TARGETS[text]
    shown = repr(text[:80])
    if text.startswith("torch.ops.higher_order."):
        raise ModelFileError(path, f"refusing to load: the program calls the higher-order operator "
                                   f"{shown}; mal_desktop runs plain tensor operators only")
    match = _TARGET.match(text)
    if match is None:
        raise ModelFileError(path, f"refusing to load: the program calls {shown}, which is not a "
                                   "tensor operator")
    namespace, op, overload = match.groups()
    if namespace != "aten" or op.startswith("__") or overload.startswith("__"):
        raise ModelFileError(path, f"refusing to load: the program calls {shown}, which is not an "
                                   "ATen operator")
    overload_name = "" if overload == "default" else overload
    schema = next((s for s in torch._C._jit_get_schemas_for_operator(f"aten::{op}")
                   if s.overload_name == overload_name), None)
    if schema is None:
        raise ModelFileError(path, f"refusing to load: the program calls {shown}, which this "
                                   f"torch ({torch.__version__}) does not have")
    for arg in schema.arguments:
        kind = str(arg.type)
        if kind not in _ARG_TYPES or ("str" in kind and arg.name not in _STRING_ARGS):
            raise ModelFileError(path, f"refusing to load: the program calls {shown}, whose "
                                       f"argument {arg.name} ({kind}) mal_desktop does not pass "
                                       "to operators")
    for ret in schema.returns:
        if str(ret.type) not in _RETURN_TYPES:
            raise ModelFileError(path, f"refusing to load: the program calls {shown}, which "
                                       f"returns a {ret.type}")
    target = getattr(getattr(torch.ops.aten, op), overload)  # both exist: the schema says so
    if not isinstance(target, torch._ops.OpOverload) or target._schema.name != f"aten::{op}" \
            or target._schema.overload_name != overload_name:
        raise ModelFileError(path, f"refusing to load: the program calls {shown}, which is not an "
                                   "ATen operator")
    return target


class Reader:
    """Typed access to the decoded JSON: every value is checked before it is used."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, problem: str) -> ModelFileError:
        return ModelFileError(self.path, problem)

    def corrupt(self, what: str) -> ModelFileError:
        return self.error(f"corrupt .pt2 program: {what}")

    def dict(self, value: Any, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.corrupt(f"{what} is not an object")
        return value

    def list(self, value: Any, what: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.corrupt(f"{what} is not a list")
        return value

    def int(self, value: Any, what: str) -> int:
        if type(value) is not int:
            raise self.corrupt(f"{what} is not an integer")
        return value

    def bool(self, value: Any, what: str) -> bool:
        if type(value) is not bool:
            raise self.corrupt(f"{what} is not true or false")
        return value

    def union(self, value: Any, what: str) -> tuple[str, Any]:
        """A schema union: an object with exactly one field."""
        fields = self.dict(value, what)
        if len(fields) != 1:
            raise self.corrupt(f"{what} must have exactly one field")
        return next(iter(fields.items()))

    def name(self, value: Any, what: str) -> str:
        if not isinstance(value, str) or not _IDENT.match(value):
            shown = repr(value)[:60]
            raise self.error(f"refusing to load: the program names {what} {shown}, which is not "
                             "a plain identifier")
        return value

    def fqn(self, value: Any, what: str) -> str:
        if not valid_fqn(value):
            raise self.error(f"refusing to load: the program has a {what} named "
                             f"{repr(value)[:60]}, which is not a dotted name")
        return value

    def dtype(self, value: Any, what: str) -> torch.dtype:
        dtype = _DTYPES.get(value) if type(value) is int else None
        if dtype is None:
            raise self.corrupt(f"{what} has an unknown dtype {value!r}")
        return dtype

    def static_ints(self, value: Any, what: str) -> list[int]:
        out = []
        items = self.list(value, what)
        if len(items) > MAX_DIMS:
            raise self.error(f"refusing to load: {what} lists {len(items)} axes")
        for item in items:
            kind, number = self.union(item, what)
            if kind != "as_int":
                raise self.error(f"refusing to load: {what} is symbolic; weights must have "
                                 "fixed sizes")
            out.append(self.int(number, what))
        return out


def _numel(sizes: list[int] | tuple[int, ...]) -> int:
    n = 1
    for s in sizes:
        n *= s
    return n


def read_payloads(archive: Pt2Archive, kind: str) -> dict[str, torch.Tensor]:
    """Weights (``kind="weights"``) or constants from their raw bytes, as the archive's payload
    config describes them; parameters come back as ``nn.Parameter``.

    Raises:
        ModelFileError: a pickled entry, an unknown dtype or layout, a name that is not a dotted
            identifier, sizes past ``MAX_ELEMENTS``, or a view that does not fit its bytes.
    """
    r = Reader(archive.path)
    config_name = f"data/{kind}/model_{kind}_config.json"
    config = r.dict(r.dict(archive.json(config_name), config_name).get("config"), config_name)
    prefix = "weight_" if kind == "weights" else "tensor_"
    single = kind[:-1]
    bases: dict[str, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for fqn, entry in config.items():
        entry = r.dict(entry, f"{single} {fqn!r}")
        path_name = entry.get("path_name")
        if entry.get("use_pickle") is not False or not isinstance(path_name, str) \
                or not path_name.startswith(prefix):
            raise r.error(f"refusing to unpickle: {single} {str(fqn)[:60]} is stored as a pickled "
                          "Python object, which could run code")
        r.fqn(fqn, single)
        meta = r.dict(entry.get("tensor_meta"), f"{single} {fqn} tensor_meta")
        what = f"{single} {fqn}"
        dtype = r.dtype(meta.get("dtype"), what)
        if meta.get("layout") != _STRIDED:
            raise r.error(f"refusing to load: {what} is not a dense tensor")
        sizes = r.static_ints(meta.get("sizes"), f"{what} size")
        strides = r.static_ints(meta.get("strides"), f"{what} stride")
        offset_kind, offset = r.union(meta.get("storage_offset"), f"{what} offset")
        if offset_kind != "as_int":
            raise r.error(f"refusing to load: {what} has a symbolic storage offset")
        offset = r.int(offset, f"{what} offset")
        if len(sizes) != len(strides) or min(sizes + strides + [offset], default=0) < 0:
            raise r.corrupt(f"{what} has inconsistent sizes and strides")
        numel = _numel(sizes)
        if numel > MAX_ELEMENTS:
            raise r.error(f"refusing to load: {what} declares {numel} elements (at most "
                          f"{MAX_ELEMENTS})")
        member = f"data/{kind}/{path_name}"
        if not archive.has(member):
            raise r.corrupt(f"{member} is missing")
        base = bases.get(path_name)
        if base is None:
            base = bases[path_name] = _raw_tensor(archive, member, dtype)
        if base.dtype != dtype:
            raise r.corrupt(f"{member} is read as two different dtypes")
        if numel and offset + sum((s - 1) * st for s, st in zip(sizes, strides)) >= base.numel():
            raise r.corrupt(f"{what} does not fit the {base.numel()} values stored for it")
        tensor = torch.as_strided(base, sizes, strides, offset) if numel else \
            torch.empty(sizes, dtype=dtype)
        if entry.get("is_param") is True:
            grad = meta.get("requires_grad") is True and tensor.is_floating_point()
            tensor = nn.Parameter(tensor, requires_grad=grad)
        out[fqn] = tensor
    for name in archive.members if kind == "constants" else ():
        if name.startswith(("data/constants/custom_obj_", "data/constants/opaque_obj_")):
            raise r.error(f"refusing to unpickle: the archive holds a pickled object ({name}), "
                          "which could run code")
    return out


def _raw_tensor(archive: Pt2Archive, member: str, dtype: torch.dtype) -> torch.Tensor:
    data = archive.read(member)
    size = dtype.itemsize
    if len(data) % size:
        raise archive.error(f"corrupt .pt2 archive: {member} holds {len(data)} bytes, not a "
                            f"whole number of {dtype} values")
    if not len(data):
        return torch.empty(0, dtype=dtype)
    if not isinstance(data, memoryview) or data.readonly:
        data = bytearray(data)  # deflated or read-only: our own writable copy
    tensor = torch.frombuffer(data, dtype=dtype)
    if tensor.data_ptr() % max(16, size):
        tensor = tensor.clone()  # unaligned data would slow down or break vectorised kernels
    return tensor

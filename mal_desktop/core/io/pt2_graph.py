"""Rebuilding an export program's graph node by node, with names we make (part of our own .pt2
reader; see pt2_program.py for the whole design and what is refused).

Every node gets a fresh name (``n0``, ``n1``, ...); the file's value names only link uses to
definitions. Call targets come from the allowlist of ``pt2_schema.resolve_target``; arguments are
plain values (numbers, booleans, short strings, dtypes, memory formats) or earlier nodes, never
subgraphs, callables or custom objects. ``nn_module_stack`` metadata is kept only when every entry
is a plain dotted name.
"""

from __future__ import annotations

import keyword
import operator
from pathlib import Path
from typing import Any

import torch
from torch import fx

from .pt2_schema import (_MEMORY_FORMATS, _MODULE_PATH, _STACK_KEY, _STRIDED, _TYPE_NAME, Reader,
                         resolve_target)

_SYM_OUTPUTS = ("as_sym_int", "as_sym_float", "as_sym_bool")
_SCALAR_VALUES = {"as_int": int, "as_float": (int, float), "as_bool": bool}
_MAX_STRING = 200
_CALLABLE_ARGS = {"as_graph": "a subgraph", "as_operator": "a callable",
                  "as_custom_obj": "a custom object", "as_string_to_argument": "a keyword table"}


class GraphBuilder(Reader):
    """Turns the program JSON into an fx graph with our own names (see module doc)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.graph = fx.Graph()
        self.values: dict[str, fx.Node] = {}
        self.expect: dict[fx.Node, str] = {}  # what kind of value the file says a node makes
        self.count = 0

    # ----- names
    def fresh(self) -> str:
        name = f"n{self.count}"
        self.count += 1
        return name

    def bind(self, name: Any, node: fx.Node, kind: str) -> None:
        name = self.name(name, "a value")
        if name in self.values:
            raise self.corrupt(f"value {name} is defined twice")
        self.values[name] = node
        self.expect[node] = kind

    def ref(self, name: Any) -> fx.Node:
        name = self.name(name, "a value")
        node = self.values.get(name)
        if node is None:
            raise self.corrupt(f"value {name} is used before it is defined")
        return node

    # ----- arguments
    def tensor_name(self, value: Any, what: str) -> Any:
        return self.dict(value, what).get("name")

    def value(self, arg: Any, what: str) -> Any:
        """A serialized Argument as the Python value the fx node will hold."""
        kind, v = self.union(arg, what)
        if kind == "as_none":
            return None
        if kind in _SCALAR_VALUES:
            if not isinstance(v, _SCALAR_VALUES[kind]) or (kind != "as_bool"
                                                          and isinstance(v, bool)):
                raise self.corrupt(f"{what} is not a {kind[3:]}")
            return float(v) if kind == "as_float" else v
        if kind in ("as_ints", "as_floats", "as_bools"):
            single = "as_" + kind[3:-1]
            return [self.value({single: x}, what) for x in self.list(v, what)]
        if kind == "as_tensor":
            return self.ref(self.tensor_name(v, what))
        if kind == "as_tensors":
            return [self.ref(self.tensor_name(t, what)) for t in self.list(v, what)]
        if kind == "as_optional_tensors":
            return [self.optional_tensor(t, what) for t in self.list(v, what)]
        if kind == "as_optional_tensor":
            return self.optional_tensor(v, what)
        if kind == "as_string":
            if not isinstance(v, str) or len(v) > _MAX_STRING or not v.isprintable():
                raise self.error(f"refusing to load: {what} is a string argument that is not "
                                 "a short option name")
            return v
        if kind in ("as_sym_int", "as_sym_float", "as_sym_bool"):
            return self.sym(v, kind, what)
        if kind in ("as_sym_ints", "as_sym_floats", "as_sym_bools"):
            return [self.sym(x, kind[:-1], what) for x in self.list(v, what)]
        if kind == "as_scalar_type":
            return self.dtype(v, what)
        if kind == "as_memory_format" and type(v) is int and v in _MEMORY_FORMATS:
            return _MEMORY_FORMATS[v]
        if kind == "as_layout" and v == _STRIDED:
            return torch.strided
        if kind == "as_device":
            device = self.dict(v, what)
            index = device.get("index")
            if device.get("type") not in ("cpu", "cuda") or not (
                    index is None or (type(index) is int and 0 <= index < 1024)):
                raise self.corrupt(f"{what} names an unknown device")
            return torch.device(device["type"], index)
        if kind == "as_complex":
            parts = self.dict(v, what)
            real, imag = parts.get("real"), parts.get("imag")
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                       for x in (real, imag)):
                raise self.corrupt(f"{what} is not a complex number")
            return complex(real, imag)
        if kind in _CALLABLE_ARGS:
            raise self.error(f"refusing to load: {what} passes {_CALLABLE_ARGS[kind]} to an "
                             "operator; mal_desktop runs plain tensor operators only")
        raise self.error(f"refusing to load: {what} is a {kind!r} argument, which mal_desktop "
                         "does not read")

    def optional_tensor(self, value: Any, what: str) -> fx.Node | None:
        kind, v = self.union(value, what)
        if kind == "as_none":
            return None
        if kind != "as_tensor":
            raise self.corrupt(f"{what} is not an optional tensor")
        return self.ref(self.tensor_name(v, what))

    def sym(self, value: Any, kind: str, what: str) -> Any:
        tag, v = self.union(value, what)
        if tag == "as_name":
            return self.ref(v)
        plain = "as_" + kind.rsplit("_", 1)[-1]
        if tag != plain:
            raise self.corrupt(f"{what} is not a {kind[6:]}")
        return self.value({plain: v}, what)

    # ----- nodes
    def node(self, serial: Any, index: int) -> None:
        serial = self.dict(serial, f"node {index}")
        if serial.get("name") is not None:
            self.name(serial["name"], "a node")  # never used; a crafted one marks the file
        target = resolve_target(self.path, serial.get("target"))
        inputs = self.list(serial.get("inputs"), f"node {index} inputs")
        outputs = self.list(serial.get("outputs"), f"node {index} outputs")
        where = f"node {index} ({serial['target']})"
        if isinstance(target, torch._ops.OpOverload):
            args, kwargs = self.schema_args(target, inputs, where)
        else:
            args = tuple(self.value(self.dict(i, where).get("arg"), f"{where} argument")
                         for i in inputs)
            kwargs = {}
        node = self.graph.create_node("call_function", target, args, kwargs, name=self.fresh())
        meta = self.dict(serial.get("metadata", {}), f"{where} metadata")
        stack = module_stack(meta.get("nn_module_stack"))
        if stack:
            node.meta["nn_module_stack"] = stack
        self.outputs(node, outputs, where)

    def schema_args(self, target: torch._ops.OpOverload, inputs: list[Any],
                    where: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Arguments in schema order: positional while none is skipped, keywords after."""
        given: dict[str, tuple[Any, Any]] = {}
        for item in inputs:
            item = self.dict(item, f"{where} argument")
            name = item.get("name")
            if not isinstance(name, str) or name in given:
                raise self.corrupt(f"{where} has an unnamed or repeated argument")
            given[name] = (item.get("arg"), item.get("kind"))
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for spec in target._schema.arguments:
            if spec.name not in given:
                if not spec.has_default_value():
                    raise self.corrupt(f"{where} lacks argument {spec.name}")
                continue
            arg, kind = given.pop(spec.name)
            value = self.value(arg, f"{where} argument {spec.name}")
            positional = not spec.kwarg_only and not kwargs and kind != 2
            if positional and len(args) == schema_index(target, spec.name):
                args.append(value)
            elif spec.name.isidentifier() and not keyword.iskeyword(spec.name):
                kwargs[spec.name] = value
            else:
                raise self.corrupt(f"{where} passes {spec.name} out of order")
        if given:
            raise self.corrupt(f"{where} passes {next(iter(given))!r}, which "
                               f"{target} does not take")
        return tuple(args), kwargs

    def outputs(self, node: fx.Node, outputs: list[Any], where: str) -> None:
        if not outputs:
            return
        if len(outputs) == 1:
            kind, v = self.union(outputs[0], f"{where} output")
            if kind == "as_tensor":
                self.bind(self.tensor_name(v, where), node, "tensor")
                return
            if kind in _SYM_OUTPUTS:
                tag, name = self.union(v, f"{where} output")
                if tag != "as_name":
                    raise self.corrupt(f"{where} output has no name")
                self.bind(name, node, "symbol")
                return
            if kind == "as_none":
                return
            if kind == "as_tensors":
                self.items(node, self.list(v, where), where)
                return
        self.expect[node] = "tuple"
        for idx, out in enumerate(outputs):
            kind, v = self.union(out, f"{where} output")
            if kind == "as_none":
                continue
            item = self.graph.create_node("call_function", operator.getitem, (node, idx),
                                          name=self.fresh())
            if kind == "as_tensor":
                self.bind(self.tensor_name(v, where), item, "tensor")
            elif kind in _SYM_OUTPUTS:
                tag, name = self.union(v, f"{where} output")
                self.bind(name, item, "symbol")
            elif kind == "as_tensors":
                self.expect[item] = "tuple"
                self.items(item, self.list(v, where), where)
            else:
                raise self.corrupt(f"{where} returns a {kind!r}")

    def items(self, node: fx.Node, names: list[Any], where: str) -> None:
        self.expect[node] = "tuple"
        for idx, t in enumerate(names):
            item = self.graph.create_node("call_function", operator.getitem, (node, idx),
                                          name=self.fresh())
            self.bind(self.tensor_name(t, where), item, "tensor")


def schema_index(target: torch._ops.OpOverload, name: str) -> int:
    return next(i for i, a in enumerate(target._schema.arguments) if a.name == name)


def module_stack(text: Any) -> dict[str, tuple[str, str]] | None:
    """``nn_module_stack`` metadata ("key,path,type;...") as plain strings, or None when any
    entry is not made of plain names (it is only shown in the layer tree)."""
    if not isinstance(text, str) or not text or len(text) > 20_000:
        return None
    out: dict[str, tuple[str, str]] = {}
    for entry in text.split(";"):
        parts = entry.split(",")
        if len(parts) != 3:
            return None
        key, path, type_name = parts
        if not (_STACK_KEY.match(key) and _MODULE_PATH.match(path)
                and _TYPE_NAME.match(type_name)):
            return None
        out[key] = (path, type_name)
    return out

"""Our own reader for the program inside a .pt2 archive (torch 2.13's export schema, version 8),
building a ``torch.export.ExportedProgram`` without ``torch.export.load``.

``torch.export.load`` unpickles example inputs and flagged weights, parses shape expressions with
``sympy.sympify`` (an ``eval``), ``exec``s serialized guard code, resolves call targets with
``getattr`` walks from ``torch``, ``operator`` and ``math``, and names graph nodes, placeholders
and submodules after strings in the file, which torch.fx then writes into the Python source it
generates and ``exec``s. Here:

- the graph is rebuilt node by node; every node gets a name we make (``n0``, ``n1``, ...) and the
  file's value names (which must be plain identifiers) only link uses to definitions;
- call targets come from an allowlist (``pt2_schema.resolve_target``): ATen operators with plain
  arguments and the symbolic-size helpers export writes; higher-order operators, graph
  arguments, custom objects and operator-valued arguments are refused;
- parameter, buffer and constant names must be dotted names (they become attribute paths in the
  runnable module); weights and constants come from raw bytes (``pt2_schema.read_payloads``);
- no shape expression is evaluated: the input's batch axis may be a plain symbol, its range taken
  from ``range_constraints``; every other shape is computed again by running the graph on fake
  tensors (``meta["val"]``, what discovery reads). Guard code, example inputs, the module call
  graph and tree specs are never used;
- metadata is dropped except ``nn_module_stack`` (module paths and class names for the layer
  tree), kept only when every entry is a plain dotted name.

The generated module's source therefore holds only our node names, the operators' qualified
names, attribute paths that passed ``valid_fqn`` and literal numbers, dtypes and short strings
(printed with ``repr``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import fx

from .pt2_archive import Pt2Archive
from .pt2_graph import GraphBuilder
from .pt2_schema import (_PLAIN_SYMBOL, _STRIDED, MAX_DIMS, MAX_ELEMENTS, MAX_NODES, SCHEMA_MAJOR,
                         Reader, _check_expr, _check_guard, _expr_strings, _numel)

_INPUT_KINDS = {"parameter": ("PARAMETER", "parameter_name"),
                "buffer": ("BUFFER", "buffer_name"),
                "tensor_constant": ("CONSTANT_TENSOR", "tensor_constant_name")}


class _Program(GraphBuilder):
    """The whole program: signature, placeholders, nodes, outputs, shapes, ExportedProgram."""

    def __init__(self, path: Path, doc: dict[str, Any], state: dict[str, torch.Tensor],
                 constants: dict[str, torch.Tensor]) -> None:
        super().__init__(path)
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.experimental.symbolic_shapes import ShapeEnv

        self.doc, self.state, self.constants = doc, state, constants
        self.shape_env = ShapeEnv()
        # no fallback kernels: an operator without a shape function would run for real on zeros
        self.fake_mode = FakeTensorMode(shape_env=self.shape_env, allow_fallback_kernels=False)
        self.fake: dict[fx.Node, Any] = {}
        self.range_constraints: dict[Any, Any] = {}
        self.input_specs: list[Any] = []
        self.output_specs: list[Any] = []

    def build(self) -> Any:
        from torch.export.graph_signature import ExportGraphSignature

        module_doc = self.dict(self.doc.get("graph_module"), "graph_module")
        graph_doc = self.dict(module_doc.get("graph"), "graph")
        signature = self.dict(module_doc.get("signature"), "signature")
        if graph_doc.get("custom_obj_values") or graph_doc.get("is_single_tensor_return"):
            raise self.error("refusing to load: the program holds custom objects, which "
                             "mal_desktop does not read")
        self.tensor_values = self.dict(graph_doc.get("tensor_values", {}), "tensor_values")
        self.placeholders(self.list(signature.get("input_specs"), "input_specs"),
                          self.list(graph_doc.get("inputs"), "graph inputs"))
        nodes = self.list(graph_doc.get("nodes"), "graph nodes")
        if len(nodes) > MAX_NODES:
            raise self.error(f"refusing to load: the program has {len(nodes)} nodes (at most "
                             f"{MAX_NODES})")
        for index, serial in enumerate(nodes):
            self.node(serial, index)
        self.results(self.list(signature.get("output_specs"), "output_specs"),
                     self.list(graph_doc.get("outputs"), "graph outputs"))
        self.propagate()
        return self.exported(ExportGraphSignature(self.input_specs, self.output_specs))

    # ----- inputs and outputs
    def placeholders(self, specs: list[Any], inputs: list[Any]) -> None:
        from torch.export.graph_signature import InputKind, InputSpec, TensorArgument

        if len(specs) != len(inputs):
            raise self.corrupt("the graph inputs do not match the signature")
        for spec, graph_input in zip(specs, inputs):
            kind, body = self.union(spec, "an input spec")
            body = self.dict(body, f"{kind} input")
            node = self.graph.placeholder(self.fresh())
            if kind == "user_input":
                tag, arg = self.union(body.get("arg"), "a user input")
                if tag != "as_tensor":
                    raise self.error("the program takes a non-tensor input; mal_desktop needs "
                                     "models with one input tensor")
                name = self.tensor_name(arg, "a user input")
                self.fake[node] = self.user_input(name)
                self.input_specs.append(InputSpec(InputKind.USER_INPUT,
                                                  TensorArgument(node.name), None))
            elif kind in _INPUT_KINDS:
                kind_name, field = _INPUT_KINDS[kind]
                name = self.tensor_name(body.get("arg"), f"a {kind} input")
                target = self.fqn(body.get(field), kind.replace("_", " "))
                persistent = body.get("persistent") if kind == "buffer" else None
                if kind == "buffer" and type(persistent) is not bool:
                    raise self.corrupt(f"buffer {target} lacks its persistent flag")
                source = self.state if kind == "parameter" or persistent else self.constants
                tensor = source.get(target)
                if not isinstance(tensor, torch.Tensor):
                    raise self.corrupt(f"{kind.replace('_', ' ')} {target} has no stored value")
                self.fake[node] = self.fake_mode.from_tensor(tensor, static_shapes=True)
                self.input_specs.append(InputSpec(getattr(InputKind, kind_name),
                                                  TensorArgument(node.name), target, persistent))
            else:
                raise self.error(f"refusing to load: the program takes a {kind} input "
                                 "(custom objects, tokens or constants), which mal_desktop "
                                 "does not read")
            tag, arg = self.union(graph_input, "a graph input")
            if tag != "as_tensor" or self.tensor_name(arg, "a graph input") != name:
                raise self.corrupt("the graph inputs do not match the signature")
            self.bind(name, node, "tensor")

    def user_input(self, name: Any) -> Any:
        """A fake tensor for the user input: its recorded sizes, the first one possibly a plain
        symbol whose range comes from ``range_constraints`` (never an evaluated expression)."""
        name = self.name(name, "the input")
        meta = self.dict(self.tensor_values.get(name), f"the input {name} tensor meta")
        dtype = self.dtype(meta.get("dtype"), "the input")
        if meta.get("layout") != _STRIDED:
            raise self.error("refusing to load: the program's input is not a dense tensor")
        sizes: list[Any] = []
        listed = self.list(meta.get("sizes"), "the input sizes")
        if len(listed) > MAX_DIMS:
            raise self.error(f"refusing to load: the program's input has {len(listed)} axes")
        for dim, item in enumerate(listed):
            kind, v = self.union(item, "an input size")
            if kind == "as_int":
                sizes.append(self.int(v, "an input size"))
            elif kind == "as_expr" and dim == 0:
                sizes.append(self.batch_symbol(self.dict(v, "the input batch size")))
            else:
                raise self.error("the program's input shape must be (batch, ...) with a static "
                                 "per-sample shape")
        static = _numel([s for s in sizes if isinstance(s, int)])
        hint = sizes[0].node.hint if sizes and not isinstance(sizes[0], int) else 1
        if min((s for s in sizes if isinstance(s, int)), default=0) < 0 \
                or static * hint > MAX_ELEMENTS:
            raise self.error(f"refusing to load: the program's input declares {static * hint} "
                             f"elements (at most {MAX_ELEMENTS})")
        strides = [_numel(sizes[d + 1:]) for d in range(len(sizes))]  # ints: only dim 0 varies
        with self.fake_mode:
            return torch.empty_strided(tuple(sizes), tuple(strides), dtype=dtype)

    def batch_symbol(self, expr: dict[str, Any]) -> Any:
        import sympy
        from torch.utils._sympy.numbers import int_oo
        from torch.utils._sympy.value_ranges import ValueRanges

        match = _PLAIN_SYMBOL.match(str(expr.get("expr_str")))
        if match is None:
            raise self.error("the program's input batch size is a derived shape expression; "
                             "mal_desktop reads programs whose dynamic batch axis is a plain "
                             "export Dim")
        bounds = self.dict(self.dict(self.doc.get("range_constraints", {}),
                                     "range_constraints").get(match.group(1), {}),
                           "the batch range")
        low, high = bounds.get("min_val"), bounds.get("max_val")
        low = 0 if low is None else self.int(low, "the batch range")
        if high is not None:
            high = self.int(high, "the batch range")
        if low < 0 or (high is not None and high < max(low, 2)):
            raise self.corrupt("the batch range is empty")
        hint_kind, hint = self.union(expr.get("hint") or {"as_int": 2}, "the batch hint")
        if hint_kind != "as_int" or type(hint) is not int or hint < max(low, 2) \
                or (high is not None and hint > high):
            hint = max(low, 2)
        # one symbol per dynamic input, named by us (the file's symbol name is only a range key)
        symbol = sympy.Symbol(f"s{len(self.range_constraints)}", integer=True, positive=True)
        self.shape_env.add_backed_var_to_val(symbol, hint)
        self.shape_env.constrain_symbol_range(symbol, compiler_min=max(low, 2),
                                              compiler_max=int_oo if high is None else high)
        self.range_constraints[symbol] = ValueRanges(low, int_oo if high is None else high)
        return self.shape_env.create_symintnode(symbol, hint=hint)

    def results(self, specs: list[Any], outputs: list[Any]) -> None:
        from torch.export.graph_signature import OutputKind, OutputSpec, TensorArgument

        if len(specs) != len(outputs):
            raise self.corrupt("the graph outputs do not match the signature")
        buffers = {s.target for s in self.input_specs if s.kind.name == "BUFFER"}
        results = []
        for spec, graph_output in zip(specs, outputs):
            kind, body = self.union(spec, "an output spec")
            body = self.dict(body, f"{kind} output")
            tag, arg = self.union(graph_output, "a graph output")
            if tag != "as_tensor":
                raise self.error("the program returns a value that is not a tensor; "
                                 "mal_desktop needs models returning tensors")
            node = self.ref(self.tensor_name(arg, "a graph output"))
            if kind == "user_output":
                tag, spec_arg = self.union(body.get("arg"), "a user output")
                name = self.tensor_name(spec_arg, "a user output")
                out = OutputSpec(OutputKind.USER_OUTPUT, TensorArgument(node.name), None)
            elif kind == "buffer_mutation":
                name = self.tensor_name(body.get("arg"), "a buffer update")
                target = self.fqn(body.get("buffer_name"), "buffer")
                if target not in buffers:
                    raise self.corrupt(f"the program updates {target}, which is not a buffer")
                out = OutputSpec(OutputKind.BUFFER_MUTATION, TensorArgument(node.name), target)
            else:
                raise self.error(f"refusing to load: the program has a {kind} output "
                                 "(gradients, losses or input updates), which mal_desktop does "
                                 "not run")
            if self.values.get(name) is not node:
                raise self.corrupt("the graph outputs do not match the signature")
            self.output_specs.append(out)
            results.append(node)
        self.graph.output(tuple(results))

    # ----- shapes
    def propagate(self) -> None:
        """Every node's ``meta["val"]`` from running the graph on fake tensors."""
        from torch.fx.experimental.symbolic_shapes import compute_unbacked_bindings

        def val(n: fx.Node) -> Any:
            return n.meta["val"]

        for index, node in enumerate(self.graph.nodes):
            if node.op == "placeholder":
                node.meta["val"] = self.fake[node]
                continue
            if node.op == "output":
                node.meta["val"] = tuple(val(n) for n in node.args[0])
                continue
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), val)
            try:
                with self.fake_mode:
                    result = node.target(*args, **kwargs)
                bindings = compute_unbacked_bindings(self.shape_env, result)
            except Exception as exc:  # any failure means the graph does not hold together
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                first = lines[0][:160] if lines else ""
                raise self.error(f"the program's operators do not fit together at "
                                 f"{_target_name(node.target)}: {type(exc).__name__}: "
                                 f"{first}") from None
            node.meta["val"] = result
            if bindings:
                node.meta["unbacked_bindings"] = bindings
            self.check_value(node, result)

    def check_value(self, node: fx.Node, result: Any) -> None:
        expect = self.expect.get(node)
        ok = {"tensor": isinstance(result, torch.Tensor),
              "symbol": isinstance(result, (torch.SymInt, torch.SymFloat, torch.SymBool, int,
                                            float, bool)),
              "tuple": isinstance(result, (tuple, list)),
              None: True}[expect]
        if not ok:
            raise self.corrupt(f"{_target_name(node.target)} does not return what the file says")
        if isinstance(result, torch.Tensor):
            count = 1
            for size in result.shape:
                hint = size if isinstance(size, int) else size.node.hint
                count *= hint if isinstance(hint, int) else 1
            if count > MAX_ELEMENTS:
                raise self.error(f"refusing to load: {_target_name(node.target)} makes a tensor "
                                 f"of {count} elements (at most {MAX_ELEMENTS})")

    # ----- the ExportedProgram
    def exported(self, signature: Any) -> Any:
        from torch._export.verifier import TrainingIRVerifier, Verifier
        from torch.export import ExportedProgram
        from torch.export.exported_program import ModuleCallEntry, ModuleCallSignature
        from torch.utils import _pytree as pytree

        dialects = self.list(self.doc.get("verifiers", []), "verifiers")
        known = {"ATEN": Verifier, "": Verifier, "TRAINING": TrainingIRVerifier}
        if len(dialects) > 1 or any(not isinstance(d, str) or d not in known for d in dialects):
            raise self.error(f"refusing to load: the program is in the {repr(dialects)[:60]} "
                             "dialect; mal_desktop reads ATEN and TRAINING programs")
        verifier = known[dialects[0] if dialects else "ATEN"]
        n_in = len(signature.user_inputs)
        n_out = len(signature.user_outputs)
        in_spec = pytree.tree_structure((tuple(range(n_in)), {}))
        out_spec = pytree.tree_structure(0 if n_out == 1 else tuple(range(n_out)))
        call = ModuleCallSignature(inputs=[], outputs=[], in_spec=in_spec, out_spec=out_spec)
        root = fx.GraphModule(torch.nn.Module(), self.graph)
        try:
            return ExportedProgram(root=root, graph=root.graph, graph_signature=signature,
                                   state_dict=self.state, range_constraints=self.range_constraints,
                                   module_call_graph=[ModuleCallEntry("", call)],
                                   example_inputs=None, constants=self.constants,
                                   verifiers=[verifier])
        except Exception as exc:  # torch's own verifier: a program it would not accept either
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise self.error(f"the program fails torch's checks: {type(exc).__name__}: "
                             f"{lines[0][:160] if lines else ''}") from None


def _target_name(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    return getattr(target, "__name__", str(target))


def build_program(path: Path, archive: Pt2Archive, state: dict[str, torch.Tensor],
                  constants: dict[str, torch.Tensor]) -> Any:
    """The archive's program as a ``torch.export.ExportedProgram`` (see module doc).

    Parameters:
        path: the file, named in errors.
        archive: the checked archive.
        state / constants: its weights and constants (``pt2_schema.read_payloads``).
    Raises:
        ModelFileError: anything the reader refuses, or a graph that does not hold together.
    """
    r = Reader(path)
    doc = r.dict(archive.json("models/model.json"), "models/model.json")
    version = r.dict(doc.get("schema_version"), "schema_version")
    if version.get("major") != SCHEMA_MAJOR:
        raise r.error(f"the program was saved with export schema {version.get('major')!r}; "
                      f"re-save it with torch.export.save from torch "
                      f"{torch.__version__.split('+')[0]}")
    for expr in _expr_strings(doc):
        _check_expr(path, expr)
    for guard in r.list(doc.get("guards_code", []), "guards_code"):
        _check_guard(path, guard)
    return _Program(path, doc, state, constants).build()

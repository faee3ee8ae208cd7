"""Record a model's ATen graph by running it once, without torch.export.

Why: the first ``torch.export`` (or ``make_fx``) in a process imports torch's compiler stack
(``torch._dynamo``, ``torch._inductor``): 1.1-1.4 s here, for a model whose discovery and matching
take milliseconds, so a model mal has not seen before opened slower than the rebasin library
aligns it. Discovery needs only what export gives it: the ATen ops a forward pass calls, at the
level export records them (above autograd, so ``linear`` stays one op instead of ``t`` and
``addmm``), every value's shape, the calling modules, and which tensors are parameters, buffers,
constants or the input.

A dispatch mode at torch's PreDispatch key sees exactly those ops. The model runs once, for
real, on the probe batch (meta tensors would route batch norm through Python decompositions,
whose first call imports the compiler stack too), and each op becomes a node of an fx graph like
export's. An in-place op (``x += shortcut``) becomes its functional variant, as export's
functionalisation makes it, when it writes into a tensor an op produced. The recording refuses,
and discovery exports the model as before (``discover._exported``), where it could hold
something export would not:
- a write into a view, a parameter, a buffer or the input, or an op writing anything else;
- a forward reading values computed from its input or weights into Python (``if x:``,
  ``.item()``): it may branch on them, and the recording holds only the probe's path; likewise a
  parameter no op read (an untaken branch, an unchosen expert, work done in another thread),
  whose spaces would look free;
- torch's fused fast paths for frozen weights (one op hiding the attention);
- more than ``MAX_KEPT_BYTES`` of tensors made by the forward.
Nodes keep shapes only (meta tensors, like export's fake ones); the caller's training flags and
random streams are restored.

Torch lets only its own mode classes sit at PreDispatch, so the recorder subclasses one
(``SchemaCheckMode``) and replaces all of its behaviour. These are private torch APIs: a torch
release that changes them makes recording fail, discovery falls back to export, and the tests
(which assert that recording is used) show it instead of a silent slowdown.
"""

from __future__ import annotations

import operator
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils._python_dispatch import TorchDispatchMode

try:  # private torch APIs (see above): a torch without them exports instead of failing to start
    from torch._C import DispatchKey
    from torch._dispatch.python import enable_python_dispatcher
    from torch._subclasses.schema_check_mode import SchemaCheckMode
except ImportError:  # pragma: no cover - not the pinned torch
    SchemaCheckMode = None


# torch keeps the PreDispatch mode in one process-wide slot, and export puts its own mode there:
# a recording and an export in two threads (the app's workers) would see each other's ops
TRACING = threading.RLock()


@dataclass
class AtenGraph:
    """What discovery reads, from export or from a recording.

    graph: ATen ops; each node's ``meta["val"]`` holds its value (a tensor, or a tuple of them)
        and ``meta["nn_module_stack"]`` the modules that called it ({path: (path, type)}).
    inputs: placeholder name -> (kind, state key); kinds as export names them: PARAMETER,
        BUFFER, CONSTANT_TENSOR, USER_INPUT.
    user_outputs: per position of the output node's tuple, whether it is returned to the user
        (export also outputs buffer mutations).
    """

    graph: fx.Graph
    inputs: dict[str, tuple[str, str | None]]
    user_outputs: list[bool]


def exported_graph(program: Any) -> AtenGraph:
    """An ``ExportedProgram`` as an AtenGraph."""
    signature = program.graph_signature
    inputs = {s.arg.name: (s.kind.name, s.target) for s in signature.input_specs
              if hasattr(s.arg, "name")}
    return AtenGraph(program.graph, inputs,
                     [s.kind.name == "USER_OUTPUT" for s in signature.output_specs])


class RecordingRefused(Exception):
    """The forward pass did something a recording cannot represent as export would."""


# Ops that read tensor values into Python (``if x:``, ``x.item()``, ``x.tolist()``): a forward
# may branch on them, and the recording would hold only the probe's path (export refuses these
# too: data-dependent guards). Values computed from constants alone (transformers checks its
# own position ids this way) are the same for every input and weight, so those reads pass.
VALUE_READS = {"is_nonzero", "item", "_local_scalar_dense", "equal", "resolve_conj",
               "resolve_neg"}
# Fused fast paths torch takes for frozen weights under eval: one op discovery cannot see into,
# where export (on a weightless twin) records the attention's own ops.
FAST_PATHS = {"_native_multi_head_attention", "_transformer_encoder_layer_fwd"}
# Every tensor the forward makes is kept alive until the end (their ids and memory must not be
# reused while the graph maps them): above this, a weightless export is the cheaper trace.
MAX_KEPT_BYTES = 1 << 30


def record_graph(module: nn.Module, example: torch.Tensor) -> AtenGraph:
    """Run ``module`` once on ``example`` (in eval mode, as export runs it; each module's own
    training flag and the random number generators are restored afterwards) and return its ATen
    graph. Raises RecordingRefused, or whatever the forward pass raises."""
    if SchemaCheckMode is None:
        raise RecordingRefused(f"torch {torch.__version__} lacks the PreDispatch mode API")
    example = _probe_for(module, example)
    graph = fx.Graph()
    recorder = _Recorder(graph)
    inputs: dict[str, tuple[str, str | None]] = {}
    # placeholders in export's order: parameters, buffers, (constants, added as met), the input
    # a tensor under several names (tied weights) gets a placeholder per name and every use
    # reads the last one, as under export
    parameters: dict[int, list[fx.Node]] = {}
    for kind, prefix, named in (
            ("PARAMETER", "p", module.named_parameters(remove_duplicate=False)),
            ("BUFFER", "b", module.named_buffers(remove_duplicate=False))):
        for key, tensor in named:
            node = graph.placeholder(f"{prefix}_{key.replace('.', '_')}")
            recorder.bind(tensor, node)
            inputs[node.name] = (kind, key)
            recorder.data_nodes.add(node)
            if kind == "PARAMETER":
                parameters.setdefault(id(tensor), []).append(node)
    recorder.first_input = graph.placeholder("input")
    recorder.bind(example, recorder.first_input)
    recorder.data_nodes.add(recorder.first_input)
    inputs[recorder.first_input.name] = ("USER_INPUT", None)
    modes = [(m, m.training) for m in module.modules()]
    cuda = sorted({t.device.index or 0 for t in module.parameters() if t.device.type == "cuda"})
    with ExitStack() as stack:
        stack.enter_context(TRACING)
        stack.callback(lambda: [m.train(flag) for m, flag in modes])
        module.eval()
        # a forward that samples (dropout in train mode, a VAE) must not move the caller's
        # seeded streams: runs of the app are bit-identical
        stack.enter_context(torch.random.fork_rng(devices=cuda))
        for handle in _module_stack_hooks(module, recorder.stack):
            stack.callback(handle.remove)
        # grad mode on, as under export, even for a caller under no_grad: without it torch's
        # fused fast paths (``_transformer_encoder_layer_fwd``) replace the ops discovery knows
        stack.enter_context(torch.enable_grad())
        stack.enter_context(enable_python_dispatcher())
        stack.enter_context(torch._C._EnablePreDispatch())
        stack.enter_context(recorder)
        output = module(example)
    if recorder.refused is not None:  # raised inside the forward, which may have caught it
        raise RecordingRefused(recorder.refused)
    unread = [nodes[-1].name for nodes in parameters.values()
              if not any(node.users for node in nodes)]
    if unread:
        # a parameter the probe never reached (an untaken branch, an expert no token chose,
        # work done in another thread): its spaces would look free while other inputs use it
        raise RecordingRefused(f"the probe did not reach {len(unread)} parameter(s), e.g. "
                               f"{unread[0]}")
    leaves, _ = tree_flatten(output)
    graph.output(tuple(recorder.arg(leaf) for leaf in leaves))
    inputs.update(recorder.constants)
    return AtenGraph(graph, inputs, [True] * len(leaves))


def _probe_for(module: nn.Module, example: torch.Tensor) -> torch.Tensor:
    """A floating probe in the floating weights' dtype and on their device, when they agree
    (a bfloat16 or CUDA model); token ids only move."""
    floats = {(t.dtype, t.device) for t in module.parameters() if t.is_floating_point()}
    devices = {device for _, device in floats}
    if len(devices) == 1:
        example = example.to(next(iter(devices)))
    if len(floats) == 1 and example.is_floating_point():
        example = example.to(next(iter(floats))[0])
    return example


def _module_stack_hooks(module: nn.Module, stack: list[tuple[str, str]]) -> list[Any]:
    """Hooks keeping ``stack`` at the modules whose forward is running (paths as in the state).

    Only this thread's calls count: another thread may run the same module meanwhile (the app
    evaluates in its workers)."""
    handles = []
    me = threading.get_ident()
    for path, sub in module.named_modules():
        if not path:
            continue
        kind = f"{type(sub).__module__}.{type(sub).__qualname__}"

        def enter(_m: Any, _args: Any, entry: tuple[str, str] = (path, kind)) -> None:
            if threading.get_ident() == me:
                stack.append(entry)

        def leave(_m: Any, _args: Any, _out: Any) -> None:
            if threading.get_ident() == me and stack:
                stack.pop()  # returns None: a hook's return value would replace the output

        handles.append(sub.register_forward_pre_hook(enter))
        handles.append(sub.register_forward_hook(leave, always_call=True))
    return handles


class _Recorder(SchemaCheckMode or TorchDispatchMode):
    """Turns every ATen call at PreDispatch into a node of ``graph``."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # otherwise torch wraps __torch_dispatch__ in a shim whose first call imports dynamo
        return False

    def __init__(self, graph: fx.Graph) -> None:
        TorchDispatchMode.__init__(self, DispatchKey.PreDispatch)
        self.graph = graph
        self.nodes: dict[int, fx.Node] = {}  # id(tensor) -> the node that holds its value
        self.keep: list[torch.Tensor] = []  # every mapped tensor stays alive: ids are not reused
        self.kept_bytes = 0
        # each tensor of a multi-output op -> (op node, index); its getitem is made on first use
        self.pending: dict[int, tuple[fx.Node, int]] = {}
        # the same, by what the tensor views: a factory op's result (``torch.zeros`` inside
        # nn.LSTM) reaches the caller as a shallow copy, another tensor over the same memory
        self.by_memory: dict[tuple, fx.Node | tuple[fx.Node, int]] = {}
        self.stack: list[tuple[str, str]] = []
        self.constants: dict[str, tuple[str, str | None]] = {}
        self.first_input: fx.Node | None = None
        # nodes whose values depend on the input, a parameter or a buffer (not on constants only)
        self.data_nodes: set[fx.Node] = set()
        self.refused: str | None = None

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        op = func._schema.name.split("::", 1)[-1]
        if op in VALUE_READS:
            read = [self.arg(t) for t in tree_flatten((args, kwargs))[0]
                    if isinstance(t, torch.Tensor)]
            if any(node in self.data_nodes for node in read):
                self.refuse(f"the forward reads values computed from its input or weights "
                            f"({func}): it may branch on them")
            return func(*args, **kwargs)  # a Python value, no node: export never sees the read
        if op in FAST_PATHS:
            self.refuse(f"{func} is a fused fast path (frozen weights)")
        target = self.functional(func, op, args) if func._schema.is_mutable else func
        out = func(*args, **kwargs)
        node = self.graph.call_function(target, tree_map(self.arg, tuple(args)),
                                        tree_map(self.arg, dict(kwargs)))
        if any(arg in self.data_nodes for arg in node.all_input_nodes):
            self.data_nodes.add(node)
        self.annotate(node, out)
        if isinstance(out, torch.Tensor):
            self.bind(out, node)
        elif isinstance(out, (tuple, list)):
            for i, item in enumerate(out):
                if isinstance(item, torch.Tensor):
                    self.pending[id(item)] = (node, i)
                    self.hold(item)
                    self.remember(item, (node, i))
        return out

    def functional(self, func: Any, op: str, args: Any) -> Any:
        """The functional variant of in-place ``func`` (named ``op``, e.g. "add_") when it writes
        into an op's result."""
        writes = [a.name for a in func._schema.arguments
                  if a.alias_info is not None and a.alias_info.is_write]
        target = args[0] if args else None
        node = self.arg(target) if isinstance(target, torch.Tensor) else None
        variant = getattr(getattr(torch.ops.aten, op[:-1], None), func._overloadname, None) \
            if op.endswith("_") else None
        if writes != ["self"] or node is None or node.op != "call_function" \
                or target._is_view() or variant is None or variant._schema.is_mutable:
            self.refuse(f"{func} writes into its arguments")
        return variant

    def refuse(self, why: str) -> None:
        self.refused = self.refused or why
        raise RecordingRefused(self.refused)

    def annotate(self, node: fx.Node, value: Any) -> None:
        # shapes, strides and dtypes only, as export's fake tensors hold them: a later in-place
        # metadata op (``unsqueeze_``) changes the live tensor, not what this node computed
        node.meta["val"] = tree_map(_shape_only, value)
        node.meta["nn_module_stack"] = {path: (path, kind) for path, kind in self.stack}

    def bind(self, tensor: torch.Tensor, node: fx.Node) -> None:
        self.nodes[id(tensor)] = node
        self.pending.pop(id(tensor), None)
        self.hold(tensor)
        self.remember(tensor, node)
        if "val" not in node.meta:
            self.annotate(node, tensor)

    def hold(self, tensor: torch.Tensor) -> None:
        self.keep.append(tensor)
        self.kept_bytes += tensor.numel() * tensor.element_size()
        if self.kept_bytes > MAX_KEPT_BYTES:
            self.refuse(f"the forward makes more than {MAX_KEPT_BYTES >> 20} MiB of tensors")

    def remember(self, tensor: torch.Tensor, holder: fx.Node | tuple[fx.Node, int]) -> None:
        key = _memory_key(tensor)
        if key is not None:
            self.by_memory[key] = holder  # the latest holder of these values wins

    def arg(self, value: Any) -> Any:
        """``value`` as a node argument: a tensor becomes the node holding it."""
        if not isinstance(value, torch.Tensor):
            return value
        node = self.nodes.get(id(value))
        if node is not None:
            return node
        key = _memory_key(value)
        holder = self.pending.get(id(value)) or self.by_memory.get(key)
        if isinstance(holder, fx.Node):
            self.nodes[id(value)] = holder
            self.hold(value)
            return holder
        if holder is not None:
            parent, index = holder
            node = self.graph.call_function(operator.getitem, (parent, index))
            node.meta["nn_module_stack"] = parent.meta["nn_module_stack"]
            if parent in self.data_nodes:
                self.data_nodes.add(node)
        else:  # made before the forward pass and not in the state: a constant, as export lifts it
            with self.graph.inserting_before(self.first_input):
                node = self.graph.placeholder(f"c_constant_{len(self.constants)}")
            self.constants[node.name] = ("CONSTANT_TENSOR", None)
        node.meta["val"] = _shape_only(value)
        self.bind(value, node)
        return node


def _memory_key(tensor: torch.Tensor) -> tuple | None:
    """Where a tensor's values live and how it reads them; None for a tensor with no memory."""
    try:
        address = tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None
    if not address:
        return None
    return (address, tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype)


def _shape_only(value: Any) -> Any:
    """A tensor's shape, strides and dtype on the meta device (no data); other values as they
    are."""
    if not isinstance(value, torch.Tensor):
        return value
    return torch.empty_strided(tuple(value.shape), value.stride(), dtype=value.dtype,
                               device="meta")

"""A corpus of hostile .pt2 files, built from one valid program.

Every builder writes a crafted copy of a valid ``torch.export.save`` archive. Each plants a
payload that creates ``marker`` if anything in the file were run (unpickled, eval'd, exec'd, or
written into generated code): a pickled ``open(marker, "w")`` call or Python source calling
``open(marker, "w")``. ``CASES`` maps a case name to (builder, the problem the refusal must
name). ``mal_file`` wraps any of them in a mal .safetensors whose metadata points to the .pt2
(with its real sha256), the route through which a mal file loads its architecture program.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

MODEL = "models/model.json"
WEIGHTS = "data/weights/model_weights_config.json"
CONSTANTS = "data/constants/model_constants_config.json"
SAMPLE = "data/sample_inputs/model.pt"

Builder = Callable[[Path, Path, Path], None]


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the side effect no refused file may have."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def code(marker: Path) -> str:
    """Python source that creates the marker when run."""
    return f"open({str(marker)!r}, 'w')"


def valid_program(path: Path) -> Path:
    """A small valid program with a dynamic batch axis (so it holds a shape expression)."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    program = torch.export.export(module, (torch.randn(4, 1, 4, 4),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", max=1024)},))
    torch.export.save(program, str(path))
    return path


# ---------------------------------------------------------------------------- archive surgery


def rewrite(src: Path, dst: Path,
            change: Callable[[str, bytes], bytes | None] = lambda name, data: data,
            extra: dict[str, bytes] | None = None, deflate: tuple[str, ...] = (),
            rename: dict[str, str] | None = None) -> None:
    """Copy an archive member by member. Names are relative to the root folder unless they start
    with '!' (then they are written as given). ``change`` returns new data or None to drop a
    member; ``extra`` adds members; ``deflate`` compresses the named members; ``rename`` maps
    old relative names to new ones."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about duplicate names
        root = zin.namelist()[0].split("/")[0]

        def full(name: str) -> str:
            return name[1:] if name.startswith("!") else f"{root}/{name}"

        for info in zin.infolist():
            rel = info.filename[len(root) + 1:]
            data = change(rel, zin.read(info.filename))
            if data is None:
                continue
            new = (rename or {}).get(rel, rel)
            method = zipfile.ZIP_DEFLATED if new in deflate else zipfile.ZIP_STORED
            zout.writestr(zipfile.ZipInfo(full(new), info.date_time), data, method)
        for name, data in (extra or {}).items():
            method = zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED
            zout.writestr(zipfile.ZipInfo(full(name)), data, method)


def edit_json(member: str, edit: Callable[[Any], Any]) -> Callable[[str, bytes], bytes]:
    """A ``change`` for ``rewrite`` that edits one JSON member (``edit`` may return a new doc)."""
    def change(name: str, data: bytes) -> bytes:
        if name != member:
            return data
        doc = json.loads(data)
        out = edit(doc)
        return json.dumps(doc if out is None else out).encode()
    return change


def replace_text(member: str, old: str, new: str) -> Callable[[str, bytes], bytes]:
    """A ``change`` replacing a JSON string value everywhere in one member."""
    def change(name: str, data: bytes) -> bytes:
        if name != member:
            return data
        text = data.decode()
        assert json.dumps(old) in text, (old, member)
        return text.replace(json.dumps(old), json.dumps(new)).encode()
    return change


def patch_declared_size(path: Path, member_suffix: str, size: int) -> None:
    """Overwrite the uncompressed size the central directory declares for a member."""
    data = bytearray(path.read_bytes())
    pos = 0
    while True:
        pos = data.index(b"PK\x01\x02", pos)
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        name = bytes(data[pos + 46:pos + 46 + name_len]).decode()
        if name.endswith(member_suffix):
            struct.pack_into("<I", data, pos + 24, size)
            path.write_bytes(bytes(data))
            return
        pos += 46


def nodes(doc: dict) -> list[dict]:
    return doc["graph_module"]["graph"]["nodes"]


def node_named(doc: dict, target_part: str) -> dict:
    return next(n for n in nodes(doc) if target_part in n["target"])


def torch_pickle(obj: Any, protocol: int = 2) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, pickle_protocol=protocol)
    return buf.getvalue()


# ---------------------------------------------------------------------------- the cases
# Each builder: (valid program, hostile file to write, marker path).


def sample_inputs_pickle(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, lambda n, d: torch_pickle((Payload(marker),)) if n == SAMPLE else d)


def sample_inputs_stack_global(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, lambda n, d: torch_pickle((Payload(marker),), 4) if n == SAMPLE else d)


def sample_inputs_bare_pickle(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, lambda n, d: pickle.dumps(Payload(marker)) if n == SAMPLE else d)


def weight_pickle(src: Path, dst: Path, marker: Path) -> None:
    def change(name: str, data: bytes) -> bytes:
        if name == WEIGHTS:
            config = json.loads(data)
            next(iter(config["config"].values()))["use_pickle"] = True
            return json.dumps(config).encode()
        return torch_pickle(Payload(marker)) if name == "data/weights/weight_0" else data
    rewrite(src, dst, change)


def constant_pickle(src: Path, dst: Path, marker: Path) -> None:
    config = {"config": {"c": {"path_name": "opaque_obj_0", "is_param": False,
                               "use_pickle": True, "tensor_meta": None}}}
    rewrite(src, dst, lambda n, d: json.dumps(config).encode() if n == CONSTANTS else d,
            extra={"data/constants/opaque_obj_0": pickle.dumps(Payload(marker))})


def unreferenced_pickled_object(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, extra={"data/constants/custom_obj_0": pickle.dumps(Payload(marker))})


def case_variant_sample_inputs(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, extra={"data/sample_inputs/MODEL.pt": torch_pickle((Payload(marker),))})


def case_variant_weights_config(src: Path, dst: Path, marker: Path) -> None:
    config = {"config": {"1.weight": {"path_name": "weight_9", "is_param": True,
                                      "use_pickle": True, "tensor_meta": None}}}
    rewrite(src, dst, extra={"data/weights/Model_weights_config.json": json.dumps(config).encode(),
                             "data/weights/weight_9": torch_pickle(Payload(marker))})


def case_variant_root(src: Path, dst: Path, marker: Path) -> None:
    root = zipfile.ZipFile(src).namelist()[0].split("/")[0]
    rewrite(src, dst, extra={f"!{root.upper()}/{SAMPLE}": torch_pickle((Payload(marker),))})


def renamed_program(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, rename={MODEL: "models/Model.json"},
            extra={"extra/x.py": code(marker).encode()})


def duplicate_member(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, extra={SAMPLE: torch_pickle((Payload(marker),))})


def traversal_member(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, extra={f"!../{marker.name}.py": code(marker).encode()})


def absolute_member(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, extra={f"!{marker.parent}/planted.py": code(marker).encode()})


def nested_traversal_member(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, extra={"extra/../../planted.py": code(marker).encode()})


def unexpected_member(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, extra={"data/weights/payload.pkl": pickle.dumps(Payload(marker))})


def native_code(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, extra={"data/aotinductor/model/model.so": b"\x7fELF" + code(marker).encode()})


def zip_bomb_ratio(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, extra={"extra/bomb.bin": bytes(8 << 20)}, deflate=("extra/bomb.bin",))


def zip_bomb_declared_size(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, deflate=(MODEL,))
    patch_declared_size(dst, MODEL, 0xFFFFFFF0)


def zip_bomb_lying_size(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, deflate=(MODEL,))
    patch_declared_size(dst, MODEL, 100)


def deep_json(src: Path, dst: Path, marker: Path) -> None:
    depth = 100_000
    rewrite(src, dst, lambda n, d: (b"[" * depth + json.dumps(code(marker)).encode()
                                    + b"]" * depth) if n == MODEL else d)


def deep_weights_config(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, lambda n, d: b'{"config": ' + b"[" * 5000 + b"]" * 5000 + b"}"
            if n == WEIGHTS else d)


def too_many_members(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, extra={f"extra/f{i}": b"" for i in range(10_001)})


def injected_value_name(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, replace_text(MODEL, "relu", f"x = {code(marker)}  #"))


def injected_node_name(src: Path, dst: Path, marker: Path) -> None:
    def edit(doc: dict) -> None:
        node_named(doc, "relu")["name"] = f"relu\n{code(marker)}"
    rewrite(src, dst, edit_json(MODEL, edit))


def injected_input_name(src: Path, dst: Path, marker: Path) -> None:
    rewrite(src, dst, replace_text(MODEL, "input", f"input=None, *a): {code(marker)}\ndef f("))


def injected_parameter_name(src: Path, dst: Path, marker: Path) -> None:
    # torch.fx writes a name segment that is not an identifier as getattr(x, "segment"): the
    # quotes close that string and the call runs when the module is built
    fqn = f'1.bias"),open("{marker}","w"),getattr(self,"1'

    def change(name: str, data: bytes) -> bytes:
        for member in (MODEL, WEIGHTS):
            if name == member:
                return data.replace(b'"1.weight"', json.dumps(fqn).encode())
        return data
    rewrite(src, dst, change)


def injected_dunder_parameter(src: Path, dst: Path, marker: Path) -> None:
    fqn = "__class__.__init__.__globals__"

    def change(name: str, data: bytes) -> bytes:
        return data.replace(b'"1.weight"', json.dumps(fqn).encode()) \
            if name in (MODEL, WEIGHTS) else data
    rewrite(src, dst, change, extra={"extra/x.py": code(marker).encode()})


def injected_subgraph_name(src: Path, dst: Path, marker: Path) -> None:
    def edit(doc: dict) -> None:
        relu = node_named(doc, "relu")
        graph = {"inputs": [], "outputs": [], "nodes": [], "tensor_values": {},
                 "sym_int_values": {}, "sym_bool_values": {}}
        relu["target"] = "torch.ops.higher_order.cond"
        relu["inputs"].append({"name": "", "arg": {"as_graph": {
            "name": f"true_graph_0\n{code(marker)}", "graph": graph}}, "kind": 1})
    rewrite(src, dst, edit_json(MODEL, edit))


def guard_code(src: Path, dst: Path, marker: Path) -> None:
    def edit(doc: dict) -> None:
        doc["guards_code"] = [f"{code(marker)} and L['input'].size()[0] <= 1024"]
    rewrite(src, dst, edit_json(MODEL, edit))


def guard_code_import(src: Path, dst: Path, marker: Path) -> None:
    def edit(doc: dict) -> None:
        doc["guards_code"] = [f"__import__('builtins').{code(marker)}"]
    rewrite(src, dst, edit_json(MODEL, edit))


def shape_expression_code(src: Path, dst: Path, marker: Path) -> None:
    def change(name: str, data: bytes) -> bytes:
        if name != MODEL:
            return data
        new = data.replace(b"Symbol('s", code(marker).encode() + b" or Symbol('s", 1)
        assert new != data
        return new
    rewrite(src, dst, change)


def higher_order_callable(src: Path, dst: Path, marker: Path) -> None:
    def edit(doc: dict) -> None:
        relu = node_named(doc, "relu")
        relu["target"] = "torch.ops.higher_order.map_impl"
        relu["inputs"].insert(0, {"name": "f", "arg": {"as_operator": "builtins.open"},
                                  "kind": 1})
    rewrite(src, dst, edit_json(MODEL, edit))


def callable_argument(src: Path, dst: Path, marker: Path) -> None:
    def edit(doc: dict) -> None:
        node_named(doc, "relu")["inputs"] = [
            {"name": "self", "arg": {"as_operator": "builtins.exec"}, "kind": 1}]
    rewrite(src, dst, edit_json(MODEL, edit))


def custom_object_argument(src: Path, dst: Path, marker: Path) -> None:
    def edit(doc: dict) -> None:
        node_named(doc, "relu")["inputs"] = [{"name": "self", "arg": {"as_custom_obj": {
            "name": "obj0", "class_fqn": "builtins.open"}}, "kind": 1}]
    rewrite(src, dst, edit_json(MODEL, edit))


def _retarget(target: str) -> Builder:
    def build(src: Path, dst: Path, marker: Path) -> None:
        def edit(doc: dict) -> None:
            relu = node_named(doc, "relu")
            relu["target"] = target
            relu["inputs"] = [{"name": "", "arg": {"as_string": code(marker)}, "kind": 1}]
        rewrite(src, dst, edit_json(MODEL, edit))
    return build


def huge_weight_shape(src: Path, dst: Path, marker: Path) -> None:
    def edit(config: dict) -> None:
        meta = config["config"]["1.weight"]["tensor_meta"]
        meta["sizes"] = [{"as_int": 1 << 40}, {"as_int": 16}]
    rewrite(src, dst, edit_json(WEIGHTS, edit), extra={"extra/x.py": code(marker).encode()})


def huge_input_shape(src: Path, dst: Path, marker: Path) -> None:
    def edit(doc: dict) -> None:
        values = doc["graph_module"]["graph"]["tensor_values"]
        values["input"]["sizes"][1:] = [{"as_int": 1 << 20}, {"as_int": 1 << 20},
                                        {"as_int": 1 << 20}]
    rewrite(src, dst, edit_json(MODEL, edit), extra={"extra/x.py": code(marker).encode()})


def huge_intermediate(src: Path, dst: Path, marker: Path) -> None:
    def edit(doc: dict) -> None:
        nodes(doc).insert(0, {
            "target": "torch.ops.aten.zeros.default",
            "inputs": [{"name": "size", "arg": {"as_ints": [1 << 20, 1 << 20]}, "kind": 1}],
            "outputs": [{"as_tensor": {"name": "huge"}}], "metadata": {}})
    rewrite(src, dst, edit_json(MODEL, edit), extra={"extra/x.py": code(marker).encode()})


def weight_view_past_its_bytes(src: Path, dst: Path, marker: Path) -> None:
    def edit(config: dict) -> None:
        config["config"]["1.weight"]["tensor_meta"]["storage_offset"] = {"as_int": 1 << 30}
    rewrite(src, dst, edit_json(WEIGHTS, edit), extra={"extra/x.py": code(marker).encode()})


def use_before_definition(src: Path, dst: Path, marker: Path) -> None:
    def edit(doc: dict) -> None:
        nodes(doc).reverse()
    rewrite(src, dst, edit_json(MODEL, edit), extra={"extra/x.py": code(marker).encode()})


#: case -> (builder, regex the one-line problem must match)
CASES: dict[str, tuple[Builder, str]] = {
    "sample_inputs_pickle": (sample_inputs_pickle,
                             r"refusing to unpickle: the program's example inputs are not "
                             r"tensor-only \(they name (builtins|io)\.open"),
    "sample_inputs_stack_global": (sample_inputs_stack_global,
                                   r"example inputs are not tensor-only .*(builtins|io)\.open"),
    "sample_inputs_bare_pickle": (sample_inputs_bare_pickle,
                                  "the example inputs are not a torch.save archive"),
    "weight_pickle": (weight_pickle, r"refusing to unpickle: weight 1\.weight is stored as a "
                                     "pickled Python object"),
    "constant_pickle": (constant_pickle, r"refusing to unpickle: constant c is stored as a "
                                         "pickled Python object"),
    "unreferenced_pickled_object": (unreferenced_pickled_object,
                                    r"refusing to unpickle: the archive holds a pickled object"),
    "case_variant_sample_inputs": (case_variant_sample_inputs, "differ only in letter case"),
    "case_variant_weights_config": (case_variant_weights_config, "differ only in letter case"),
    "case_variant_root": (case_variant_root, "differ only in letter case"),
    "renamed_program": (renamed_program, r"unexpected member 'models/Model\.json'"),
    "duplicate_member": (duplicate_member, "duplicate member names"),
    "traversal_member": (traversal_member, r"member named '\.\./.*'.*'\.\.'"),
    "absolute_member": (absolute_member, r"member named '/.*absolute path"),
    "nested_traversal_member": (nested_traversal_member, r"member named '.*/extra/\.\./\.\./"),
    "unexpected_member": (unexpected_member, r"unexpected member 'data/weights/payload\.pkl'"),
    "native_code": (native_code, "AOTInductor compiled native code"),
    "zip_bomb_ratio": (zip_bomb_ratio, r"extra/bomb\.bin would expand \d+:1 \(a zip bomb\?\)"),
    "zip_bomb_declared_size": (zip_bomb_declared_size, r"model\.json would expand \d+:1"),
    "zip_bomb_lying_size": (zip_bomb_lying_size, "holds more data than it declares"),
    "deep_json": (deep_json, r"models/model\.json is nested 100000 levels deep"),
    "deep_weights_config": (deep_weights_config, r"model_weights_config\.json is nested 5001"),
    "too_many_members": (too_many_members, r"has \d+ members \(at most 10000\)"),
    "injected_value_name": (injected_value_name, r"names a (node|value) ['\"]x = open\(.*not a "
                                                 "plain identifier"),
    "injected_node_name": (injected_node_name, r"names a node ['\"]relu\\nopen\(.*not a plain"),
    "injected_input_name": (injected_input_name, r"names the input ['\"]input=None.*not a plain"),
    "injected_parameter_name": (injected_parameter_name, r"weight named ['\"]1\.bias\"\),open\("
                                                         r".*not a dotted name"),
    "injected_dunder_parameter": (injected_dunder_parameter,
                                  r"named '__class__\.__init__\.__globals__', which is not a "
                                  "dotted name"),
    "injected_subgraph_name": (injected_subgraph_name, r"higher-order operator "
                                                       r"'torch\.ops\.higher_order\.cond'"),
    "guard_code": (guard_code, "guard code that is not a plain size check"),
    "guard_code_import": (guard_code_import, "guard code that is not a plain size check"),
    "shape_expression_code": (shape_expression_code,
                              "shape expression that is not plain arithmetic"),
    "higher_order_callable": (higher_order_callable,
                              r"higher-order operator 'torch\.ops\.higher_order\.map_impl'"),
    "callable_argument": (callable_argument, r"passes a callable to an operator"),
    "custom_object_argument": (custom_object_argument, r"passes a custom object to an operator"),
    "target_builtins_eval": (_retarget("builtins.eval"),
                             r"calls 'builtins\.eval', which is not a tensor operator"),
    "target_os_system": (_retarget("os.system"),
                         r"calls 'os\.system', which is not a tensor operator"),
    "target_torch_load": (_retarget("torch.load"),
                          r"calls 'torch\.load', which is not a tensor operator"),
    "target_operator_attrgetter": (_retarget("_operator.attrgetter"),
                                   r"calls '_operator\.attrgetter', which is not a tensor"),
    "target_dunder_op": (_retarget("torch.ops.aten.__class__.default"),
                         r"calls 'torch\.ops\.aten\.__class__\.default', which is not an ATen"),
    "target_other_namespace": (_retarget("torch.ops.profiler._record_function_enter.default"),
                               "which is not an ATen operator"),
    "target_aten_reading_a_file": (_retarget("torch.ops.aten.from_file.default"),
                                   r"from_file\.default', whose argument filename \(str\)"),
    "target_aten_printing": (_retarget("torch.ops.aten._print.default"),
                             r"_print\.default', whose argument s \(str\)"),
    "huge_weight_shape": (huge_weight_shape, r"weight 1\.weight declares 17592186044416 "
                                             r"elements"),
    "huge_input_shape": (huge_input_shape, r"the program's input declares \d+ elements"),
    "huge_intermediate": (huge_intermediate, r"aten\.zeros\.default makes a tensor of "
                                             r"1099511627776 elements"),
    "weight_view_past_its_bytes": (weight_view_past_its_bytes,
                                   r"weight 1\.weight does not fit the \d+ values stored"),
    "use_before_definition": (use_before_definition, r"value \w+ is used before it is defined"),
}


def mal_file(program: Path, dst: Path) -> Path:
    """A mal .safetensors whose architecture is ``program`` (recorded with its real sha256)."""
    import hashlib

    import safetensors.torch

    from mal_desktop.core.io.safetensors_io import encode_mal_metadata

    torch.manual_seed(0)
    state = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).state_dict()
    arch = {"kind": "pt2", "program": str(program),
            "sha256": hashlib.sha256(program.read_bytes()).hexdigest()}
    safetensors.torch.save_file(state, str(dst),
                                metadata=encode_mal_metadata(arch, (1, 4, 4), 3, {}))
    return dst

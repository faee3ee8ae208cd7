"""Discovery from a recorded forward pass (graph/record.py) gives the spec export gives, on our
families, on models in other people's styles and on transformers configs, and never imports
torch's compiler stack."""

from __future__ import annotations

import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from mal_desktop.core.arch.families import build_model, full_config
from mal_desktop.core.graph import discover
from mal_desktop.core.graph.discover import discover_spec
from mal_desktop.core.graph.record import RecordingRefused, _module_stack_hooks, record_graph
from mal_desktop.core.graph.selftest import self_test
from mal_desktop.core.io.model import LoadedModel

sys.path.insert(0, str(Path(__file__).parent))  # tests/core is not a package
import idiom_modules as im  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _family(family: str, **config: object) -> LoadedModel:
    cfg = full_config(family, {"input_shape": [1, 8, 8], "num_classes": 10, **config})
    torch.manual_seed(0)
    return LoadedModel(build_model(family, cfg), {"kind": "memory"}, (1, 8, 8), 10)


def _custom(module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype | None = None,
            vocab: int | None = None) -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel(module.eval(), {"kind": "memory"}, shape, 3, input_dtype=dtype,
                       input_range=vocab)


def _hf(name: str) -> LoadedModel:
    tf = pytest.importorskip("transformers")
    tf.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        if name == "bert":
            cfg = tf.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=24,
                                max_position_embeddings=16, num_labels=3)
            return _custom(im.Logits(tf.BertForSequenceClassification(cfg)), (6,), torch.int64, 40)
        if name == "gpt2":
            cfg = tf.GPT2Config(vocab_size=40, n_embd=16, n_layer=1, n_head=2, n_positions=16)
            return _custom(im.Logits(tf.GPT2LMHeadModel(cfg)), (6,), torch.int64, 40)
        if name == "llama-gqa":
            cfg = tf.LlamaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2,
                                 intermediate_size=24, max_position_embeddings=16)
            return _custom(im.Logits(tf.LlamaForCausalLM(cfg)), (6,), torch.int64, 40)
        cfg = tf.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16,
                           num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
                           num_labels=3)
        return _custom(im.Logits(tf.ViTForImageClassification(cfg), "pixel_values"), (1, 8, 8))


MODELS = {
    "mlp": lambda: _family("mlp", widths=[32, 24]),
    "cnn": lambda: _family("cnn"),
    "vgg": lambda: _family("vgg"),
    "resnet": lambda: _family("resnet", width=8, blocks=2),
    "mixer": lambda: _family("mixer"),
    "in-place residual": lambda: _custom(im.ResNet(), (1, 8, 8)),
    "position-major flatten": lambda: _custom(im.PosMajorCNN(), (1, 8, 8)),
    "prelu": lambda: _custom(im.PReLUNet(), (1, 8, 8)),
    "lstm": lambda: _custom(im.LSTMNet("lstm"), (4, 5)),
    "gru": lambda: _custom(im.LSTMNet("gru"), (4, 5)),
    "stacked bidirectional lstm": lambda: _custom(im.LSTMNet("lstm", 2, True), (4, 5)),
    "gpt2-style conv1d": lambda: _custom(im.Conv1DNet(), (4, 5)),
    "fused qkv, view into heads": lambda: _custom(im.TinyTransformer(), (4, 5)),
    "torch transformer encoder": lambda: _custom(im.TorchEncoder(), (4, 5)),
    "grouped-query sdpa": lambda: _custom(im.GroupedQueryAttention(), (4, 5)),
    "bert": lambda: _hf("bert"),
    "gpt2": lambda: _hf("gpt2"),
    "llama-gqa": lambda: _hf("llama-gqa"),
    "vit": lambda: _hf("vit"),
}


def _recorded_and_exported(model: LoadedModel, monkeypatch) -> tuple:
    recordings = []

    def spy(*args, **kwargs):
        graph = record_graph(*args, **kwargs)
        recordings.append(graph)
        return graph

    with monkeypatch.context() as patch:
        patch.setattr(discover, "record_graph", spy)
        recorded = discover_spec(model, cache=False)
    assert len(recordings) == 1, "discovery did not use the recording"
    with monkeypatch.context() as patch:
        patch.setattr(discover, "_recordable", lambda module: False)
        exported = discover_spec(model, cache=False)
    return recorded, exported


@pytest.mark.parametrize("name", sorted(MODELS))
def test_recording_gives_the_exported_spec(name: str, monkeypatch) -> None:
    model = MODELS[name]()
    recorded, exported = _recorded_and_exported(model, monkeypatch)
    assert recorded == exported
    assert any(not s.fixed for s in recorded.spaces.values())


def test_discovery_of_a_family_file_never_imports_the_compiler_stack(tmp_path) -> None:
    """A mal file without a stored spec, an empty spec cache: discovery records the forward
    pass; ``torch._dynamo`` (1-1.5 s to import) stays out of the process."""
    code = f"""
import sys, torch
sys.path.insert(0, {str(ROOT)!r})
from mal_desktop.core.arch.families import build_model, full_config
from mal_desktop.core.graph.discover import discover_spec
from mal_desktop.core.graph.selftest import self_test
from mal_desktop.core.io.files import load_model, save_model
from mal_desktop.core.io.model import LoadedModel
for family, extra in (("mlp", {{"widths": [16, 16]}}), ("resnet", {{"width": 8, "blocks": 1}})):
    cfg = full_config(family, {{"input_shape": [1, 8, 8], "num_classes": 10, **extra}})
    made = LoadedModel(build_model(family, cfg), {{"kind": "family", "family": family,
                       "config": cfg}}, (1, 8, 8), 10, metadata={{"name": family}})
    path = {str(tmp_path)!r} + f"/{{family}}.safetensors"
    save_model(made, path)
    model = load_model(path)
    assert model.stored_spec is None
    spec = discover_spec(model)
    assert sum(not s.fixed for s in spec.spaces.values()) >= 2, spec.spaces
    assert self_test(model, spec).passed
print("dynamo imported:", "torch._dynamo" in sys.modules)
"""
    env = {"MAL_SPEC_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "dynamo imported: False" in out.stdout


class _WritesIntoItsInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(2.0)  # export functionalises this into an input mutation
        return self.fc2(torch.relu(self.fc1(x)))


class _WritesIntoAView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        h[:, :2] += 1.0  # only two units: the hidden space is no longer free
        return self.fc2(h)


@pytest.mark.parametrize("module", [_WritesIntoItsInput, _WritesIntoAView])
def test_writes_a_recording_cannot_represent_fall_back_to_export(module, monkeypatch) -> None:
    model = _custom(module(), (5,))
    with pytest.raises(RecordingRefused, match="writes into"):
        record_graph(model.module, model.example_input(2))
    with monkeypatch.context() as patch:
        patch.setattr(discover, "_recordable", lambda m: False)
        exported = discover_spec(model, cache=False)
    assert discover_spec(model, cache=False) == exported
    # the first two hidden units are set apart: that space is not free; the other is
    assert exported.spaces["P_fc1"].fixed == (module is _WritesIntoAView)


def test_a_plain_tensor_attribute_pins_what_it_touches_as_under_export(monkeypatch) -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(5, 8), nn.Linear(8, 3)
            self.scale = torch.linspace(0.5, 1.5, 8)  # not a buffer: a constant, per unit

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x)) * self.scale)

    recorded, exported = _recorded_and_exported(_custom(Scaled(), (5,)), monkeypatch)
    assert recorded == exported
    assert all(s.fixed for s in recorded.spaces.values())


def test_recordings_in_several_threads_do_not_see_each_others_ops() -> None:
    """torch keeps the PreDispatch mode in one process-wide slot: the app discovers in worker
    threads, so concurrent recordings (and exports) take turns."""
    names = ["mlp", "cnn", "resnet", "lstm", "fused qkv, view into heads", "prelu"]
    models = {n: MODELS[n]() for n in names}
    expected = {n: discover_spec(m, cache=False) for n, m in models.items()}
    got: dict[str, object] = {}

    def run(name: str) -> None:
        for _ in range(3):
            got[name] = discover_spec(models[name], cache=False)
            if got[name] != expected[name]:
                return

    errors: list[BaseException] = []

    def evaluate(name: str) -> None:  # the same module run meanwhile, as the app's evaluation does
        try:
            with torch.no_grad():
                for _ in range(200):
                    models[name].module(models[name].example_input(4))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    threads += [threading.Thread(target=evaluate, args=(n,)) for n in ("resnet", "lstm")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert got == expected
    assert not errors


def test_a_caller_under_no_grad_gets_the_same_spec() -> None:
    """Under no_grad torch's encoder layer takes a fused fast path (one op nothing can see
    into); the recording runs with grad on, as export does."""
    model = MODELS["torch transformer encoder"]()
    with torch.no_grad():
        under = discover_spec(model, cache=False)
    assert under == discover_spec(model, cache=False)
    assert not under.unsupported


def test_module_paths_come_from_the_recording_threads_calls_only() -> None:
    """The hooks naming the calling module see every thread's forward passes; another thread
    running the model meanwhile must neither add to the path nor pop it empty (IndexError in
    that thread)."""
    module = MODELS["resnet"]().module
    stack: list[tuple[str, str]] = []
    seen: list[list] = []
    probe = module.head.register_forward_hook(lambda m, a, o: seen.append(list(stack)))
    handles = _module_stack_hooks(module, stack)
    try:
        other = threading.Thread(target=module, args=(torch.randn(2, 1, 8, 8),))
        other.start()
        other.join()
        module(torch.randn(2, 1, 8, 8))
    finally:
        for handle in [probe, *handles]:
            handle.remove()
    assert seen[0] == []  # the other thread's call
    assert [path for path, _ in seen[1]] == ["head"]


class _BranchOnValue(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.a, self.b = nn.Linear(5, 8), nn.Linear(8, 3), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.a(h) if h.mean() > 0.2 else self.b(h)  # the probe takes one branch only


class _SkipsAnExpert(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.experts = nn.Linear(5, 8), nn.ModuleList(nn.Linear(8, 3) for _ in range(2))
        self.active = [0]  # which experts run: set elsewhere, never read from a tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return sum(self.experts[i](h) for i in self.active)


@pytest.mark.parametrize("module,why", [(_BranchOnValue, "reads values computed from its input"),
                                        (_SkipsAnExpert, "did not reach 2 parameter")])
def test_a_path_the_probe_did_not_take_is_not_recorded(module, why) -> None:
    """A recording holds the probe's path only: a parameter another input would reach would
    look unconstrained (its spaces free), so such a forward is refused (export decides)."""
    model = _custom(module(), (5,))
    with pytest.raises(RecordingRefused, match=why):
        record_graph(model.module, model.example_input(2))


def test_frozen_weights_do_not_hide_attention_in_a_fused_fast_path(monkeypatch) -> None:
    model = MODELS["torch transformer encoder"]()
    model.module.requires_grad_(False)  # torch's encoder then runs one fused op under eval
    with monkeypatch.context() as patch:
        patch.setattr(discover, "_recordable", lambda m: False)
        exported = discover_spec(model, cache=False)
    assert discover_spec(model, cache=False) == exported
    assert any(name.startswith("P_heads") and not space.fixed
               for name, space in exported.spaces.items())


def test_an_in_place_reshape_later_does_not_change_what_an_op_recorded(monkeypatch) -> None:
    class Unsqueezed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(5, 8), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc1(x)
            r = torch.relu(h)
            h.unsqueeze_(1)  # the linear's result becomes 3-D after the linear ran
            return self.fc2(r + h.squeeze(1))

    recorded, exported = _recorded_and_exported(_custom(Unsqueezed(), (5,)), monkeypatch)
    assert recorded == exported
    assert not recorded.spaces["P_fc1"].fixed


def test_recording_leaves_training_flags_and_random_streams_as_they_were() -> None:
    class Sampling(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.drop = nn.Linear(5, 8), nn.Linear(8, 3), nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.fc1(x))
            return self.fc2(self.drop(h + torch.randn_like(h)))  # a VAE-style sample

    module = Sampling().train()
    module.fc2.eval()
    flags = [m.training for m in module.modules()]
    model = _custom(module, (5,))
    model.module.train()  # _custom put it in eval
    model.module.fc2.eval()
    torch.manual_seed(0)
    discover_spec(model, cache=False)
    drawn = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(drawn, torch.rand(1))
    assert [m.training for m in model.module.modules()] == flags


def test_a_bfloat16_model_is_recorded_with_a_probe_of_its_dtype(monkeypatch) -> None:
    model = _custom(nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).to(torch.bfloat16),
                    (5,))
    recorded, exported = _recorded_and_exported(model, monkeypatch)
    assert recorded == exported and not recorded.spaces["P_0"].fixed


def test_a_tensor_made_in_the_forward_from_a_python_list_is_an_ordinary_constant(
        monkeypatch) -> None:
    class Scales(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(5, 4), nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x)) * torch.tensor([1.0, 2.0, 3.0, 4.0]))

    recorded, exported = _recorded_and_exported(_custom(Scales(), (4 + 1,)), monkeypatch)
    assert recorded == exported  # reasons and the unsupported list included


def test_a_value_read_on_constants_alone_still_records(monkeypatch) -> None:
    """transformers' causal mask checks its own position ids (``(...).all()``): the same for
    every input and weight, so the recording goes on (a Llama folder would else export)."""
    class ChecksPositions(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(5, 8), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            positions = torch.arange(x.shape[0])
            scale = 2.0 if bool((positions >= 0).all()) else 1.0
            return self.fc2(torch.relu(self.fc1(x)) * scale)

    model = _custom(ChecksPositions(), (5,))
    graph = record_graph(model.module, model.example_input(2))  # export refuses this forward
    assert not any("is_nonzero" in str(node.target) for node in graph.graph.nodes)
    spec = discover_spec(model, cache=False)
    assert not spec.spaces["P_fc1"].fixed and self_test(model, spec).passed


def test_a_file_carrying_its_spec_is_recorded_before_its_spec_is_checked(small_zoo, tmp_path,
                                                                         monkeypatch) -> None:
    """Checking a stored spec costs a self-test (~2 forward passes per space: 100-350 ms at
    widths 1024-2048), a recording one pass: with an empty cache, a model that can be recorded
    is, and the stored spec is not even read."""
    from mal_desktop.core.io.files import load_model

    monkeypatch.setenv("MAL_SPEC_CACHE", str(tmp_path / "empty-cache"))
    model = load_model(small_zoo.path_of("resnet-w8-s0"))
    assert model.stored_spec is not None

    def refuse(*args, **kwargs):
        raise AssertionError("the stored spec was checked although a recording could be made")

    monkeypatch.setattr(discover, "verified_file_spec", refuse)
    spec = discover_spec(model)
    monkeypatch.undo()
    assert spec == discover_spec(model, cache=False)

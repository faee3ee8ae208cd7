"""Loading builds the architecture on the meta device and attaches the file's memory-mapped
tensors: no parameter is randomly initialised in real memory, no copy is made, buffers a state
does not carry and tied weights come out right."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mal_desktop.core.arch.families import build_model
from mal_desktop.core.io.files import load_model, save_model
from mal_desktop.core.io.model import LoadedModel

sys.path.insert(0, str(Path(__file__).parent))  # tests/core is not a package
import meta_factories  # noqa: E402


@contextmanager
def initialisations(monkeypatch: pytest.MonkeyPatch):
    """Record, for every Linear weight initialised meanwhile, whether it lived on meta."""
    seen: list[bool] = []
    real = nn.init.kaiming_uniform_

    def record(tensor, *args, **kwargs):
        seen.append(tensor.is_meta)
        return real(tensor, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(nn.init, "kaiming_uniform_", record)
        yield seen


def _file_mapped(t: torch.Tensor) -> bool:
    ptr = t.data_ptr()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if start <= ptr < end:
                return len(parts) > 5 and parts[5].endswith(".safetensors")
    return False


def test_family_weights_are_the_files_mapped_tensors(tmp_path, monkeypatch):
    torch.manual_seed(0)
    config = {"widths": [16, 16]}
    module = build_model("mlp", config)
    path = save_model(LoadedModel(module, {"kind": "family", "family": "mlp", "config": config},
                                  (1, 8, 8), 10), tmp_path / "m.safetensors")
    with initialisations(monkeypatch) as seen:
        loaded = load_model(path)
    assert seen and all(seen)  # built on meta: nothing initialised in memory
    for key, t in loaded.module.state_dict().items():
        assert torch.equal(t, module.state_dict()[key])
        if sys.platform.startswith("linux"):
            assert _file_mapped(t), f"{key} was copied, not mapped"


def test_factory_buffers_and_ties_survive_a_meta_build(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    torch.manual_seed(1)
    source = meta_factories.rotaryish().eval()
    state = {k: v.detach().clone() for k, v in source.state_dict().items()}
    path = tmp_path / "plain.safetensors"
    save_file(state, str(path))  # tied keys stored twice, as plain checkpoints do
    with initialisations(monkeypatch) as seen:
        loaded = load_model(path, "meta_factories:rotaryish")
    assert seen and all(seen)  # parameters built on meta; nothing initialised in memory
    module = loaded.module
    assert module.back.weight is module.out.weight  # still tied
    assert torch.equal(module.freq, source.freq) and not module.freq.is_meta
    x = torch.randn(3, 6)
    assert torch.equal(module(x), source(x))

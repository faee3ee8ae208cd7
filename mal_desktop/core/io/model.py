"""The in-memory model every part of the engine works on."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .hashing import cached_file_sha256, folder_files_sha256
from .inputs import program_id_range, program_input_dtype, random_input
from .meta import meta_leftovers, meta_twin, retie, tie_groups


@dataclass
class LoadedModel:
    """A runnable model plus what is needed to rebuild, inspect and save it.

    module: runnable ``nn.Module`` in eval mode (for a .pt2 file, the exported program's module).
    arch: how to rebuild the architecture, JSON-able:
        {"kind": "family", "family": "mlp", "config": {...}}
        {"kind": "pt2", "program": "/abs/path.pt2", "sha256": "..."}
        {"kind": "factory", "factory": "module:function"}
        {"kind": "hf", "class": "LlamaForCausalLM", "config": {...}, "tokenizer": "/abs/path"}
    input_shape: per-sample input shape (no batch axis), e.g. (1, 8, 8).
    num_classes: size of the output (class) axis.
    form: "mal-safetensors" | "pt2" | "state-dict" | "hf-folder" | "memory".
    path / sha256: the file (or Hugging Face model folder) it came from (None for models made
        in memory); a folder's sha256 covers its config, weights and tokenizer.
    metadata: provenance (dataset, seed, accuracy, plan, input hashes, ...), JSON-able.
    program: the ``torch.export.ExportedProgram`` when one is at hand (.pt2 files); discovery
        exports the module otherwise.
    input_dtype: the dtype of the input (e.g. torch.int64 for token ids); None: the program's
        input dtype when there is a program, float32 otherwise.
    input_range: integer inputs are ids below this (an embedding's rows); None: found from the
        program's embeddings when there is one.
    output_index: which output is the class logits when the module returns several (default 0).
    outputs: how many outputs the module returns (1 for one tensor; 0 when not known: a factory
        that declares its sizes is not probed).
    folder_files: for a model folder (``path`` a directory), the files inside it that its
        content hash covers (config, index, weights, tokenizer); empty for a single file.
    stored_spec: the permutation spec record a mal file carries ({"key", "spec"}, JSON), not
        verified: discovery uses it only when it fits and passes the self-test
        (``graph.file_spec``); None when the file carries none.
    """

    module: nn.Module
    arch: dict[str, Any]
    input_shape: tuple[int, ...]
    num_classes: int
    form: str = "memory"
    path: Path | None = None
    sha256: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    program: Any = None
    input_dtype: torch.dtype | None = None
    input_range: int | None = None
    output_index: int = 0
    outputs: int = 1
    folder_files: tuple[str, ...] = ()
    stored_spec: dict[str, Any] | None = None

    def output_note(self) -> str | None:
        """For a model returning several outputs, one line naming the output used as the
        logits (and how to choose another); None for a model with one output."""
        if self.outputs <= 1:
            return None
        return (f"{self.name} returns {self.outputs} outputs; output {self.output_index} "
                f"(numbered from 0) is used as the logits ({self.num_classes} classes)")

    @property
    def name(self) -> str:
        if self.path is None:
            return str(self.metadata.get("name", "model"))
        # a folder's name is all of it ("Qwen2.5-0.5B" has no suffix to drop)
        return self.path.name if self.form == "hf-folder" else self.path.stem

    def state(self) -> dict[str, torch.Tensor]:
        """The model's state (parameters and buffers), detached; do not modify in place."""
        return {k: v.detach() for k, v in self.module.state_dict().items()}

    def content_sha256(self) -> str | None:
        """SHA-256 of the file the model came from, or for a model folder the content hash of
        its ``folder_files`` (``folder_files_sha256``); computed on first use, each file cached
        per file version (``cached_file_sha256``), so opening a model never hashes it. None for
        a model made in memory or whose file is gone.

        Raises:
            OSError: a file cannot be read.
        """
        if self.sha256 is not None:
            return self.sha256
        if self.path is None:
            return None
        if self.folder_files:
            return folder_files_sha256(self.path, self.folder_files) if self.path.is_dir() \
                else None
        if not self.path.is_file():
            return None
        return cached_file_sha256(self.path)

    def with_state(self, state: dict[str, torch.Tensor], share: bool = False,
                   **changes: Any) -> "LoadedModel":
        """A copy with new weights (same keys and shapes); the original is untouched.

        share: False (default) gives the copy its own tensors (one clone of ``state``: it may be
        modified in place, e.g. by ``load_state_dict``). True attaches ``state``'s tensors
        themselves: keys the caller did not change stay shared with this model, memory-mapped
        pages included, so a merge of one layer of a large model costs that layer, not a second
        model; neither model's tensors may then be modified in place.
        """
        module = meta_twin(self.module)
        expected = module.state_dict(keep_vars=True)
        fitted = {k: v if k not in expected or v.dtype == expected[k].dtype
                  else v.to(expected[k].dtype) for k, v in state.items()}
        if not share:  # one copy; a dtype conversion above already made one
            fitted = {k: v.clone() if v is state[k] else v for k, v in fitted.items()}
        module.load_state_dict(fitted, strict=True, assign=True)
        retie(module, tie_groups(self.module))
        left = meta_leftovers(module)
        if left:  # non-persistent buffers are not in a state: take this model's own
            own = dict(self.module.named_buffers(remove_duplicate=False))
            for name in left:
                owner, _, attr = name.rpartition(".")
                module.get_submodule(owner)._buffers[attr] = own[name]
        return replace(self, module=module.eval(), form="memory", path=None, sha256=None,
                       folder_files=(), **changes)

    def probe_dtype(self) -> torch.dtype:
        """The input dtype: ``input_dtype``, else the program's, else float32."""
        if self.input_dtype is not None:
            return self.input_dtype
        if self.program is not None:
            return program_input_dtype(self.program) or torch.float32
        return torch.float32

    def id_range(self) -> int | None:
        """For integer inputs, ids stay below this; None when unknown or not ids."""
        if self.input_range is not None:
            return self.input_range
        return program_id_range(self.program) if self.program is not None else None

    def example_input(self, batch: int = 2, seed: int = 0) -> torch.Tensor:
        """A deterministic random probe batch of the model's input shape and dtype (token ids
        below the embedding size for integer inputs)."""
        gen = torch.Generator().manual_seed(seed)
        return random_input((batch, *self.input_shape), self.probe_dtype(), self.id_range(), gen)


"""Opening Hugging Face model folders: time and memory of ``read_header`` and ``load_model``.

1. **Header of a 7B-shaped folder.** A Llama-2-7B-shaped folder (bf16, two shards, 13.5 GB)
   whose data sections are holes (sparse files: no disk space, nothing to read) is described by
   ``read_header``; measured in a fresh process after the imports (torch, mal_desktop's io,
   transformers' Llama class), so the numbers are the header work itself.
2. **Loading a real folder.** A random Llama (``--layers``, hidden 1024, bf16) written with
   ``save_pretrained``, opened by ``load_model`` (memory-mapped, assigned into a meta-device
   model; every weight is read once by the NaN/inf check) and by transformers'
   ``from_pretrained``, each in a fresh process: wall time, peak RSS added by the call (mapped
   file pages included) and the anonymous memory (copies) it left, as ratios of the weights'
   size.

    python benchmarks/hf_folder_open.py [--layers 8] [--dir DIR]

Needs the optional ``[hf]`` extra. Numbers are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's mal_desktop, in this process and the probes
LLAMA_7B = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 32000,
            "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32,
            "max_position_embeddings": 4096, "tie_word_embeddings": False}

# Run in a fresh interpreter: prints one JSON line with seconds, peak RSS and anonymous RSS.
PROBE = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {repo!r})
    import torch, transformers
    from mal_desktop.core.io.files import load_model, read_header
    transformers.LlamaForCausalLM  # the class import (seconds) is not what is measured
    transformers.logging.set_verbosity_error()
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    # the import spikes set the peak; "5" resets it to the current RSS (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS")
    anon0 = status("RssAnon")
    t0 = time.perf_counter()
    what = {what!r}
    if what == "header":
        header = read_header({path!r})
        extra = {{"parameters": header.num_parameters, "bytes": header.nbytes}}
    elif what == "load":
        model = load_model({path!r})
        extra = {{}}
    elif what == "from_pretrained":
        model = transformers.LlamaForCausalLM.from_pretrained({path!r}, dtype="auto",
                                                              local_files_only=True)
        extra = {{}}
    else:
        extra = {{}}
    seconds = time.perf_counter() - t0
    print(json.dumps({{"seconds": seconds, "peak_added": status("VmHWM") - before,
                      "anon_added": status("RssAnon") - anon0, **extra}}))
""")


def probe(what: str, path: Path) -> dict:
    code = PROBE.format(repo=str(REPO), what=what, path=str(path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def sparse_folder(folder: Path) -> Path:
    """The 7B-shaped folder, data sections as holes."""
    import torch

    from mal_desktop.core.io.hf_config import build_module

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(LLAMA_7B))
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in
                  build_module(folder, LLAMA_7B).state_dict().items()}
    names = sorted(shapes)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        shard = f"model-{i + 1:05d}-of-00002.safetensors"
        header, offset = {}, 0
        for name in part:
            n = math.prod(shapes[name]) * 2
            header[name] = {"dtype": "BF16", "shape": list(shapes[name]),
                            "data_offsets": [offset, offset + n]}
            offset += n
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with open(folder / shard, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            f.truncate(8 + len(raw) + offset)
        weight_map.update({k: shard for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


def real_folder(folder: Path, layers: int) -> tuple[Path, int]:
    """A random bf16 Llama of ``layers`` layers saved by transformers; returns it and its
    weight bytes."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816,
                                      num_hidden_layers=layers, num_attention_heads=16,
                                      num_key_value_heads=4, max_position_embeddings=2048)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder, max_shard_size="200MB")
    return folder, sum(p.numel() * p.element_size() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8, help="layers of the real folder")
    parser.add_argument("--dir", help="work folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir) if args.dir else Path(tmp)
        mib = 2**20

        big = sparse_folder(root / "llama-7b-shaped")
        h = probe("header", big)
        print(f"\n1. read_header, 7B-shaped folder ({h['parameters'] / 1e9:.2f}B parameters, "
              f"{h['bytes'] / 2**30:.1f} GiB bf16 in 2 shards of holes)")
        print(f"   {h['seconds']:.2f} s, peak RSS +{h['peak_added'] / mib:.1f} MiB over the "
              "process before the call (torch, transformers' Llama class imported)")

        folder, nbytes = real_folder(root / "llama-real", args.layers)
        print(f"\n2. loading a real folder: {args.layers} layers, {nbytes / mib:.0f} MiB of "
              "bf16 weights")
        for what in ("load", "from_pretrained"):
            r = probe(what, folder)
            label = "mal load_model" if what == "load" else "transformers from_pretrained"
            print(f"   {label:<30} {r['seconds']:6.2f} s   peak RSS added "
                  f"{r['peak_added'] / nbytes:5.2f}x the weights, of which copies (anonymous "
                  f"memory) {r['anon_added'] / nbytes:5.2f}x")


if __name__ == "__main__":
    main()

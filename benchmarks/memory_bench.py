"""Memory and time of opening, inspecting and merging a large checkpoint; .pt2 vs plain torch.

    python benchmarks/memory_bench.py [--blocks 2] [--vocab 8000] [--dir /tmp/x] [--keep]
                                      [--code DIR] [--json PATH] [--threads 1]
                                      [--skip-pt2] [--skip-memory] [--repeats 3] [--grid 11]
                                      [--pt2-models mixer vit]
                                      [--hidden 4096 --mlp 11008 --heads 32]  (smaller: a smoke run)

Part 1 writes two checkpoints of a Llama-7B-shaped network (hidden 4096, MLP 11008, 32 heads,
``--blocks`` decoder blocks, ``--vocab`` embedding rows, random bf16 values, seeds 0 and 1) with
mal's own streaming safetensors writer, as plain state dicts opened through ``--arch
memory_bench:llama_blocks`` (transformers' LlamaModel + an lm_head, fed hidden states). Then, each
in a fresh subprocess whose peak resident set is reported (VmHWM from /proc/self/status, which
counts memory-mapped file pages too; ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` where there is
no /proc: on Linux ru_maxrss also keeps the resident set the parent had when it forked, so a
child of a process that just wrote 2 GB would report that much, whatever it did itself):

- baseline: the imports only (torch, transformers, mal's core);
- open:     ``read_header`` + ``load_model`` + discovery (cold spec cache) + the layer tree
            without statistics;
- inspect:  what ``mal inspect`` does: load, discovery (spec cached), the tree with statistics;
- merge:    ``assemble_job`` merging block 0 (its 7 linear layers, lambda 0.5, no alignment)
            of the second checkpoint into the first, saved to a .safetensors file;
- curve:    ``model_curve_job`` of one layer (block 0's ``down_proj``, no alignment, 3 lambdas)
            on 16 random hidden-state samples: the base evaluated with that layer merged.

Each is printed against the tensor bytes it involves (the whole model for open/inspect, the two
blocks for the merge) as ratios, with and without the baseline.

Part 2 times, each in a fresh subprocess, loading, inspecting (cold spec cache), the
permutation self-test (load + discovery + ``self_test``), evaluating (digits test split) and a
whole-model curve (``model_curve_job``: weight matching and ``--grid`` lambdas, naive and
aligned) of two models as .pt2 programs (exported with a static batch of 2, torch.export's
default) and as the same models in plain torch: the demo MLP-Mixer (a mal safetensors file) and
a small ViT (a plain state dict with ``--arch memory_bench:vit_small``). Each measurement is
repeated ``--repeats`` times, both forms interleaved, and the medians are printed with the
.pt2 / torch ratios.

``--code DIR`` runs the subprocesses against another checkout of mal_desktop (e.g. the main
branch, for before/after figures). Files go to ``--dir`` (default: a temporary folder, removed
at the end unless ``--keep``); the two default checkpoints take about 1.9 GB, the merge output
0.9 GB more.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# ------------------------------------------------------------------------------ the architecture

LLAMA_7B = {"hidden": 4096, "mlp": 11008, "heads": 32, "blocks": 2, "vocab": 8000}


def _config() -> dict:
    return {**LLAMA_7B, **json.loads(os.environ.get("MAL_BENCH_LLAMA", "{}"))}


def llama_blocks():
    """``--arch memory_bench:llama_blocks``: Llama-7B-shaped decoder blocks (bf16) fed hidden
    states (float input, so the probe needs no token ids), then the final norm and an lm_head.
    Sizes come from $MAL_BENCH_LLAMA (keys of ``LLAMA_7B``)."""
    import torch
    import transformers
    from torch import nn

    transformers.logging.set_verbosity_error()
    c = _config()
    hidden = c["hidden"]
    cfg = transformers.LlamaConfig(vocab_size=c["vocab"], hidden_size=hidden,
                                   intermediate_size=c["mlp"], num_hidden_layers=c["blocks"],
                                   num_attention_heads=c["heads"], num_key_value_heads=c["heads"],
                                   max_position_embeddings=64)

    class LlamaBlocks(nn.Module):
        input_shape = (8, hidden)
        num_classes = c["vocab"]

        def __init__(self) -> None:
            super().__init__()
            self.model = transformers.LlamaModel(cfg)
            self.lm_head = nn.Linear(hidden, c["vocab"], bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.model(inputs_embeds=x.to(self.lm_head.weight.dtype)).last_hidden_state
            return self.lm_head(h[:, -1])  # the next token's logits: (batch, vocab)

    return LlamaBlocks().to(torch.bfloat16)


ARCH = "memory_bench:llama_blocks"
THREADS = 1  # torch threads of the measured processes (--threads)


class _RandomOnSecondRead(dict):
    """The checkpoint's tensors, made when the writer reads them: ``write_safetensors`` reads
    each entry twice, once for the header (only shape and dtype count: an uninitialised tensor,
    whose pages are never touched) and once for the data (random values, freed after writing).
    So generating a 2 GB checkpoint holds one tensor at a time."""

    def __init__(self, shapes: dict, seed: int) -> None:
        super().__init__(shapes)
        self.seed, self.reads = seed, {}

    def __getitem__(self, key):
        import torch

        shape = super().__getitem__(key)
        self.reads[key] = self.reads.get(key, 0) + 1
        if self.reads[key] == 1:
            return torch.empty(shape, dtype=torch.bfloat16)
        gen = torch.Generator().manual_seed(self.seed * 100003 + sorted(self).index(key))
        if len(shape) == 1:  # norms: around 1, as trained RMSNorm weights are
            return (1 + 0.1 * torch.randn(shape, generator=gen)).to(torch.bfloat16)
        return (0.02 * torch.randn(shape, generator=gen)).to(torch.bfloat16)


def write_checkpoint(path: Path, seed: int) -> int:
    """A random bf16 checkpoint of ``llama_blocks``'s state, streamed; returns its tensor bytes."""
    import torch

    from mal_desktop.core.io.meta import params_on_meta
    from mal_desktop.core.io.safetensors_io import write_safetensors

    with params_on_meta():
        shapes = {k: tuple(v.shape) for k, v in llama_blocks().state_dict().items()}
    write_safetensors(path, _RandomOnSecondRead(shapes, seed), {"format": "pt"})
    return sum(torch.Size(s).numel() * 2 for s in shapes.values())


# ------------------------------------------------------------------------------ measurements

CHILD = r'''
import json, os, resource, sys, time
t_start = time.perf_counter()
import torch
mode, args = sys.argv[1], json.loads(sys.argv[2])
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
from mal_desktop.core.graph.discover import discover_spec
from mal_desktop.core.graph.tree import build_layer_tree
from mal_desktop.core.io.files import load_model, read_header
from mal_desktop.core.jobs import assemble_job
from mal_desktop.core.progress import run_job
if args.get("transformers"):
    import transformers
t_imports = time.perf_counter()
out = {"code": __import__("mal_desktop").__file__}
if mode == "baseline":
    pass
elif mode in ("open", "inspect"):
    read_header(args["path"])
    model = load_model(args["path"], args.get("arch"))
    spec = discover_spec(model)
    try:
        tree = build_layer_tree(model, spec, stats=(mode == "inspect"))
    except TypeError:  # a checkout whose build_layer_tree always computes statistics
        tree = build_layer_tree(model, spec)
    out["layers"] = len(spec.layers)
elif mode == "merge":
    from mal_desktop.core.merge.plan import AssemblyPlan
    plan = AssemblyPlan.from_json(args["plan"])
    result = run_job(assemble_job(plan, out=args["out"], arch=args.get("arch")))
    out["out_bytes"] = os.path.getsize(args["out"])
elif mode == "layer-curve":
    from mal_desktop.core.evaluate.datasets import Dataset
    from mal_desktop.core.jobs import model_curve_job
    gen = torch.Generator().manual_seed(0)
    shape, vocab = args["input_shape"], args["vocab"]
    x = torch.randn((args["samples"], *shape), generator=gen)
    y = torch.randint(0, vocab, (args["samples"],), generator=gen)
    data = Dataset("random-hidden-states", x, y, x, y, vocab)
    result = run_job(model_curve_job(args["path"], args["target"], data, align="none",
                                     layers=[(args["layer"], args["layer"])], grid=args["grid"],
                                     arch=args.get("arch")))
    out["points"] = len(result.lambdas)
elif mode == "evaluate":
    from mal_desktop.core.evaluate.datasets import load_dataset
    from mal_desktop.core.evaluate.evaluator import evaluate_model
    data = load_dataset("digits")
    t_imports = time.perf_counter()
    model = load_model(args["path"], args.get("arch"))
    out["accuracy"] = evaluate_model(model, data).accuracy
elif mode == "load":
    load_model(args["path"], args.get("arch"))
elif mode == "selftest":
    from mal_desktop.core.graph.selftest import self_test
    model = load_model(args["path"], args.get("arch"))
    out["selftest"] = self_test(model, discover_spec(model)).status
elif mode == "curve":
    from mal_desktop.core.evaluate.datasets import load_dataset
    from mal_desktop.core.jobs import model_curve_job
    data = load_dataset("digits")
    t_imports = time.perf_counter()
    result = run_job(model_curve_job(args["path"], args["target"], data, grid=args["grid"],
                                     arch=args.get("arch")))
    out["barrier"] = result.aligned.barrier if hasattr(result, "aligned") else None
t_end = time.perf_counter()
def vm_hwm():
    # this process's own peak: ru_maxrss also keeps the parent's resident set at fork/exec
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
out.update(peak_bytes=vm_hwm() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           ru_maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           seconds=t_end - t_imports, imports=t_imports - t_start)
print("RESULT " + json.dumps(out))
'''


def child(mode: str, args: dict, env: dict) -> dict:
    """Run one measurement in a fresh interpreter; its JSON result (peak_bytes, seconds, ...)."""
    start = time.perf_counter()
    # -P: no current folder on sys.path, so --code decides which mal_desktop is measured
    proc = subprocess.run([sys.executable, "-P", "-c", CHILD, mode, json.dumps(args)], env=env,
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    result["wall"] = time.perf_counter() - start
    return result


def _env(code: Path, cache: Path, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(code), str(HERE), env.get("PYTHONPATH", "")])
    env["MAL_SPEC_CACHE"] = str(cache / "specs")
    env["MAL_HASH_CACHE"] = str(cache / "hashes")
    env["OMP_NUM_THREADS"] = str(THREADS)
    env.update(extra or {})
    return env


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def part_memory(work: Path, code: Path, sizes: dict) -> dict:
    import torch  # noqa: F401 - the parent writes the checkpoints

    from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep

    os.environ["MAL_BENCH_LLAMA"] = json.dumps(sizes)
    c = _config()
    a, b = work / "llama-a.safetensors", work / "llama-b.safetensors"
    t0 = time.perf_counter()
    model_bytes = write_checkpoint(a, 0)
    write_checkpoint(b, 1)
    print(f"wrote 2 checkpoints of {gib(model_bytes)} ({c}) in "
          f"{time.perf_counter() - t0:.1f} s")
    layers = [f"model.layers.0.self_attn.{p}_proj" for p in "qkvo"] + \
             [f"model.layers.0.mlp.{p}_proj" for p in ("gate", "up", "down")]
    h = c["hidden"]
    block_bytes = 2 * (4 * h * h + 3 * h * c["mlp"] + 2 * h)  # bf16 weights + 2 norms
    plan = AssemblyPlan(base=str(a), zoo={"b": str(b)},
                        steps=[AssemblyStep("b", name, name, 0.5, "none") for name in layers])
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # open measures a cold discovery; inspect reuses it
    env = _env(code, cache, {"MAL_BENCH_LLAMA": os.environ["MAL_BENCH_LLAMA"]})
    common = {"arch": ARCH, "transformers": True}
    rows = {}
    rows["baseline"] = child("baseline", common, env)
    rows["open"] = child("open", {**common, "path": str(a)}, env)
    rows["inspect"] = child("inspect", {**common, "path": str(a)}, env)
    out = work / "merged.safetensors"
    rows["merge"] = child("merge", {**common, "plan": plan.to_json(), "out": str(out)}, env)
    out.unlink(missing_ok=True)
    down = "model.layers.0.mlp.down_proj"
    rows["curve"] = child("layer-curve", {**common, "path": str(a), "target": str(b),
                                          "layer": down, "grid": 3, "samples": 16,
                                          "input_shape": [8, h], "vocab": c["vocab"]}, env)
    base = rows["baseline"]["peak_bytes"]
    involved = {"open": model_bytes, "inspect": model_bytes, "merge": 2 * block_bytes,
                "curve": model_bytes}
    print(f"\nPeak RSS (VmHWM, includes mapped file pages); baseline = imports only: "
          f"{gib(base)}")
    print(f"{'':8} {'peak':>10} {'peak-base':>10} {'tensors':>10} {'peak/T':>7} "
          f"{'(peak-base)/T':>14} {'time s':>7}")
    for name in ("open", "inspect", "merge", "curve"):
        r = rows[name]
        t = involved[name]
        print(f"{name:8} {gib(r['peak_bytes']):>10} {gib(r['peak_bytes'] - base):>10} "
              f"{gib(t):>10} {r['peak_bytes'] / t:7.2f} {(r['peak_bytes'] - base) / t:14.2f} "
              f"{r['seconds']:7.1f}")
    print(f"(tensors: the whole model for open/inspect and for the curve, which evaluates the "
          f"base with one layer merged; base + donor block 0 for merge; the model is "
          f"{gib(model_bytes)}, block 0 {gib(block_bytes)} per model)")
    return {"rows": rows, "model_bytes": model_bytes, "block_bytes": block_bytes}


def vit_small():
    """A small ViT for 8x8 digits (patch 2: 16 tokens, width 64, 4 heads, 4 blocks; fused QKV,
    SDPA, GELU MLP, mean pooling): the kind of model the issue timed as a .pt2."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self, dim: int, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, c = x.shape
            q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, c // self.heads) \
                .permute(2, 0, 3, 1, 4).unbind(0)
            a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, c)
            x = x + self.proj(a)
            return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    class ViT(nn.Module):
        input_shape = (1, 8, 8)

        def __init__(self, dim: int = 64, depth: int = 4, heads: int = 4) -> None:
            super().__init__()
            self.embed = nn.Conv2d(1, dim, 2, 2)
            self.pos = nn.Parameter(torch.randn(1, 16, dim) * 0.02)
            self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
            self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.embed(x).flatten(2).transpose(1, 2) + self.pos
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x).mean(1))

    return ViT()


vit_small.input_shape = (1, 8, 8)

PT2_MODES = ("load", "inspect", "selftest", "evaluate", "curve")


def _pt2_pair(work: Path, name: str, seed: int):
    """(plain-torch file, arch or None, .pt2 file) of one model: the demo Mixer as a mal
    safetensors file, or the small ViT as a plain state dict opened with --arch."""
    import torch
    from safetensors.torch import save_file

    from mal_desktop.core.arch.families import build_model, full_config
    from mal_desktop.core.io.files import save_model
    from mal_desktop.core.io.model import LoadedModel

    torch.manual_seed(seed)
    if name == "mixer":
        config = full_config("mixer", {})
        module = build_model("mixer", config).eval()
        plain = save_model(LoadedModel(module, {"kind": "family", "family": "mixer",
                                                "config": config},
                                       tuple(config["input_shape"]), config["num_classes"]),
                           work / f"mixer{seed}.safetensors")
        arch = None
    else:
        module = vit_small().eval()
        plain = work / f"vit{seed}.safetensors"
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(plain))
        arch = "memory_bench:vit_small"
    pt2 = work / f"{name}{seed}.pt2"
    x = torch.randn(2, 1, 8, 8)  # a static batch of 2, as `torch.export.export` makes by default
    torch.export.save(torch.export.export(module, (x,)), str(pt2))
    return plain, arch, pt2


def part_pt2(work: Path, code: Path, repeats: int = 3, grid: int = 11,
             models: tuple[str, ...] = ("mixer", "vit")) -> dict:
    """Load / inspect / self-test / evaluate / whole-model curve of each model as a .pt2 and as
    plain torch, each in a fresh process, ``repeats`` times (medians, interleaved so that a
    burst of load from other jobs hits both forms alike)."""
    import statistics

    rows: dict[str, dict] = {}
    for name in models:
        plain, arch, pt2 = _pt2_pair(work, name, 0)
        plain_b, _, pt2_b = _pt2_pair(work, name, 1)
        forms = {"torch": (plain, plain_b, arch), "pt2": (pt2, pt2_b, None)}
        times: dict[str, list[float]] = {}
        for _ in range(repeats):
            for mode in PT2_MODES:
                for form, (path, target, form_arch) in forms.items():
                    cache = work / f"cache-{name}-{form}-{mode}"  # cold: no cached spec
                    shutil.rmtree(cache, ignore_errors=True)
                    args = {"path": str(path), "arch": form_arch, "target": str(target),
                            "grid": grid}
                    result = child(mode, args, _env(code, cache))
                    times.setdefault(f"{form}-{mode}", []).append(result["seconds"])
                    rows[f"{name}-{form}-{mode}"] = {**result, "all_seconds":
                                                     times[f"{form}-{mode}"]}
        print(f"\n.pt2 vs the same model as plain torch ({name}), seconds after imports, each "
              f"in a fresh process; median of {repeats}:")
        print(f"{'':9} {'torch':>8} {'pt2':>8} {'pt2/torch':>10}")
        for mode in PT2_MODES:
            a = statistics.median(times[f"torch-{mode}"])
            b = statistics.median(times[f"pt2-{mode}"])
            rows[f"{name}-torch-{mode}"]["median"] = a
            rows[f"{name}-pt2-{mode}"]["median"] = b
            print(f"{mode:9} {a:8.2f} {b:8.2f} {b / a:10.1f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for key, value in LLAMA_7B.items():
        parser.add_argument(f"--{key}", type=int, default=value)
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="the mal_desktop checkout the measurements run (default: this one)")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in the measured processes (default 1: on a shared, "
                             "loaded machine several threads spin against each other)")
    parser.add_argument("--skip-pt2", action="store_true")
    parser.add_argument("--repeats", type=int, default=3,
                        help=".pt2 part: fresh processes per measurement (the median is shown)")
    parser.add_argument("--grid", type=int, default=11, help=".pt2 part: curve lambdas")
    parser.add_argument("--pt2-models", nargs="+", default=["mixer", "vit"],
                        choices=["mixer", "vit"])
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args(argv)
    global THREADS
    THREADS = args.threads
    sys.path.insert(0, str(ROOT))
    work = args.dir or Path(tempfile.mkdtemp(prefix="mal-membench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{args.threads} torch thread(s), code: {args.code}")
    results: dict = {}
    try:
        if not args.skip_memory:
            sizes = {key: getattr(args, key) for key in LLAMA_7B}
            results["memory"] = part_memory(work, args.code.resolve(), sizes)
        if not args.skip_pt2:
            results["pt2"] = part_pt2(work, args.code.resolve(), args.repeats, args.grid,
                                      tuple(args.pt2_models))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

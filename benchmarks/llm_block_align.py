"""Whole-model weight matching of one transformer block at LLM widths: CPU, and CUDA side by side.

    python benchmarks/llm_block_align.py                  # Llama-7B block: 4096 / 11008 / 32 heads, GQA 8
    python benchmarks/llm_block_align.py --hidden 1024 --mlp 2816 --heads 8 --kv-heads 2  # quicker
    python benchmarks/llm_block_align.py --json out.json

Builds a one-block Llama (transformers' LlamaForCausalLM from a config, random init, small
vocabulary so the block dominates) and a second copy of it whose every free permutation space is
permuted at random (as the spec allows: heads whole, dims within heads where rotary does
not pin them, query heads reordered inside their groups) with a little noise added, then times,
in one process:
permutation discovery on the meta device, whole-model weight matching (one run, as the CLI's
inner loop; cost products on the compute device, LAPs by the core's solver) and reports how many
units of each space, and how many query heads inside their groups, were matched back to their
true partners. Needs the [hf] extra.

With CUDA available the matching runs once per device (``--devices``; default cpu and cuda),
each after an untimed warm-up on a small block, and the CPU / CUDA time ratio is printed with a
check that both devices matched the same units. To cover widths 4096-14336 on a GPU machine:

    python benchmarks/llm_block_align.py --mlp 11008 14336 --json gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this checkout's mal_desktop and benchmarks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--mlp", type=int, nargs="+", default=[11008],
                        help="MLP widths, one block each (e.g. 11008 14336)")
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--noise", type=float, default=0.01, help="relative noise on the copy")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=None,
                        help="where the matching runs, each in turn (default: cpu, and cuda "
                             "when available)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        print("SKIPPED: transformers is not installed (pip install -e '.[hf]')")
        return 0
    from benchmarks.align_bench import forced_device

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        print("SKIPPED: --devices cuda, but torch.cuda.is_available() is False")
        return 0
    for dev in dict.fromkeys(devices):
        # untimed: a first call's one-time costs (lazy imports; CUDA's context, kernels and
        # allocator) are not the loop's
        with forced_device(dev):
            block_match(LlamaConfig, LlamaForCausalLM, 256, 512, 4, 2, args.noise, quiet=True)
    rows = []
    for mlp in args.mlp:
        block = None
        for dev in devices:
            with forced_device(dev):
                block = block_match(LlamaConfig, LlamaForCausalLM, args.hidden, mlp, args.heads,
                                    args.kv_heads, args.noise, block=block)
            rows.append({"mlp": mlp, "device": dev, **{k: v for k, v in block.items()
                                                       if k not in ("inputs", "matches")}})
            if len(block["matches"]) > 1:
                first, last = block["matches"][0], block["matches"][-1]
                same = all(torch.equal(first[s], last[s]) for s in first)
                print(f"  same matches on {devices[0]} and {dev}: {'yes' if same else 'NO'}")
                rows[-1]["same_matches_as_" + devices[0]] = same
    if len(devices) > 1:
        print(f"\n{'MLP':>6} " + " ".join(f"{d + ' s':>9}" for d in devices)
              + f" {devices[0] + '/' + devices[-1]:>9}")
        for mlp in args.mlp:
            t = [r["match_s"] for r in rows if r["mlp"] == mlp]
            print(f"{mlp:>6} " + " ".join(f"{x:9.2f}" for x in t) + f" {t[0] / t[-1]:8.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "torch": torch.__version__,
                       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                       "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                       "rows": rows}, f, indent=1)
    return 0


def block_match(LlamaConfig, LlamaForCausalLM, hidden: int, mlp: int, heads: int, kv_heads: int,
                noise: float, block: dict | None = None, quiet: bool = False) -> dict:
    """Match one Llama block against its permuted, noisy copy on the current compute device.

    ``block``: what an earlier call on the same shape returned; its model, spec and copy are
    reused (the copy must be the same for the devices' matches to be compared) and the new
    match is appended to its ``matches``.
    """
    from mal_desktop.core.align.matching import whole_model_match
    from mal_desktop.core.device import compute_device
    from mal_desktop.core.graph.discover import discover_spec
    from mal_desktop.core.graph.selftest import random_copy_orders, random_permutations
    from mal_desktop.core.graph.spec import permute_state
    from mal_desktop.core.io.model import LoadedModel
    from mal_desktop.core.progress import run_job

    say = (lambda *a, **k: None) if quiet else print
    if block is None:
        config = LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=mlp,
                             num_hidden_layers=1, num_attention_heads=heads,
                             num_key_value_heads=kv_heads, max_position_embeddings=64,
                             tie_word_embeddings=False, use_cache=False)
        torch.manual_seed(0)
        module = LlamaForCausalLM(config).eval()
        model = LoadedModel(module, {"kind": "bench"}, (16,), config.vocab_size,
                            input_dtype=torch.int64, input_range=config.vocab_size)
        params = sum(p.numel() for p in module.parameters())
        say(f"one Llama block: hidden {hidden}, MLP {mlp}, {heads} heads (GQA {kv_heads}), "
            f"{params / 1e6:.0f} M parameters, {torch.get_num_threads()} torch threads",
            flush=True)
        t0 = time.perf_counter()
        spec = discover_spec(model)
        t_discover = time.perf_counter() - t0
        free = {s: sp for s, sp in spec.spaces.items() if not sp.fixed}
        say(f"discovery: {t_discover:.1f} s; free spaces: "
            + ", ".join(f"{s} ({sp.size})" for s, sp in free.items()), flush=True)
        # the permutations the spec allows (heads stay whole, rotary-paired dims keep their
        # order): a plain randperm of a head space would plant a copy computing another function
        perms, orders = random_permutations(spec, seed=1), random_copy_orders(spec, seed=1)
        gen = torch.Generator().manual_seed(1)
        base = {k: v.detach() for k, v in module.state_dict().items()}
        target = permute_state(base, spec, perms, orders)
        target = {k: v + noise * v.std() * torch.randn(v.shape, generator=gen)
                  if v.is_floating_point() and v.numel() > 1 else v for k, v in target.items()}
        block = {"params": params, "discover_s": t_discover, "matches": [],
                 "inputs": (spec, perms, orders, base, target)}
    spec, perms, orders, base, target = block["inputs"]

    device = compute_device()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = run_job(whole_model_match(base, target, spec, restarts=1))
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_match = time.perf_counter() - t0
    recovered, pairs = {}, {}
    for s, p in perms.items():
        match = result.matches[s]
        rows, cols = match.rows_tensor(), match.cols_tensor()
        # the copy's unit i is the base's unit p[i]: a pair (r, c) is right when p[c] == r
        recovered[s] = float((p[cols] == rows).float().mean())
        pairs[s] = torch.stack([rows.cpu(), cols.cpu()])
    copies_back = {}
    for s, planted in orders.items():
        # new copy k of the copy's head j is the base's copy planted[j][k]: base copy k must
        # take the copy's copy c with planted[j][c] == k
        match, span = result.matches[s], len(perms[s]) // len(planted)
        found = match.copies or [tuple(range(planted.shape[1]))] * (match.matched // span)
        back = [int(planted[match.cols[g * span] // span][c]) == k
                for g, copy in enumerate(found) for k, c in enumerate(copy)]
        copies_back[s] = sum(back) / len(back)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    gpu_gib = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    say(f"weight matching on {device}: {t_match:.1f} s, {result.sweeps} sweeps, "
        f"J {result.objective_history[0]:.4g} -> {result.objective_history[-1]:.4g}; "
        f"peak RSS {peak_gib:.1f} GiB" + (f", GPU peak {gpu_gib:.1f} GiB" if gpu_gib else ""))
    for s, frac in recovered.items():
        say(f"  {s}: {frac:.1%} of units matched to their true partner")
    for s, frac in copies_back.items():
        say(f"  {s}: {frac:.1%} of query heads back in their place in the group")
    block["matches"].append(pairs)
    return {**block, "match_s": t_match, "sweeps": result.sweeps, "recovered": recovered,
            "query_heads_back": copies_back,
            "peak_rss_gib": peak_gib, "gpu_peak_gib": gpu_gib}


if __name__ == "__main__":
    sys.exit(main())

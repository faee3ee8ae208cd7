"""Whole-model weight matching of one transformer block at LLM widths, on this machine's CPU.

    python benchmarks/llm_block_align.py                  # Llama-7B block: 4096 / 11008 / 32 heads, GQA 8
    python benchmarks/llm_block_align.py --hidden 1024 --mlp 2816 --heads 8 --kv-heads 2  # quicker
    python benchmarks/llm_block_align.py --json out.json

Builds a one-block Llama (transformers' LlamaForCausalLM from a config, random init, small
vocabulary so the block dominates) and a second copy of it whose every free permutation space is
permuted at random (as the spec allows: heads whole, dims within heads where rotary does
not pin them) with a little noise added, then times, in one process:
permutation discovery on the meta device, whole-model weight matching (one run, as the CLI's
inner loop; cost products on the compute device, LAPs by the core's solver) and reports how many
units of each space were matched back to their true partners. Needs the [hf] extra.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--mlp", type=int, default=11008)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--noise", type=float, default=0.01, help="relative noise on the copy")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        print("SKIPPED: transformers is not installed (pip install -e '.[hf]')")
        return 0
    from mal_desktop.core.align.matching import whole_model_match
    from mal_desktop.core.device import compute_device
    from mal_desktop.core.graph.discover import discover_spec
    from mal_desktop.core.graph.selftest import random_permutations
    from mal_desktop.core.graph.spec import permute_state
    from mal_desktop.core.io.model import LoadedModel
    from mal_desktop.core.progress import run_job

    if args.threads:
        torch.set_num_threads(args.threads)
    config = LlamaConfig(vocab_size=256, hidden_size=args.hidden, intermediate_size=args.mlp,
                         num_hidden_layers=1, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, max_position_embeddings=64,
                         tie_word_embeddings=False, use_cache=False)
    torch.manual_seed(0)
    module = LlamaForCausalLM(config).eval()
    model = LoadedModel(module, {"kind": "bench"}, (16,), config.vocab_size,
                        input_dtype=torch.int64, input_range=config.vocab_size)
    params = sum(p.numel() for p in module.parameters())
    print(f"one Llama block: hidden {args.hidden}, MLP {args.mlp}, {args.heads} heads "
          f"(GQA {args.kv_heads}), {params / 1e6:.0f} M parameters, device "
          f"{compute_device()}, {torch.get_num_threads()} torch threads", flush=True)

    t0 = time.perf_counter()
    spec = discover_spec(model)
    t_discover = time.perf_counter() - t0
    free = {s: sp for s, sp in spec.spaces.items() if not sp.fixed}
    print(f"discovery: {t_discover:.1f} s; free spaces: "
          + ", ".join(f"{s} ({sp.size})" for s, sp in free.items()), flush=True)

    # the permutations the spec allows (heads stay whole, rotary-paired dims keep their order):
    # a plain randperm of a head space would plant a copy that computes another function
    perms = random_permutations(spec, seed=1)
    gen = torch.Generator().manual_seed(1)
    base = {k: v.detach() for k, v in module.state_dict().items()}
    target = permute_state(base, spec, perms)
    target = {k: v + args.noise * v.std() * torch.randn(v.shape, generator=gen)
              if v.is_floating_point() and v.numel() > 1 else v for k, v in target.items()}

    t0 = time.perf_counter()
    result = run_job(whole_model_match(base, target, spec, restarts=1))
    t_match = time.perf_counter() - t0
    recovered = {}
    for s, p in perms.items():
        match = result.matches[s]
        rows, cols = match.rows_tensor(), match.cols_tensor()
        # the copy's unit i is the base's unit p[i]: a pair (r, c) is right when p[c] == r
        recovered[s] = float((p[cols] == rows).float().mean())
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"weight matching: {t_match:.1f} s, {result.sweeps} sweeps, J {result.objective_history[0]:.4g}"
          f" -> {result.objective_history[-1]:.4g}; peak RSS {peak_gib:.1f} GiB")
    for s, frac in recovered.items():
        print(f"  {s}: {frac:.1%} of units matched to their true partner")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "params": params, "discover_s": t_discover,
                       "match_s": t_match, "sweeps": result.sweeps, "recovered": recovered,
                       "peak_rss_gib": peak_gib}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

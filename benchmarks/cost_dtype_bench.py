"""Float32 vs float64 cost products in whole-model weight matching: same permutations? how fast?

    python benchmarks/cost_dtype_bench.py                       # zoo pairs + widths 512..2048
    python benchmarks/cost_dtype_bench.py --widths 4096 --depth 4 --restarts 1
    python benchmarks/cost_dtype_bench.py --code /work/main     # also time another checkout

For every pair, whole-model weight matching (``match_spaces`` over every free space, as
``whole_model_match`` calls it) runs with float32 and with float64 costs (``cost_dtype``) in
this process, alternately, and the matches and final J are compared: "same" means every space
got the identical generalized permutation. With ``--code DIR`` the same pairs are also matched
by the code in DIR (a fresh process that imports mal_desktop from DIR and builds the same
seeded models; float64 products there before issue 12), and its permutations are compared too.

Pairs: the ``--small`` demo zoo (trained on digits; same-family seed pairs and seeded
permuted copies of each model), then untrained MLPs of ``--depth`` hidden layers of each width
(seeds 0 and 1: independent models, the hardest case for ties) and a planted pair (seed 0
against a permuted copy with 1% noise). Times: best of ``--repeats`` runs, one torch thread by
default (``--threads``); the machine's load is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _models(kind: str, width: int, depth: int, seed: int):
    """(base LoadedModel, target state dict) of one synthetic pair, built from seeds only."""
    import torch

    from mal_desktop.core.arch.families import build_model, full_config
    from mal_desktop.core.graph.discover import discover_spec
    from mal_desktop.core.graph.spec import permute_state
    from mal_desktop.core.io.model import LoadedModel

    config = full_config("mlp", {"input_shape": [1, 8, 8], "num_classes": 10,
                                 "widths": [width] * depth})
    loaded = []
    for s in (seed, seed + 1):
        torch.manual_seed(s)
        loaded.append(LoadedModel(build_model("mlp", config),
                                  {"kind": "family", "family": "mlp", "config": config},
                                  (1, 8, 8), 10, metadata={"name": f"mlp-{width}-s{s}"}))
    base = loaded[0]
    spec = discover_spec(base)
    if kind == "independent":
        return base, spec, loaded[1].state()
    gen = torch.Generator().manual_seed(seed + 7)
    perms = {s.id: torch.randperm(s.size, generator=gen) for s in spec.free_spaces()}
    target = permute_state(base.state(), spec, perms)
    noise = {k: v + 0.01 * v.std() * torch.randn(v.shape, generator=gen)
             if v.is_floating_point() and v.numel() > 1 else v for k, v in target.items()}
    return base, spec, noise


def _match(base_state, target_state, spec, restarts: int, dtype_name: str | None):
    """(seconds, digest of the matches, final J, sweeps) of one whole-model matching."""
    import torch

    from mal_desktop.core.align import matching
    from mal_desktop.core.progress import run_job

    keys = matching.default_tensor_keys(spec, base_state)
    pairs = {s.id: s.id for s in spec.free_spaces()}
    kwargs: dict[str, Any] = {}
    if dtype_name is not None:
        kwargs["cost_dtype"] = getattr(torch, dtype_name)
    start = time.perf_counter()
    result = run_job(matching.match_spaces(base_state, spec, target_state, spec, pairs,
                                           [(k, k) for k in keys], restarts=restarts, **kwargs))
    seconds = time.perf_counter() - start
    digest = hashlib.sha256(repr(sorted((s, m.rows, m.cols) for s, m in
                                        result.matches.items())).encode()).hexdigest()[:12]
    return seconds, digest, result.objective, result.sweeps


def worker(args: argparse.Namespace) -> None:
    """--worker: time the synthetic pairs with whatever mal_desktop is on sys.path."""
    import torch

    torch.set_num_threads(args.threads)
    out = []
    for width in args.widths:
        for kind in args.kinds:
            base, spec, target = _models(kind, width, args.depth, 0)
            best = None
            for _ in range(args.repeats):
                got = _match(base.state(), target, spec, args.restarts, None)
                best = got if best is None or got[0] < best[0] else best
            out.append({"pair": f"mlp-{width}x{args.depth} {kind}", "time": best[0],
                        "digest": best[1], "J": best[2]})
    print("RESULT " + json.dumps(out))


def _zoo_pairs():
    """(label, base state, target state, spec) from the --small demo zoo."""
    import torch

    from mal_desktop.core.graph.discover import discover_spec
    from mal_desktop.core.graph.spec import permute_state
    from mal_desktop.core.io.files import load_model
    from mal_desktop.core.progress import run_job
    from mal_desktop.core.zoo.build import build_zoo_job, default_zoo

    out_dir = Path(tempfile.gettempdir()) / "mal-cost-dtype-zoo"
    index = run_job(build_zoo_job(out_dir, default_zoo(small=True), None))
    names = [e.name for e in default_zoo(small=True)]
    models = {n: load_model(index.path_of(n)) for n in names}
    pairs = []
    for name, model in models.items():
        spec = discover_spec(model)
        gen = torch.Generator().manual_seed(3)
        perms = {s.id: torch.randperm(s.size, generator=gen) for s in spec.free_spaces()}
        pairs.append((f"{name} vs permuted copy", model.state(),
                      permute_state(model.state(), spec, perms), spec))
        twin = name.replace("-s0", "-s1")
        if name.endswith("-s0") and twin in models:
            pairs.append((f"{name} vs {twin}", model.state(), models[twin].state(), spec))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="*", default=[512, 1024, 2048])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-zoo", action="store_true")
    parser.add_argument("--kinds", nargs="*", default=["independent", "planted"],
                        choices=["independent", "planted"])
    parser.add_argument("--code", type=Path, default=None,
                        help="another checkout to time on the synthetic pairs (fresh process)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(args.threads)
    print(f"machine: cpus {os.cpu_count()}, torch {torch.__version__}, threads {args.threads}, "
          f"load_avg_1min {os.getloadavg()[0]:.2f}")
    rows: list[dict[str, Any]] = []
    cases = [] if args.no_zoo else [(label, b, t, s, 4) for label, b, t, s in _zoo_pairs()]
    for width in args.widths:
        for kind in args.kinds:
            base, spec, target = _models(kind, width, args.depth, 0)
            cases.append((f"mlp-{width}x{args.depth} {kind}", base.state(), target, spec,
                          args.restarts))
    for label, b, t, spec, restarts in cases:
        best: dict[str, tuple] = {}
        for _ in range(args.repeats):
            for name in ("float32", "float64"):
                got = _match(b, t, spec, restarts, name)
                if name not in best or got[0] < best[name][0]:
                    best[name] = got
        rows.append({"pair": label, "restarts": restarts,
                     **{f"{n}_{f}": best[n][i] for n in best
                        for i, f in enumerate(("time", "digest", "J", "sweeps"))}})
        r = rows[-1]
        print(f"{label:34s} restarts {restarts}  f32 {r['float32_time']:8.3f} s  "
              f"f64 {r['float64_time']:8.3f} s  "
              f"f64/f32 {r['float64_time'] / r['float32_time']:5.2f}x"
              f"  same matches {r['float32_digest'] == r['float64_digest']}  "
              f"J rel diff {abs(r['float32_J'] - r['float64_J']) / abs(r['float64_J']):.1e}",
              flush=True)
    if args.code is not None:
        env = dict(os.environ, PYTHONPATH=str(args.code.resolve()))
        cmd = [sys.executable, "-P", __file__, "--worker", "--widths", *map(str, args.widths),
               "--kinds", *args.kinds,
               "--depth", str(args.depth), "--restarts", str(args.restarts),
               "--repeats", str(args.repeats), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True,
                              cwd=tempfile.gettempdir())
        other = json.loads(proc.stdout.split("RESULT ", 1)[1])
        print(f"\nagainst {args.code} (its default path; fresh process):")
        by_pair = {r["pair"]: r for r in rows}
        for o in other:
            r = by_pair[o["pair"]]
            print(f"{o['pair']:34s} there {o['time']:8.3f} s  here f32 {r['float32_time']:8.3f} s"
                  f"  ratio {o['time'] / r['float32_time']:5.2f}x  same matches "
                  f"{o['digest'] == r['float32_digest']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

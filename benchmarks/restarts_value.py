"""What the random restarts of whole-model weight matching buy, and what they cost.

    python benchmarks/restarts_value.py                      # MLPs 128-2048, CNN, ResNet; ~15 min
    python benchmarks/restarts_value.py --widths 128 256 --no-conv --json out.json

The default (``matching.WEIGHT_RESTARTS`` = 4) makes one descent from the identity and three
from seeded random matches and keeps the highest J. Here, on pairs trained on digits with
different seeds (two pairs per architecture: seeds 0/1 and 2/3; trained once into ``--zoo-dir``
and reused), each pair is matched with restarts 1 and 4 in the same process, one torch thread:

- time of each (the ratio is what the restarts cost);
- which run was kept, and each run's J gain over the identity (J - J0);
- the loss barrier of the aligned curve (``model_curve_job``, align "weight", 21 points, the
  digits test split) with restarts 1 and with restarts 4, and the naive barrier.

It prints one row per pair and a summary: how often a random start beat the identity's run and
by how much the barrier moved when it did.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED_PAIRS = ((0, 1), (2, 3))


def architectures(widths: list[int], conv: bool) -> list[tuple[str, str, dict[str, Any], int]]:
    """(label, family, config, epochs) of every architecture to pair."""
    out = [(f"mlp{w}x{2 if w <= 128 else 3}", "mlp", {"widths": [w] * (2 if w <= 128 else 3)},
            15) for w in widths]
    if conv:
        out += [("cnn", "cnn", {}, 8), ("resnet", "resnet", {}, 8)]
    return out


def measure_pair(label: str, paths: list[str], grid: int) -> dict[str, Any]:
    from mal_desktop.core.align.matching import whole_model_match
    from mal_desktop.core.graph.discover import discover_spec
    from mal_desktop.core.io.files import load_model
    from mal_desktop.core.jobs import model_curve_job
    from mal_desktop.core.progress import run_job

    base, target = load_model(paths[0]), load_model(paths[1])
    spec = discover_spec(base, cache=False)
    finals: dict[int, float] = {}

    def note(event: Any) -> None:
        payload = event.payload or {}
        if "restart" in payload:
            finals[payload["restart"]] = payload["objective"]

    row: dict[str, Any] = {"pair": label}
    for restarts in (1, 4):
        start = time.perf_counter()
        result = run_job(whole_model_match(base.state(), target.state(), spec,
                                           restarts=restarts), note if restarts == 4 else None)
        row[f"match_s_r{restarts}"] = time.perf_counter() - start
        row[f"J_r{restarts}"] = result.objective_history[-1]
        if restarts == 4:
            row["kept"] = result.restart
            row["J0"] = result.identity_objective
        curve = run_job(model_curve_job(paths[0], paths[1], "digits", align="weight", grid=grid,
                                        restarts=restarts))
        row[f"barrier_r{restarts}"] = curve.aligned.barrier
        row["naive_barrier"] = curve.naive.barrier
    row["run_gains"] = [finals[k] - row["J0"] for k in sorted(finals)]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    parser.add_argument("--no-conv", action="store_true", help="MLPs only")
    parser.add_argument("--zoo-dir", type=Path, default=Path("/tmp/mal-restarts-zoo"))
    parser.add_argument("--grid", type=int, default=21)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    from mal_desktop.core.progress import run_job
    from mal_desktop.core.zoo.build import ZooEntry, build_zoo_job

    torch.set_num_threads(1)
    args.zoo_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'pair':<22} {'r1 s':>7} {'r4 s':>7} {'r4/r1':>6} {'kept':>4} "
          f"{'J gain r4 vs r1':>15} {'naive':>7} {'barrier r1':>10} {'barrier r4':>10}  "
          "J - J0 of each run (identity first)", flush=True)
    for label, family, config, epochs in architectures(args.widths, not args.no_conv):
        for seeds in SEED_PAIRS:
            entries = [ZooEntry(f"rs-{label}-s{s}", family, dict(config), "digits", s, epochs)
                       for s in seeds]
            index = run_job(build_zoo_job(args.zoo_dir, entries))
            paths = [str(index.path_of(e.name)) for e in entries]
            row = measure_pair(f"{label} s{seeds[0]}/s{seeds[1]}", paths, args.grid)
            rows.append(row)
            gain = (row["J_r4"] - row["J_r1"]) / max(1e-12, row["J_r1"] - row["J0"])
            print(f"{row['pair']:<22} {row['match_s_r1']:7.3f} {row['match_s_r4']:7.3f} "
                  f"{row['match_s_r4'] / row['match_s_r1']:5.1f}x {row['kept']:>4} "
                  f"{gain:15.2e} {row['naive_barrier']:7.4f} {row['barrier_r1']:10.4f} "
                  f"{row['barrier_r4']:10.4f}  "
                  + " ".join(f"{g:.4g}" for g in row["run_gains"]), flush=True)
    won = [r for r in rows if r["kept"] > 0]
    print(f"\n{len(rows)} pairs; a random start beat the identity's run in {len(won)}"
          + "".join(f"\n  {r['pair']}: barrier {r['barrier_r1']:.4f} -> {r['barrier_r4']:.4f}"
                    for r in won))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":  # the zoo build starts worker processes (spawn): guard the entry
    sys.exit(main())

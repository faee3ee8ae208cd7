"""Time the core's solve_lap (scipy) vs the torch auction on CUDA (square widths), and the gap.

    python benchmarks/lap_cuda.py [--widths 512 1024 2048 4096] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the checkout's mal_desktop and benchmarks

from benchmarks.auction_lap import auction_lap  # noqa: E402
from mal_desktop.core.align.lap import assignment_value, solve_lap  # noqa: E402

Solver = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def _timed(cost: torch.Tensor, solver: Solver, repeat: int) -> tuple[float, float]:
    best = float("inf")
    for _ in range(repeat):
        torch.cuda.synchronize()
        start = time.perf_counter()
        rows, cols = solver(cost, maximize=True)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, assignment_value(cost, rows, cols)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--widths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    gen = torch.Generator(device=device).manual_seed(0)
    _timed(torch.randn(64, 64, device=device, generator=gen), auction_lap, 1)  # warm-up
    print(f"{'cost':<10}{'n':>6}{'scipy s':>10}{'auction s':>11}{'speedup':>9}{'rel gap':>11}")
    for width in args.widths:
        costs = {
            "random": torch.rand(width, width, device=device, generator=gen),
            "W_A@W_B^T": (torch.randn(width, 2 * width, device=device, generator=gen)
                          @ torch.randn(width, 2 * width, device=device, generator=gen).T),
        }
        for name, cost in costs.items():
            t_s, v_s = _timed(cost, solve_lap, args.repeat)
            t_a, v_a = _timed(cost, auction_lap, args.repeat)
            spread = float((cost.max() - cost.min()).item())
            print(f"{name:<10}{width:>6}{t_s:>10.3f}{t_a:>11.3f}{t_s / t_a:>8.2f}x"
                  f"{(v_s - v_a) / spread:>11.1e}", flush=True)


if __name__ == "__main__":
    main()

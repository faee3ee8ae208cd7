"""LAP solvers side by side on weight-matching costs: scipy vs the `lapx` Jonker-Volgenant family.

    python benchmarks/lap_solvers.py                 # widths 512..8192 (several minutes on 2 cores)
    python benchmarks/lap_solvers.py --quick         # widths 512..2048
    python benchmarks/lap_solvers.py --json out.json

The costs are what weight matching builds: C = W_A W_B^T for two random layers (rows: units of
the base, columns: units of the target), square w x w and rectangular w x w/2 and w/2 x w, in
float64 and float32. Every solver maximises the total; each answer's objective is re-evaluated in
float64 on the float64 cost, so "same optimum" compares like with like. Printed per case: seconds
(best of the runs), the ratio scipy / solver (above 1: the solver is faster), and the objective
gap to scipy's optimum relative to its value (0 means the same optimum).

Solvers:
- scipy: ``scipy.optimize.linear_sum_assignment`` (exact, rectangular natively).
- lapjvx: lapx JV, rectangular by zero-padding (extend_cost=True), scipy-style indices.
- lapjvh: lapx JV with native rectangular support.
- lapjvc: lapx classic dense JV (pads rectangular inputs).
- lapjvs: lapx JV variant (pads rectangular inputs).
Timing is single-process, after one warm-up call per solver and shape. A solver that needed more
than --slow seconds on one kind of shape is skipped for that kind at larger widths.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Callable

import numpy as np

Solve = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _scipy(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import linear_sum_assignment
    return linear_sum_assignment(cost, maximize=True)


def _lapx(name: str) -> Solve:
    import lap

    fn = getattr(lap, name)

    def solve(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        neg = -cost  # lapx minimises
        if name == "lapjvh":
            _, rows, cols = fn(neg, extend_cost=neg.shape[0] != neg.shape[1])
        elif name in ("lapjvx", "lapjvs"):
            _, rows, cols = fn(neg, extend_cost=neg.shape[0] != neg.shape[1], return_cost=True) \
                if name == "lapjvx" else fn(neg, extend_cost=None, return_cost=True)
        else:
            _, rows, cols = fn(neg, return_cost=True)
        rows, cols = np.asarray(rows), np.asarray(cols)
        keep = (rows >= 0) & (cols >= 0) & (rows < cost.shape[0]) & (cols < cost.shape[1])
        return rows[keep], cols[keep]

    return solve


def weight_cost(m: int, n: int, dtype: np.dtype, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = 256  # fan-in of the layers whose weights are matched
    a = rng.standard_normal((m, d))
    b = a[rng.permutation(m)[: min(m, n)]] if n <= m else rng.standard_normal((n, d))
    if n <= m:  # a noisy, permuted subset of the base units: a realistic, non-trivial optimum
        b = b + 0.8 * rng.standard_normal(b.shape)
    return (a @ b.T).astype(dtype)


def timed(solve: Solve, cost: np.ndarray, budget: float) -> tuple[float, tuple]:
    best, out, spent, runs = float("inf"), None, 0.0, 0
    while runs < 2 or (spent < budget and runs < 10):
        t0 = time.perf_counter()
        out = solve(cost)
        dt = time.perf_counter() - t0
        best, spent, runs = min(best, dt), spent + dt, runs + 1
    return best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="widths up to 2048")
    parser.add_argument("--json", metavar="PATH", help="write every number to a JSON file")
    parser.add_argument("--budget", type=float, default=1.0,
                        help="seconds spent per measurement at most (best run kept; default 1)")
    parser.add_argument("--slow", type=float, default=5.0,
                        help="a solver slower than this many seconds on a shape kind (square, "
                             "tall, wide) is skipped at larger widths (default 5)")
    args = parser.parse_args(argv)
    widths = [512, 1024, 2048] if args.quick else [512, 1024, 2048, 4096, 8192]
    try:
        solvers: dict[str, Solve] = {"scipy": _scipy, **{n: _lapx(n) for n in
                                                         ("lapjvx", "lapjvh", "lapjvc", "lapjvs")}}
    except ImportError:
        print("SKIPPED: lapx is not installed (pip install lapx)")
        return 0
    print(f"machine: {platform.machine()}, python {sys.version.split()[0]}, "
          f"numpy {np.__version__}")
    header = f"{'shape':>12} {'dtype':>7} " + " ".join(f"{n:>20}" for n in solvers)
    print(header)
    print(" " * 21 + " ".join(f"{'s (ratio, gap)':>20}" for _ in solvers))
    results = []
    too_slow: set[tuple[str, str]] = set()  # (solver, shape kind) that took > --slow s already
    for w in widths:
        for m, n in ((w, w), (w, w // 2), (w // 2, w)):
            exact = weight_cost(m, n, np.float64, seed=w + m)
            for dtype in (np.float64, np.float32):
                cost = exact.astype(dtype)
                row, times = {}, {}
                kind = "square" if m == n else ("tall" if m > n else "wide")
                for name, solve in solvers.items():
                    if (name, kind) in too_slow:  # it only gets slower at larger widths
                        row[name] = {"seconds": float("nan"), "objective": float("nan"),
                                     "pairs": 0, "skipped": True}
                        times[name] = float("nan")
                        continue
                    solve(cost[:64, :64].copy())  # warm-up (imports, code paths)
                    seconds, (rows, cols) = timed(solve, cost, args.budget)
                    if seconds > args.slow:
                        too_slow.add((name, kind))
                    value = float(exact[rows, cols].sum())
                    times[name] = seconds
                    row[name] = {"seconds": seconds, "objective": value,
                                 "pairs": int(len(rows))}
                ref = row["scipy"]["objective"]
                cells = []
                for name in solvers:
                    r = row[name]
                    r["ratio_scipy_over"] = times["scipy"] / r["seconds"]
                    r["gap"] = (ref - r["objective"]) / abs(ref) if ref else 0.0
                    cells.append("skipped (slow)" if r.get("skipped") else
                                 f"{r['seconds']:7.3f} ({r['ratio_scipy_over']:4.1f}x,"
                                 f"{r['gap']:+.0e})")
                print(f"{f'{m}x{n}':>12} {np.dtype(dtype).name:>7} " + " ".join(
                    f"{c:>20}" for c in cells), flush=True)
                results.append({"m": m, "n": n, "dtype": np.dtype(dtype).name, "solvers": row})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.platform(), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Whole-model weight matching by two checkouts side by side: time ratios and identical results.

    python benchmarks/checkout_compare.py --code /work/main
    python benchmarks/checkout_compare.py --code /work/main --widths 256 512 --restarts 4 --rounds 3

Both checkouts run the same cases, each in fresh processes (``PYTHONPATH`` = the checkout; this
one is "here", ``--code`` is "there"), alternately round by round so that a burst of load on
the shared machine hits both: there, here, there, here, ... Per case the best time over all
rounds and repeats is kept, and the results are compared exactly: every space's generalized
permutation (rows and cols), the kept run's J and its whole J history (as float.hex: bit for
bit), the kept run's index and its sweeps. A speed-up must leave them all identical.

Cases: the trained digits pairs of align_bench.py (seeds 0 and 1, trained once by this
checkout into ``--zoo-dir`` and read by both from the same files), then untrained MLPs of
``--depth`` hidden layers of each width: "independent" (seeds 0 and 1) and "planted" (seed 0
against a seeded permuted copy with 1% noise), each with every ``--restarts`` value. One torch
thread by default (``--threads``); the machine's load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent


def _cases(args: argparse.Namespace) -> list[tuple[str, Any, Any, Any]]:
    """(label, base state, target state, spec) for every pair, built from seeds and files."""
    sys.path.insert(0, str(BENCH))
    from cost_dtype_bench import _models  # seeded synthetic MLP pairs

    from mal_desktop.core.graph.discover import discover_spec
    from mal_desktop.core.io.files import load_model

    cases = []
    for label, base_path, target_path in args.trained:
        base, target = load_model(base_path), load_model(target_path)
        cases.append((label, base.state(), target.state(), discover_spec(base, cache=False)))
    for width in args.widths:
        for kind in args.kinds:
            base, spec, target = _models(kind, width, args.depth, 0)
            cases.append((f"mlp-{width}x{args.depth} {kind}", base.state(), target, spec))
    return cases


def _fingerprint(result: Any) -> dict[str, Any]:
    """Everything the result must keep bit for bit: matches, J history, kept run, sweeps."""
    return {"matches": sorted([s, list(m.rows), list(m.cols), m.base_size, m.target_size]
                              for s, m in result.matches.items()),
            "history": [float(j).hex() for j in result.objective_history],
            "restart": result.restart, "sweeps": result.sweeps,
            "identity": float(result.identity_objective).hex()}


def worker(args: argparse.Namespace) -> None:
    """--worker: time every case with whatever mal_desktop is on sys.path; print JSON."""
    import torch

    from mal_desktop.core.align.matching import result_permutations, whole_model_match
    from mal_desktop.core.progress import run_job

    torch.set_num_threads(args.threads)
    out = []
    cases = _cases(args)
    if cases:  # untimed: the process's first matching also pays one-off initialisation
        run_job(whole_model_match(cases[0][1], cases[0][2], cases[0][3], restarts=1))
    for label, base, target, spec in cases:
        for restarts in args.restarts:
            times, first = [], None
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = run_job(whole_model_match(base, target, spec, restarts=restarts))
                perms = result_permutations(result)
                times.append(time.perf_counter() - start)
                got = dict(_fingerprint(result),
                           perms={s: p.tolist() for s, p in sorted(perms.items())})
                if first is None:
                    first = got
                elif got != first:  # the same code must repeat itself exactly
                    raise SystemExit(f"{label} r{restarts}: two runs here differ")
            out.append({"case": f"{label} | restarts {restarts}", "times": times,
                        "J": first["history"][-1] if first else None, "result": first})
    print("RESULT " + json.dumps(out))


def _run(code: Path, args: argparse.Namespace, trained: list[list[str]]) -> list[dict]:
    # A private spec cache: discovery (untimed) writes nothing outside the temporary folder.
    env = dict(os.environ, PYTHONPATH=str(code.resolve()),
               MAL_SPEC_CACHE=str(Path(tempfile.gettempdir()) / "mal-checkout-compare-specs"))
    cmd = [sys.executable, "-P", __file__, "--worker", "--widths", *map(str, args.widths),
           "--kinds", *args.kinds, "--depth", str(args.depth),
           "--restarts", *map(str, args.restarts), "--repeats", str(args.repeats),
           "--threads", str(args.threads), "--trained-json", json.dumps(trained)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise SystemExit(f"worker for {code} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


def _train(zoo_dir: Path) -> list[list[str]]:
    """Train (or reuse) align_bench's digits pairs with this checkout: [label, base, target]."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(BENCH))
    from align_bench import train_pairs

    return [[f"{p.label} digits s0-s1", str(p.base_path), str(p.target_path)]
            for p in train_pairs(zoo_dir)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, help="the other checkout (required)")
    parser.add_argument("--widths", type=int, nargs="*", default=[256, 512, 1024, 2048])
    parser.add_argument("--kinds", nargs="*", default=["independent", "planted"],
                        choices=["independent", "planted"])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--restarts", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=1, help="runs per case per process")
    parser.add_argument("--rounds", type=int, default=2, help="processes per checkout")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-trained", action="store_true")
    parser.add_argument("--zoo-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "mal-checkout-compare-zoo")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trained-json", default="[]", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.trained = json.loads(args.trained_json)
    if args.worker:
        worker(args)
        return 0
    if args.code is None:
        parser.error("--code is required")
    trained = [] if args.no_trained else _train(args.zoo_dir)
    print(f"machine: cpus {os.cpu_count()}, threads {args.threads}, "
          f"load_avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    runs: dict[str, list[list[dict]]] = {"there": [], "here": []}
    for _ in range(args.rounds):
        runs["there"].append(_run(args.code, args, trained))
        runs["here"].append(_run(ROOT, args, trained))
    print(f"there = {args.code.resolve()}, here = {ROOT}; best of {args.rounds} rounds x "
          f"{args.repeats} repeats; ratio = there / here")
    identical_all = True
    for i, row in enumerate(runs["here"][0]):
        best = {side: min(t for r in rounds for t in r[i]["times"])
                for side, rounds in runs.items()}
        results = [r[i]["result"] for rounds in runs.values() for r in rounds]
        identical = all(r == results[0] for r in results)
        identical_all &= identical
        print(f"{row['case']:44s} there {best['there']:8.3f} s  here {best['here']:8.3f} s  "
              f"ratio {best['there'] / best['here']:5.2f}x  identical {identical}  "
              f"J {float.fromhex(row['J']):.10g}", flush=True)
    print(f"load_avg after {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"all identical: {identical_all}")
    return 0 if identical_all else 1


if __name__ == "__main__":
    sys.exit(main())

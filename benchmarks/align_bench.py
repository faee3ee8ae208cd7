"""Alignment speed and quality, measured side by side in one run (a measurement, not a test).

    python benchmarks/align_bench.py [--quick] [--json PATH] [--threads N] [--repeats N]
                                     [--grid N] [--zoo-dir DIR]

Prints four tables:

1. LAP time vs width: ``mal_desktop.core.align.lap.solve_lap`` (scipy's exact solver) on random
   uniform cost matrices, square w x w and rectangular w x w/2, w = 256 .. 4096 (1024 with
   ``--quick``); best of a few runs.
2. Whole-model weight matching (ours): two models of one family trained here with different seeds
   on digits (an MLP pair and a ResNet-style pair, seconds each), the time of
   ``discover_spec`` + ``weight_matching`` and the loss barrier of ``model_curve_job`` (align
   "weight") on the digits test split; plus untrained MLP pairs 3 x 512 and 3 x 1024 wide
   (3 x 256 with ``--quick``) for timing only.
3. The same pairs through the ``rebasin`` library (0.0.47, PermutationCoordinateDescent): its
   time, and the barrier of its permuted model computed by our evaluator on the same data and
   lambda grid; ratio of times (rebasin / ours). Skipped with a note when rebasin is missing
   (``pip install -e .[bench]``). Failures are printed with their error, never hidden.
4. CUDA vs CPU for our matching and curve jobs when ``torch.cuda.is_available()`` (the device is
   forced through ``MAL_DEVICE``, read by ``core/device.py``).

Timings are wall-clock seconds: the best of at least ``--repeats`` runs, and of more runs for
short measurements until about a second was spent on them; matching is warmed up first. On a
loaded machine ``--threads 1`` gives much steadier numbers (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.metadata
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch
from torch import nn

from mal_desktop.core.align.lap import solve_lap
from mal_desktop.core.align.matching import is_statistic, weight_matching
from mal_desktop.core.device import compute_device
from mal_desktop.core.evaluate.curves import interpolation_job, lerp_states
from mal_desktop.core.evaluate.datasets import Dataset, load_dataset
from mal_desktop.core.evaluate.metrics import CurveResult, lambda_grid
from mal_desktop.core.graph.discover import discover_spec
from mal_desktop.core.graph.spec import PermutationSpec, permute_state
from mal_desktop.core.io.files import load_model
from mal_desktop.core.io.model import LoadedModel
from mal_desktop.core.jobs import model_curve_job
from mal_desktop.core.progress import run_job
from mal_desktop.core.zoo.build import ZooEntry, build_zoo_job
from mal_desktop.core.arch.families import build_model, full_config

LAP_WIDTHS = (256, 512, 1024, 2048, 4096)
DATASET = "digits"
# Trained pairs: (label, family, config, epochs, lr, batch size). Recipes picked to train in
# about a second each on 2 CPU cores and reach >= 96% test accuracy on digits.
PAIRS: tuple[tuple[str, str, dict[str, Any], int, float, int], ...] = (
    ("mlp-128x2", "mlp", {"widths": [128, 128]}, 15, 1e-2, 64),
    ("resnet-w16-b2", "resnet", {"width": 16, "blocks": 2}, 6, 1e-2, 128),
)
SEEDS = (0, 1)
# Short measurements are repeated until this much time was spent on them (at most MAX_RUNS
# runs): on a shared machine a burst of load can slow one run 10-100x, and the best of many
# short runs is far steadier than the best of three. --quick lowers it.
TIME_BUDGET_S = {"value": 1.0}
MAX_RUNS = 30


def more_runs(done: int, repeats: int, spent: float) -> bool:
    """Whether a best-of loop should time another run (see TIME_BUDGET_S)."""
    return done < max(1, repeats) or (spent < TIME_BUDGET_S["value"] and done < MAX_RUNS)


# ----------------------------------------------------------------------------- helpers

def _sync() -> None:
    """Wait for queued CUDA work so wall-clock timings include it."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def best_of(fn: Callable[[], Any], repeats: int, warmup: bool = False) -> tuple[float, Any]:
    """Time ``fn`` at least ``repeats`` times (more while under the time budget), after one
    untimed run if ``warmup``.

    Returns (best seconds, result of the last run).
    """
    result = fn() if warmup else None
    best, spent, done = math.inf, 0.0, 0
    while more_runs(done, repeats, spent):
        _sync()
        start = time.perf_counter()
        result = fn()
        _sync()
        seconds = time.perf_counter() - start
        best, spent, done = min(best, seconds), spent + seconds, done + 1
    return best, result


@contextlib.contextmanager
def forced_device(name: str) -> Iterator[None]:
    """Make ``compute_device()`` return ``name`` inside the block (MAL_DEVICE + cache clear)."""
    saved = os.environ.get("MAL_DEVICE")
    os.environ["MAL_DEVICE"] = name
    compute_device.cache_clear()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MAL_DEVICE", None)
        else:
            os.environ["MAL_DEVICE"] = saved
        compute_device.cache_clear()


def fmt(x: float | None, digits: int = 4) -> str:
    """A number for a table cell: '-' for None/NaN, fixed or scientific as fits."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.2e}"
    return f"{x:.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table with right-aligned columns (first column left-aligned)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
        "compute_device": str(compute_device()),
    }
    with contextlib.suppress(OSError, AttributeError):
        info["load_avg_1min"] = round(os.getloadavg()[0], 2)
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["rebasin"] = importlib.metadata.version("rebasin")
    except importlib.metadata.PackageNotFoundError:
        info["rebasin"] = None
    return info


# ----------------------------------------------------------------------------- part 1: LAP

def bench_lap(widths: tuple[int, ...], repeats: int) -> list[dict[str, Any]]:
    """Seconds of ``solve_lap`` on seeded random uniform float64 costs, square and w x w/2."""
    gen = torch.Generator().manual_seed(0)
    solve_lap(torch.rand(64, 64, generator=gen, dtype=torch.float64))  # scipy import, warm-up
    rows = []
    for w in widths:
        entry: dict[str, Any] = {"width": w}
        # The largest sizes take seconds each; fewer runs keep the whole script in minutes.
        runs = repeats if w <= 1024 else max(1, repeats - 1) if w <= 2048 else 1
        for name, shape in (("square", (w, w)), ("rect", (w, w // 2))):
            cost = torch.rand(*shape, generator=gen, dtype=torch.float64)
            calls: list[int] = []

            def solve(cost: torch.Tensor = cost, calls: list[int] = calls
                      ) -> tuple[torch.Tensor, torch.Tensor]:
                calls.append(1)
                return solve_lap(cost)

            seconds, (rows_found, _) = best_of(solve, runs)
            assert len(rows_found) == min(shape), "solve_lap returned too few pairs"
            entry[f"{name}_s"] = seconds
            entry[f"{name}_runs"] = len(calls)
        rows.append(entry)
    return rows


# ----------------------------------------------------------------------------- model pairs

@dataclass
class Pair:
    """Two models of one family (seeds 0 and 1); files when trained, memory otherwise."""

    label: str
    base: LoadedModel
    target: LoadedModel
    base_path: Path | None = None
    target_path: Path | None = None
    accuracies: tuple[float, float] | None = None
    train_s: float = 0.0


def train_pairs(out_dir: Path) -> list[Pair]:
    """Train (or reuse, when ``out_dir`` already holds them) the PAIRS with seeds 0 and 1."""
    pairs = []
    for label, family, config, epochs, lr, batch in PAIRS:
        entries = [ZooEntry(f"bench-{label}-s{s}", family, dict(config), DATASET, s, epochs, lr,
                            batch) for s in SEEDS]
        # Training is set-up, not a measurement: one thread keeps it fast and steady on a
        # shared 2-core machine, where two spinning threads per step lose more than they gain.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        start = time.perf_counter()
        try:
            index = run_job(build_zoo_job(out_dir, entries))
        finally:
            torch.set_num_threads(threads)
        seconds = time.perf_counter() - start
        paths = [index.path_of(e.name) for e in entries]
        accs = tuple(index.info(e.name).test_accuracy for e in entries)
        pairs.append(Pair(label, load_model(paths[0]), load_model(paths[1]), paths[0], paths[1],
                          (accs[0], accs[1]), seconds))
    return pairs


def random_mlp_pair(width: int, depth: int = 3) -> Pair:
    """An untrained MLP pair (seeds 0, 1) of ``depth`` hidden layers of ``width``: timing only."""
    config = full_config("mlp", {"input_shape": [1, 8, 8], "num_classes": 10,
                                 "widths": [width] * depth})
    models = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        models.append(LoadedModel(build_model("mlp", config),
                                  {"kind": "family", "family": "mlp", "config": config},
                                  (1, 8, 8), 10, metadata={"name": f"mlp-{width}-s{seed}"}))
    return Pair(f"mlp-{width}x{depth} (untrained)", models[0], models[1])


def logits(model: nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Outputs of ``model``'s architecture with ``state`` on ``x`` (CPU, eval mode)."""
    work = copy.deepcopy(model).cpu().eval()
    work.load_state_dict({k: v.cpu() for k, v in state.items()}, strict=True)
    with torch.no_grad():
        return work(x)


def inner_product(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """J = sum of <a, b> over floating tensors other than norm statistics (higher: closer)."""
    return float(sum((a[k].double().cpu() * b[k].double().cpu()).sum()
                     for k in a if a[k].is_floating_point() and not is_statistic(k)))


# ----------------------------------------------------------------------------- part 2: ours

def time_ours(pair: Pair, spec: PermutationSpec, repeats: int, warmup: bool = False
              ) -> tuple[float, dict[str, torch.Tensor]]:
    """Best seconds of ``weight_matching`` on the pair (compute device as set), and its perms."""
    b_state, t_state = pair.base.state(), pair.target.state()
    return best_of(lambda: run_job(weight_matching(b_state, t_state, spec)), repeats, warmup)


def curve_ours(pair: Pair, grid: int) -> tuple[float, CurveResult]:
    """Seconds and result of ``model_curve_job`` (load, discover, match, evaluate the grid)."""
    assert pair.base_path is not None and pair.target_path is not None
    return best_of(lambda: run_job(model_curve_job(str(pair.base_path), str(pair.target_path),
                                                   DATASET, align="weight", grid=grid)), 1)


def bench_ours(pair: Pair, data: Dataset | None, grid: int, repeats: int) -> dict[str, Any]:
    """Discovery and matching times, barrier (trained pairs), objective, function check."""
    out: dict[str, Any] = {"device": str(compute_device())}
    # torch.export pays a one-time start-up on its first call: warm up, as for the matching.
    out["discover_s"], spec = best_of(lambda: discover_spec(pair.base), repeats, warmup=True)
    # The first matching pays one-time start-up costs (lazy imports, first kernels): warm up.
    out["match_s"], perms = time_ours(pair, spec, repeats, warmup=True)
    out["spaces"] = len(perms)
    out["units"] = int(sum(len(p) for p in perms.values()))
    t_state = pair.target.state()
    permuted = permute_state(t_state, spec, perms)
    base_state = pair.base.state()
    out["J_before"] = inner_product(base_state, t_state)
    out["J"] = inner_product(base_state, permuted)
    if data is not None:
        x = data.x_test
        out["function_diff"] = float((logits(pair.target.module, t_state, x)
                                      - logits(pair.target.module, permuted, x)).abs().max())
        out["curve_s"], curve = curve_ours(pair, grid)
        out["naive_barrier"] = curve.naive.barrier
        out["barrier"] = curve.aligned.barrier
        out["naive_mean_loss"] = curve.naive.mean_loss
        out["mean_loss"] = curve.aligned.mean_loss
    return out


# ----------------------------------------------------------------------------- part 3: rebasin

def rebasin_device() -> str:
    """Where rebasin 0.0.47 computes: torchview, its tracer, moves both models to CUDA whenever
    CUDA is available (``draw_graph``'s default device), so its costs must be built there too."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def rebasin_available() -> str | None:
    """rebasin's version when it imports, else None."""
    try:
        import rebasin  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError or a broken install: part 3 is skipped
        return None
    return importlib.metadata.version("rebasin")


def run_rebasin(pair: Pair) -> dict[str, Any]:
    """One run of rebasin's PermutationCoordinateDescent (target permuted toward base).

    Returns the times of its graph tracing (constructor), permutation search and application,
    the permuted target state as rebasin leaves it, and the same state with BatchNorm running
    statistics also permuted (rebasin 0.0.47 permutes a BatchNorm's weight and bias but not its
    running_mean / running_var; its docs advise recomputing them on training data instead).
    Both models are copies: rebasin's tracer (torchview) moves the models it traces in place.
    """
    from rebasin import PermutationCoordinateDescent

    device = rebasin_device()
    target = copy.deepcopy(pair.target.module).to(device).eval()
    base = copy.deepcopy(pair.base.module).to(device).eval()
    example = torch.zeros(1, *pair.base.input_shape, device=device)
    torch.manual_seed(0)  # rebasin visits the permutations in torch.randperm order
    _sync()
    start = time.perf_counter()
    pcd = PermutationCoordinateDescent(base, target, example, device_a=device, device_b=device)
    traced = time.perf_counter()
    pcd.calculate_permutations(max_iterations=100)
    searched = time.perf_counter()
    pcd.apply_permutations()
    _sync()
    applied = time.perf_counter()

    bn_perms: dict[int, torch.Tensor] = {}
    sizes = []
    for perm, infos in pcd.pinit.model_graph.permutation_to_info:
        sizes.append(len(perm.perm_indices))
        for info in infos:
            if isinstance(info.module.module_b, nn.modules.batchnorm._BatchNorm):
                bn_perms[id(info.module.module_b)] = perm.perm_indices
    state = {k: v.detach().cpu().clone() for k, v in target.state_dict().items()}
    fixed = dict(state)
    for name, module in target.named_modules():
        if id(module) in bn_perms:
            for stat in ("running_mean", "running_var"):
                key = f"{name}.{stat}" if name else stat
                if key in fixed:
                    fixed[key] = fixed[key][bn_perms[id(module)].cpu()]
    return {"device": device, "trace_s": traced - start, "match_s": searched - traced,
            "apply_s": applied - searched, "total_s": applied - start, "spaces": len(sizes),
            "units": int(sum(sizes)), "state": state, "state_bn_fixed": fixed if bn_perms else None}


def bench_rebasin(pair: Pair, data: Dataset | None, grid: int, repeats: int) -> dict[str, Any]:
    """Best-of timing of rebasin on ``pair``; barriers by our evaluator on ``data``."""
    runs: list[dict[str, Any]] = []
    try:
        while more_runs(len(runs), repeats, sum(r["total_s"] for r in runs)):
            run = run_rebasin(pair)
            for earlier in runs:  # keep the last run's permuted states only (memory)
                earlier.pop("state", None)
                earlier.pop("state_bn_fixed", None)
            runs.append(run)
    except Exception as exc:  # noqa: BLE001 - whatever rebasin raises is reported, not hidden
        tb = traceback.extract_tb(exc.__traceback__)
        where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
        return {"error": f"{type(exc).__name__}: {str(exc).strip() or '(no message)'} [{where}]"}
    # Every run is seeded alike and finds the same permutations; only the times differ, and
    # each phase's time is its best over the runs.
    best = runs[-1]
    out: dict[str, Any] = {k: best[k] for k in ("device", "spaces", "units")}
    out.update({k: min(r[k] for r in runs) for k in ("trace_s", "match_s", "apply_s", "total_s")})
    out["runs"] = len(runs)
    b_state, t_state = pair.base.state(), pair.target.state()
    out["J"] = inner_product(b_state, best["state"])
    if data is None:
        return out
    x = data.x_test
    reference = logits(pair.target.module, t_state, x)
    out["function_diff"] = float((reference - logits(pair.target.module, best["state"], x))
                                 .abs().max())
    lambdas = lambda_grid(grid)
    series = {"naive": lerp_states(b_state, t_state),
              "aligned": lerp_states(b_state, best["state"])}
    curve = run_job(interpolation_job(pair.base, data, lambdas, series))
    out["naive_barrier"] = curve.naive.barrier
    out["barrier"] = curve.aligned.barrier
    out["mean_loss"] = curve.aligned.mean_loss
    if best["state_bn_fixed"] is not None:
        fixed = best["state_bn_fixed"]
        out["function_diff_bn_fixed"] = float((reference - logits(pair.target.module, fixed, x))
                                              .abs().max())
        series["aligned"] = lerp_states(b_state, fixed)
        curve = run_job(interpolation_job(pair.base, data, lambdas, series))
        out["barrier_bn_fixed"] = curve.aligned.barrier
        out["mean_loss_bn_fixed"] = curve.aligned.mean_loss
    return out


# ----------------------------------------------------------------------------- part 4: devices

def bench_devices(pairs: list[Pair], grid: int, repeats: int) -> list[dict[str, Any]]:
    """Our matching and curve jobs with MAL_DEVICE=cpu and =cuda (warm-up run first)."""
    rows = []
    for pair in pairs:
        spec = discover_spec(pair.base)
        row: dict[str, Any] = {"pair": pair.label}
        for dev in ("cpu", "cuda"):
            with forced_device(dev):
                row[f"match_{dev}_s"], _ = time_ours(pair, spec, repeats, warmup=True)
                if pair.base_path is not None:
                    curve_ours(pair, grid)  # warm-up: evaluation kernels, allocator
                    row[f"curve_{dev}_s"], _ = curve_ours(pair, grid)
        row["match_ratio"] = row["match_cpu_s"] / row["match_cuda_s"]
        if "curve_cpu_s" in row:
            row["curve_ratio"] = row["curve_cpu_s"] / row["curve_cuda_s"]
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- report

def print_lap(rows: list[dict[str, Any]]) -> None:
    print("\n[1] LAP: solve_lap (scipy linear_sum_assignment, exact), random uniform float64 "
          "costs, best of 'runs'")
    print(table(["width", "square w x w (s)", "runs", "rect w x w/2 (s)", "runs"],
                [[str(r["width"]), fmt(r["square_s"]), str(r["square_runs"]), fmt(r["rect_s"]),
                  str(r["rect_runs"])] for r in rows]))


def print_matching(results: list[dict[str, Any]], has_rebasin: bool) -> None:
    print("\n[2] whole-model weight matching, ours (discover_spec + weight_matching; "
          "barrier from model_curve_job, align 'weight')")
    print(table(
        ["pair", "test acc A/B", "device", "discover s", "match s", "spaces/units",
         "naive barrier", "barrier", "fn diff", "curve job s"],
        [[r["pair"], r["acc"], o["device"], fmt(o["discover_s"]), fmt(o["match_s"]),
          f"{o['spaces']}/{o['units']}", fmt(o.get("naive_barrier")), fmt(o.get("barrier")),
          fmt(o.get("function_diff")), fmt(o.get("curve_s"))]
         for r in results for o in [r["ours"]]]))
    print("  fn diff: max |logit change| of the target after its permutation (0 up to rounding "
          "= function preserved)")
    print("\n[3] rebasin (PermutationCoordinateDescent) on the same pairs; barrier by our "
          "evaluator, same data and lambda grid")
    if not has_rebasin:
        print("  SKIPPED: rebasin is not installed (benchmark-only extra: "
              "pip install -e .[bench], i.e. rebasin==0.0.47)")
        return
    rows = []
    notes = []
    for r in results:
        rb, ours = r["rebasin"], r["ours_same_device"]
        if "error" in rb:
            rows.append([r["pair"], "FAILED"] + ["-"] * 10)
            notes.append(f"  {r['pair']}: rebasin FAILED: {rb['error']}")
            continue
        fn = fmt(rb.get("function_diff"))
        if "function_diff_bn_fixed" in rb:
            fn += " / " + fmt(rb["function_diff_bn_fixed"])
        j0 = r["ours"]["J_before"]
        gain = (rb["J"] - j0) / (ours["J"] - j0) if ours["J"] != j0 else math.nan
        total_ratio = rb["total_s"] / (ours["match_s"] + r["ours"]["discover_s"])
        rows.append([r["pair"], rb["device"], fmt(rb["trace_s"]), fmt(rb["match_s"]),
                     fmt(rb["total_s"]), f"{rb['spaces']}/{rb['units']}", fmt(rb.get("barrier")),
                     fmt(rb.get("barrier_bn_fixed")), fn,
                     f"{rb['match_s'] / ours['match_s']:.1f}x",
                     f"{total_ratio:.1f}x", fmt(gain)])
        if rb["units"] < r["ours"]["units"]:
            notes.append(f"  {r['pair']}: rebasin permutes {rb['units']} of the "
                         f"{r['ours']['units']} units ours permutes (the others stay put)")
        if rb.get("function_diff", 0.0) > 1e-3:
            notes.append(f"  {r['pair']}: rebasin's own result changes the target's outputs "
                         f"(max logit change {rb['function_diff']:.3g}): its barrier is measured "
                         "against a different end point")
    headers = ["pair", "device", "trace s", "match s", "total s", "spaces/units", "barrier",
               "barrier +BN stats", "fn diff (/+BN)", "match ratio", "total ratio", "J gain ratio"]
    print(table(headers, rows))
    print("  match ratio = rebasin permutation search / our weight_matching (same device); total "
          "ratio = rebasin (trace + search + apply) / ours (discover_spec + weight_matching)")
    print("  barrier +BN stats: rebasin's permutations also applied to BatchNorm running_mean/var "
          "(rebasin leaves them unpermuted)")
    print("  J gain ratio = (J(rebasin) - J0) / (J(ours) - J0), J = sum of <theta_A, pi(theta_B)> "
          "over all weights and biases, J0 before matching (> 1: rebasin found the larger J)")
    for note in notes:
        print(note)


def print_devices(rows: list[dict[str, Any]] | None, reason: str) -> None:
    print("\n[4] CUDA vs CPU (ours; MAL_DEVICE forced, warm-up run first)")
    if rows is None:
        print(f"  SKIPPED: {reason}")
        return
    print(table(["pair", "match cpu s", "match cuda s", "cpu/cuda", "curve cpu s",
                 "curve cuda s", "cpu/cuda"],
                [[r["pair"], fmt(r["match_cpu_s"]), fmt(r["match_cuda_s"]),
                  f"{r['match_ratio']:.2f}x", fmt(r.get("curve_cpu_s")),
                  fmt(r.get("curve_cuda_s")),
                  f"{r['curve_ratio']:.2f}x" if "curve_ratio" in r else "-"] for r in rows]))
    print("  LAPs are solved by scipy on the CPU on both devices; CUDA builds the cost matrices "
          "and evaluates the curves")


# ----------------------------------------------------------------------------- main

def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="LAP widths up to 1024, a narrower untrained MLP, one timed run each")
    p.add_argument("--json", type=Path, help="also write all numbers to this JSON file")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per measurement, best kept (default 3, --quick 1)")
    p.add_argument("--grid", type=int, default=21, help="lambda points on each curve")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for the measurements (default: torch's own choice)")
    p.add_argument("--zoo-dir", type=Path, default=None,
                   help="folder for the trained pairs (reused when present; default: temporary)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every part, print the tables; returns the process exit code."""
    args = parse(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    if args.quick:
        TIME_BUDGET_S["value"] = 0.25
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    info = machine_info()
    print("mal_desktop alignment benchmark")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    report: dict[str, Any] = {"machine": info, "quick": args.quick, "repeats": repeats,
                              "grid": args.grid}

    widths = tuple(w for w in LAP_WIDTHS if w <= 1024) if args.quick else LAP_WIDTHS
    report["lap"] = bench_lap(widths, repeats)
    print_lap(report["lap"])

    data = load_dataset(DATASET)
    with contextlib.ExitStack() as stack:
        zoo_dir = args.zoo_dir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="mal-align-bench-")))
        pairs = train_pairs(zoo_dir)
        pairs += [random_mlp_pair(w) for w in ((256,) if args.quick else (512, 1024))]
        print(f"\ntrained pairs on {DATASET} (seeds {SEEDS[0]} and {SEEDS[1]}): " + ", ".join(
            f"{p.label} {p.train_s:.1f} s" for p in pairs if p.accuracies))
        has_rebasin = rebasin_available() is not None
        results = []
        for pair in pairs:
            trained = pair.accuracies is not None
            pdata = data if trained else None
            entry: dict[str, Any] = {"pair": pair.label, "acc": (
                f"{pair.accuracies[0]:.3f}/{pair.accuracies[1]:.3f}" if pair.accuracies else "-")}
            entry["ours"] = bench_ours(pair, pdata, args.grid, repeats)
            if has_rebasin:
                if compute_device().type == rebasin_device():
                    entry["ours_same_device"] = entry["ours"]
                else:  # compare like with like: ours on the device rebasin computes on
                    with forced_device(rebasin_device()):
                        spec = discover_spec(pair.base)
                        seconds, perms = time_ours(pair, spec, repeats, warmup=True)
                    permuted = permute_state(pair.target.state(), spec, perms)
                    entry["ours_same_device"] = {
                        "match_s": seconds, "J": inner_product(pair.base.state(), permuted)}
                entry["rebasin"] = bench_rebasin(pair, pdata, args.grid, repeats)
            results.append(entry)
        print_matching(results, has_rebasin)
        report["pairs"] = [{k: v for k, v in r.items()} for r in results]
        if not has_rebasin:
            report["rebasin_skipped"] = "rebasin is not installed"

        if torch.cuda.is_available():
            try:
                report["devices"] = bench_devices(pairs, args.grid, repeats)
                print_devices(report["devices"], "")
            except Exception as exc:  # noqa: BLE001 - a CUDA failure is a result to report
                report["devices"] = {"error": f"{type(exc).__name__}: {exc}"}
                print_devices(None, f"FAILED: {report['devices']['error']}")
        else:
            report["devices"] = None
            print_devices(None, "no CUDA device (torch.cuda.is_available() is False)")

    report["total_s"] = time.perf_counter() - started
    print(f"\ntotal run time: {report['total_s']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
        print(f"numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Whole-model weight matching, ours vs the ``rebasin`` library, as whole processes side by side.

    python benchmarks/rebasin_vs_ours.py --rebasin-python /tmp/rb/bin/python
    python benchmarks/rebasin_vs_ours.py --rebasin-python /tmp/rb/bin/python --widths 128 256 \\
        --repeats 5 --json out.json

rebasin lives in its own virtual environment (it pins nothing we need, and keeping it out of
ours keeps its imports out of our timings):

    python3 -m venv /tmp/rb && /tmp/rb/bin/pip install torch==2.13.0 rebasin==0.0.47

Every case is a pair of checkpoint files of the same weights for both sides: mal safetensors
files (with their architecture) for ours, plain ``torch.save`` state dicts for rebasin, whose
process defines the same modules in plain torch. Each run is a fresh process that imports what
it needs, loads both files, finds the permutations, applies them and saves the permuted target
with ``torch.save``:

- ours: ``load_model`` x 2, ``discover_spec`` (torch.export + tracer, or the user spec cache),
  ``weight_matching`` (``--restarts``, default 4 as in the app, and 1: one descent like
  rebasin's), ``permute_state``;
- rebasin 0.0.47: ``PermutationCoordinateDescent(base, target, example)`` (torchview trace),
  ``calculate_permutations()``, ``apply_permutations()``.

Reported per case: (a) the matching step as each process times it (ours ``weight_matching``,
rebasin ``calculate_permutations``), (b) the whole process wall time measured here, interpreter
start and imports included: "cold" with an empty spec cache (a fresh ``MAL_SPEC_CACHE``
folder each run), "warm" with the spec cached by an earlier run. rebasin has no cache: its cold
and warm runs are the same kind of run. The runs alternate (ours cold, ours warm, rebasin) and
the median of ``--repeats`` is quoted with min-max. One torch thread (``--threads``) by
default: on a shared 2-core machine it is the steadiest setting for both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- child processes

OURS_CHILD = r"""
import json, sys, time
start = time.perf_counter()
import torch
from mal_desktop.core.align.matching import weight_matching
from mal_desktop.core.graph.discover import discover_spec
from mal_desktop.core.graph.spec import permute_state
from mal_desktop.core.io.files import load_model
from mal_desktop.core.progress import run_job
imported = time.perf_counter()
base_path, target_path, out, restarts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
base, target = load_model(base_path), load_model(target_path)
loaded = time.perf_counter()
spec = discover_spec(base)
discovered = time.perf_counter()
if restarts == 0:  # only discover (primes the spec cache)
    sys.exit(print("RESULT " + json.dumps({"discover": discovered - loaded})))
perms = run_job(weight_matching(base.state(), target.state(), spec, restarts=restarts))
matched = time.perf_counter()
torch.save(permute_state(target.state(), spec, perms), out)
saved = time.perf_counter()
print("RESULT " + json.dumps({"import": imported - start, "load": loaded - imported,
      "discover": discovered - loaded, "match": matched - discovered, "save": saved - matched,
      "units": sum(len(p) for p in perms.values())}))
"""

REBASIN_CHILD = r"""
import json, math, sys, time
start = time.perf_counter()
import torch
from torch import nn
from rebasin import PermutationCoordinateDescent
imported = time.perf_counter()


class MLP(nn.Module):  # = mal_desktop.core.arch.families.MLP (same state dict keys)
    def __init__(self, input_shape, num_classes, widths):
        super().__init__()
        dims = [math.prod(input_shape), *widths]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        x = torch.flatten(x, 1)
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(x)


class BasicBlock(nn.Module):  # = families.BasicBlock
    def __init__(self, width):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class ResNet(nn.Module):  # = families.ResNet
    def __init__(self, input_shape, num_classes, width, blocks):
        super().__init__()
        self.stem = nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        self.blocks = nn.Sequential(*(BasicBlock(width) for _ in range(blocks)))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        x = torch.relu(self.stem_bn(self.stem(x)))
        x = self.blocks(x).mean(dim=(2, 3))
        return self.head(x)


base_path, target_path, out, family, config = sys.argv[1:6]
config = json.loads(config)
build = {"mlp": MLP, "resnet": ResNet}[family]
models = []
for path in (base_path, target_path):
    model = build(**config)
    model.load_state_dict(torch.load(path, weights_only=True))
    models.append(model.eval())
base, target = models
loaded = time.perf_counter()
torch.manual_seed(0)
pcd = PermutationCoordinateDescent(base, target, torch.zeros(1, *config["input_shape"]))
traced = time.perf_counter()
pcd.calculate_permutations(max_iterations=100)
matched = time.perf_counter()
pcd.apply_permutations()
torch.save(target.state_dict(), out)
saved = time.perf_counter()
units = sum(len(perm.perm_indices) for perm, _ in pcd.pinit.model_graph.permutation_to_info)
print("RESULT " + json.dumps({"import": imported - start, "load": loaded - imported,
      "discover": traced - loaded, "match": matched - traced, "save": saved - matched,
      "units": units}))
"""


def run_child(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one child process; its phases plus the wall time of the whole process."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    wall = time.perf_counter() - start
    if proc.returncode != 0 or "RESULT " not in proc.stdout:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    out["wall"] = wall
    return out


# --------------------------------------------------------------------------- the model files

def make_cases(work: Path, widths: list[int], depth: int, trained: bool) -> list[dict[str, Any]]:
    """Write each case's two checkpoints in both formats; return the case descriptions."""
    sys.path.insert(0, str(ROOT))
    import torch

    from mal_desktop.core.arch.families import build_model, full_config
    from mal_desktop.core.io.files import load_model, save_model
    from mal_desktop.core.io.model import LoadedModel
    from mal_desktop.core.progress import run_job
    from mal_desktop.core.zoo.build import ZooEntry, build_zoo_job

    cases = []
    if trained:  # the pairs of align_bench.py: trained on digits, seeds 0 and 1
        recipes = (("mlp-512x2 (digits)", "mlp", {"widths": [512, 512]}, 8, 1e-2, 64),
                   ("resnet-w16-b2 (digits)", "resnet", {"width": 16, "blocks": 2}, 6, 1e-2, 128))
        for label, family, config, epochs, lr, batch in recipes:
            entries = [ZooEntry(f"rb-{family}-s{s}", family, dict(config), "digits", s, epochs,
                                lr, batch) for s in (0, 1)]
            torch.set_num_threads(1)
            index = run_job(build_zoo_job(work / "zoo", entries))
            files = [index.path_of(e.name) for e in entries]
            models = [load_model(f) for f in files]
            cases.append({"label": label, "family": family,
                          "config": models[0].arch["config"], "ours": [str(f) for f in files],
                          "states": [m.state() for m in models]})
    for width in widths:
        config = full_config("mlp", {"input_shape": [1, 8, 8], "num_classes": 10,
                                     "widths": [width] * depth})
        files, states = [], []
        for seed in (0, 1):
            torch.manual_seed(seed)
            model = LoadedModel(build_model("mlp", config),
                                {"kind": "family", "family": "mlp", "config": config},
                                (1, 8, 8), 10, metadata={"name": f"mlp-{width}-s{seed}"})
            path = work / f"mlp-{width}x{depth}-s{seed}.safetensors"
            if not path.exists():
                save_model(model, path)
            files.append(str(path))
            states.append(model.state())
        cases.append({"label": f"mlp-{width}x{depth} (untrained)", "family": "mlp",
                      "config": config, "ours": files, "states": states})
    for case in cases:
        case["plain"] = []
        for i, state in enumerate(case.pop("states")):
            path = work / f"{Path(case['ours'][i]).stem}.pt"
            torch.save({k: v.contiguous() for k, v in state.items()}, path)
            case["plain"].append(str(path))
        keys = {"mlp": ("input_shape", "num_classes", "widths"),
                "resnet": ("input_shape", "num_classes", "width", "blocks")}[case["family"]]
        case["config"] = {k: case["config"][k] for k in keys}
    return cases


# --------------------------------------------------------------------------- measuring

def measure(case: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    warm_cache = work / f"spec-cache-{abs(hash(case['label']))}"
    out_file = str(work / "permuted.pt")
    ours_script, theirs_script = work / "ours_child.py", work / "rebasin_child.py"
    ours_script.write_text(OURS_CHILD)
    theirs_script.write_text(REBASIN_CHILD)
    ours = [sys.executable, "-P", str(ours_script), *case["ours"], out_file]
    theirs = [args.rebasin_python, "-P", str(theirs_script), *case["plain"], out_file,
              case["family"], json.dumps(case["config"])]
    print(f"\n{case['label']}: the two commands (PYTHONPATH={ROOT}, OMP_NUM_THREADS="
          f"{args.threads}; ours takes the restarts last; MAL_SPEC_CACHE decides cold or warm):\n"
          f"  {' '.join(ours)} RESTARTS\n  {' '.join(theirs[:-1])} '{theirs[-1]}'", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    # prime the warm spec cache (and the OS file cache, and .pyc files) once, not counted
    run_child(ours + ["0"], dict(env, MAL_SPEC_CACHE=str(warm_cache)))
    for i in range(args.repeats):
        for restarts in args.restarts:
            cold = work / f"spec-cold-{i}-{restarts}-{time.time_ns()}"
            runs.setdefault(f"ours_r{restarts}_cold", []).append(
                run_child(ours + [str(restarts)], dict(env, MAL_SPEC_CACHE=str(cold))))
            runs.setdefault(f"ours_r{restarts}_warm", []).append(
                run_child(ours + [str(restarts)], dict(env, MAL_SPEC_CACHE=str(warm_cache))))
        runs.setdefault("rebasin", []).append(run_child(theirs, env))
    return {"label": case["label"], "runs": runs}


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def report(result: dict[str, Any], restarts: list[int]) -> None:
    runs = result["runs"]
    rb = runs["rebasin"]
    rb_match = [r["match"] for r in rb]
    rb_wall = [r["wall"] for r in rb]
    print(f"\n{result['label']}   (median (min-max) s over {len(rb)} runs; ratio = rebasin / "
          "ours, medians of the pairwise ratios)")
    print(f"  rebasin: match {med(rb_match)}  trace {med([r['discover'] for r in rb])}  "
          f"import {med([r['import'] for r in rb])}  whole process {med(rb_wall)}  "
          f"units {rb[0]['units']}")
    for r in restarts:
        for kind in ("cold", "warm"):
            ours = runs[f"ours_r{r}_{kind}"]
            match_ratio = [a["match"] / b["match"] for a, b in zip(rb, ours)]
            wall_ratio = [a["wall"] / b["wall"] for a, b in zip(rb, ours)]
            print(f"  ours restarts {r} {kind}: match {med([o['match'] for o in ours])}  "
                  f"discover {med([o['discover'] for o in ours])}  import "
                  f"{med([o['import'] for o in ours])}  whole process "
                  f"{med([o['wall'] for o in ours])}  units {ours[0]['units']}")
            print(f"      ratio match {statistics.median(match_ratio):.2f}x "
                  f"({min(match_ratio):.2f}-{max(match_ratio):.2f})  whole run "
                  f"{statistics.median(wall_ratio):.2f}x ({min(wall_ratio):.2f}-"
                  f"{max(wall_ratio):.2f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebasin-python", required=True,
                        help="the python of a virtual environment with rebasin installed")
    parser.add_argument("--widths", type=int, nargs="*", default=[128, 256, 512, 1024, 2048])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--no-trained", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--restarts", type=int, nargs="*", default=[4, 1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "rb-vs-ours")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    version = subprocess.run([args.rebasin_python, "-c", "import importlib.metadata as m, torch;"
                              "print(m.version('rebasin'), torch.__version__)"],
                             capture_output=True, text=True, check=True).stdout.split()
    print(f"machine: cpus {os.cpu_count()}, load_avg_1min {os.getloadavg()[0]:.2f}, "
          f"python {sys.version.split()[0]}, rebasin {version[0]} (torch {version[1]}), "
          f"threads {args.threads}")
    cases = make_cases(args.work, args.widths, args.depth, not args.no_trained)
    results = []
    for case in cases:
        results.append(measure(case, args, args.work))
        report(results[-1], args.restarts)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

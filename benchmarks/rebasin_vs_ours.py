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

- ours: ``load_model`` x 2, ``discover_spec`` (the user spec cache, the file's spec, or
  discovery from the model), ``weight_matching`` (``--restarts``, default 4 as in the app, and 1:
  one descent like rebasin's), ``permute_state``;
- rebasin 0.0.47: ``PermutationCoordinateDescent(base, target, example)`` (torchview trace),
  ``calculate_permutations()``, ``apply_permutations()``.

Reported per case, per restarts and per source of our spec (``--modes``: "warm", the user
spec cache from an earlier run; "file", an empty cache and a file carrying its spec as the zoo
builder and merges write it, self-tested before use; "discover", an empty cache and a file
without a spec, so discovery traces the model: a recording of one forward pass, no
``torch.export``, see mal_desktop/core/graph/record.py), ratios rebasin / ours:

(a) the matching step as each process times it (ours ``weight_matching``, rebasin
    ``calculate_permutations``);
(b) the work after imports, discovery included: load both, discover (rebasin: trace), match,
    apply, save, timed in-process (no interpreter start, no imports);
(c) the whole process wall time measured here, interpreter start, imports and teardown
    included;
(d) the whole process above the floor: minus a process that only imports torch (start, import,
    teardown: about 1.7 s here, 1.1 s of it the import), run in the same loop with each side's
    interpreter. Neither side can go below the floor, so (c) cannot exceed about 2-3x when
    rebasin's whole run is 2 s; (d) is what each library adds to it.

(e) the library: imports beyond torch plus the work after imports, the two parts each library
    decides (the figure quoted in benchmarks/README.md).

Both sides run from byte-compiled modules: pip compiled rebasin's at install, and ours are
compiled here first (``compileall``), since a shell with ``PYTHONDONTWRITEBYTECODE`` set (this
machine's) would otherwise have every child compile our modules from source (about 10 ms).

The runs of one repeat are neighbours in time (ours per mode, rebasin, the floors); medians of
``--repeats`` are quoted with min-max. One torch thread (``--threads``) by default: on a shared
2-core machine it is the steadiest setting for both.
"""

from __future__ import annotations

import argparse
import compileall
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
torch_imported = time.perf_counter()
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
print("RESULT " + json.dumps({"import": imported - start, "torch_import": torch_imported - start,
      "load": loaded - imported, "discover": discovered - loaded, "match": matched - discovered,
      "save": saved - matched, "work": saved - imported,
      "units": sum(len(p) for p in perms.values())}))
"""

REBASIN_CHILD = r"""
import json, math, sys, time
start = time.perf_counter()
import torch
torch_imported = time.perf_counter()
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
print("RESULT " + json.dumps({"import": imported - start, "torch_import": torch_imported - start,
      "load": loaded - imported, "discover": traced - loaded, "match": matched - traced,
      "save": saved - matched, "work": saved - imported, "units": units}))
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
    """Write each case's two checkpoints in three forms; return the case descriptions.

    ours: mal safetensors files carrying their permutation spec, as the zoo builder and merges
    write them; ours_bare: the same files without it (a mal file from before, or any file the
    spec cannot be trusted for: discovery must trace the model); plain: ``torch.save`` state
    dicts for rebasin."""
    sys.path.insert(0, str(ROOT))
    import torch

    from mal_desktop.core.arch.families import build_model, full_config
    from mal_desktop.core.graph.discover import discover_spec
    from mal_desktop.core.graph.file_spec import spec_record
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
                          "config": models[0].arch["config"], "files": [str(f) for f in files],
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
                      "config": config, "files": files, "states": states})
    for case in cases:
        case["plain"], case["ours"], case["ours_bare"] = [], [], []
        for i, state in enumerate(case.pop("states")):
            source = Path(case["files"][i])
            path = work / f"{source.stem}.pt"
            torch.save({k: v.contiguous() for k, v in state.items()}, path)
            case["plain"].append(str(path))
            model = load_model(source)
            for key, suffix, spec in (
                    ("ours", "spec", spec_record(model, discover_spec(model, cache=False))),
                    ("ours_bare", "bare", None)):
                target = work / f"{source.stem}-{suffix}.safetensors"
                save_model(model, target, spec=spec)
                case[key].append(str(target))
        keys = {"mlp": ("input_shape", "num_classes", "widths"),
                "resnet": ("input_shape", "num_classes", "width", "blocks")}[case["family"]]
        case["config"] = {k: case["config"][k] for k in keys}
    return cases


# --------------------------------------------------------------------------- measuring

# ours: where the spec comes from
MODES = {"warm": "the user spec cache (an earlier run)",
         "file": "the file (empty cache; self-tested)",
         "discover": "discovery from the model (empty cache, file without a spec)"}


def measure(case: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    warm_cache = work / f"spec-cache-{abs(hash(case['label']))}"
    out_file = str(work / "permuted.pt")
    ours_script, theirs_script = work / "ours_child.py", work / "rebasin_child.py"
    ours_script.write_text(OURS_CHILD)
    theirs_script.write_text(REBASIN_CHILD)
    ours = {mode: [sys.executable, "-P", str(ours_script),
                   *case["ours_bare" if mode == "discover" else "ours"], out_file]
            for mode in args.modes}
    theirs = [args.rebasin_python, "-P", str(theirs_script), *case["plain"], out_file,
              case["family"], json.dumps(case["config"])]
    # the floor: a process that only imports torch (interpreter start, the import, teardown)
    floors = {"ours": [sys.executable, "-P", "-c", FLOOR_CHILD],
              "rebasin": [args.rebasin_python, "-P", "-c", FLOOR_CHILD]}
    print(f"\n{case['label']}: the commands (PYTHONPATH={ROOT}, OMP_NUM_THREADS="
          f"{args.threads}; ours takes the restarts last; MAL_SPEC_CACHE decides cold or warm):\n"
          + "".join(f"  ours {mode}: {' '.join(cmd)} RESTARTS\n" for mode, cmd in ours.items())
          + f"  rebasin: {' '.join(theirs[:-1])} '{theirs[-1]}'", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    # prime the warm spec cache (and the OS file cache, and .pyc files) once, not counted
    run_child(ours.get("warm", next(iter(ours.values()))) + ["0"],
              dict(env, MAL_SPEC_CACHE=str(warm_cache)))
    for i in range(args.repeats):
        for restarts in args.restarts:
            for mode, cmd in ours.items():
                cache = warm_cache if mode == "warm" else \
                    work / f"spec-cold-{i}-{restarts}-{time.time_ns()}"
                runs.setdefault(f"ours_r{restarts}_{mode}", []).append(
                    run_child(cmd + [str(restarts)], dict(env, MAL_SPEC_CACHE=str(cache))))
        runs.setdefault("rebasin", []).append(run_child(theirs, env))
        for side, cmd in floors.items():
            runs.setdefault(f"floor_{side}", []).append(run_child(cmd, env))
    return {"label": case["label"], "runs": runs}


FLOOR_CHILD = ("import json, time; start = time.perf_counter(); import torch; "
               "print('RESULT ' + json.dumps({'import': time.perf_counter() - start}))")


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def ratio(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def report(result: dict[str, Any], restarts: list[int], modes: list[str]) -> None:
    """Per restarts and spec source: the matching step, the work after imports (load, discovery,
    matching, applying and saving: in-process, so no interpreter or torch import), the whole
    process, and the whole process above the floor (a process that only imports torch, run in
    the same loop with each side's interpreter). Ratios are rebasin / ours, medians of the
    run-by-run ratios (the runs of one repeat are neighbours in time)."""
    runs = result["runs"]
    rb, floor_rb, floor_ours = runs["rebasin"], runs["floor_rebasin"], runs["floor_ours"]
    print(f"\n{result['label']}   (median (min-max) s over {len(rb)} runs; ratio = rebasin / "
          "ours, medians of the run-by-run ratios)")
    print(f"  floor (python -c 'import torch'): ours' python {med([f['wall'] for f in floor_ours])}"
          f"  rebasin's python {med([f['wall'] for f in floor_rb])}")
    print(f"  rebasin: match {med([r['match'] for r in rb])}  trace {med([r['discover'] for r in rb])}"
          f"  work after imports {med([r['work'] for r in rb])}  imports beyond torch "
          f"{med([r['import'] - r['torch_import'] for r in rb])}  whole process "
          f"{med([r['wall'] for r in rb])}  units {rb[0]['units']}")
    for r in restarts:
        for mode in modes:
            ours = runs[f"ours_r{r}_{mode}"]
            above = [(a["wall"] - fa["wall"]) / max(b["wall"] - fb["wall"], 1e-3)
                     for a, b, fa, fb in zip(rb, ours, floor_rb, floor_ours)]
            print(f"  ours restarts {r}, spec from {MODES[mode]}:\n"
                  f"      match {med([o['match'] for o in ours])}  discover "
                  f"{med([o['discover'] for o in ours])}  work after imports "
                  f"{med([o['work'] for o in ours])}  imports beyond torch "
                  f"{med([o['import'] - o['torch_import'] for o in ours])}  whole process "
                  f"{med([o['wall'] for o in ours])}  units {ours[0]['units']}")
            library = [(a["import"] - a["torch_import"] + a["work"])
                       / (b["import"] - b["torch_import"] + b["work"]) for a, b in zip(rb, ours)]
            print(f"      ratio: library {ratio(library)}"
                  f"  match {ratio([a['match'] / b['match'] for a, b in zip(rb, ours)])}"
                  f"  work after imports (discovery included) "
                  f"{ratio([a['work'] / b['work'] for a, b in zip(rb, ours)])}"
                  f"  whole process {ratio([a['wall'] / b['wall'] for a, b in zip(rb, ours)])}"
                  f"  whole process above the floor {ratio(above)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebasin-python", required=True,
                        help="the python of a virtual environment with rebasin installed")
    parser.add_argument("--widths", type=int, nargs="*", default=[128, 256, 512, 1024, 2048])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--no-trained", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--restarts", type=int, nargs="*", default=[4, 1])
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES),
                        help="where our spec comes from: " + "; ".join(
                            f"{k}: {v}" for k, v in MODES.items()))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "rb-vs-ours")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    compileall.compile_dir(ROOT / "mal_desktop", quiet=1)
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
        report(results[-1], args.restarts, args.modes)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

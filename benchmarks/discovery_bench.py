"""Discovery and self-test on tiny transformers, this code vs the code before the discovery
work, side by side in one run (a measurement, not a test).

    python benchmarks/discovery_bench.py [--before COMMIT] [--before-dir DIR] [--repeats N]
                                         [--threads N] [--json PATH]

Models: BERT (sequence classification), GPT-2 (LM head), Llama (grouped-query attention,
rotary) and ViT (image classification), built from tiny ``transformers`` configs with seeded
random weights (no downloads), each wrapped as one-tensor-in, logits-out. For each, in a fresh
subprocess per version (PYTHONPATH pointing at that version's checkout):

1. export: ``torch.export.export`` of the wrapper on a probe batch of the right dtype (token ids
   below the vocabulary, or pixels); the same call in both versions, a reference for the noise;
2. discovery: ``discover_spec`` on a LoadedModel holding that program (the tracer, and in the
   newer code the functionalisation it runs first);
3. self-test: ``self_test`` on the discovered spec (the newer one also perturbs zero parameters
   and checks that each space changes some parameter).

"before" is a temporary ``git worktree`` of ``--before`` (default 6a89ede, the last commit
before the issue-8 discovery work), removed at the end; ``--before-dir`` uses an existing
checkout instead. A stage that fails in a version prints its error instead of a time (the old
self-test crashed on token ids: it probed with float noise). Times are wall-clock seconds, the
best of ``--repeats`` runs, and the first call's time ("1st": it pays one-off warm-ups);
ratio = after / before of the best times (above 1: the new code is slower). The free
spaces column shows what the time buys: before, the heads were pinned.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "6a89ede"
MODELS = ("bert", "gpt2", "llama", "vit")
STAGES = ("export", "discovery", "self-test")


# ----- worker: runs inside the subprocess, importing mal_desktop from PYTHONPATH ------------

def _build(name: str):
    """(module, probe input, input dtype, id range) for one tiny transformers model."""
    import torch
    import transformers
    from torch import nn

    transformers.logging.set_verbosity_error()

    class Logits(nn.Module):
        def __init__(self, model: nn.Module, key: str) -> None:
            super().__init__()
            self.model, self.key = model, key

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(**{self.key: x}).logits

    torch.manual_seed(0)
    vocab = 40
    if name == "bert":
        cfg = transformers.BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=24,
                                      max_position_embeddings=16, num_labels=3)
        module = Logits(transformers.BertForSequenceClassification(cfg), "input_ids")
    elif name == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=vocab, n_embd=16, n_layer=1, n_head=2,
                                      n_positions=16)
        module = Logits(transformers.GPT2LMHeadModel(cfg), "input_ids")
    elif name == "llama":
        cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=4, num_key_value_heads=2,
                                       intermediate_size=24, max_position_embeddings=16)
        module = Logits(transformers.LlamaForCausalLM(cfg), "input_ids")
    else:
        cfg = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16,
                                     num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=24, num_labels=3)
        module = Logits(transformers.ViTForImageClassification(cfg), "pixel_values")
        gen = torch.Generator().manual_seed(1)
        return module.eval(), torch.randn(2, 1, 8, 8, generator=gen), None, None
    gen = torch.Generator().manual_seed(1)
    return module.eval(), torch.randint(0, vocab, (2, 6), generator=gen), torch.int64, vocab


def _best(fn, repeats: int, row: dict[str, Any], stage: str) -> Any:
    """Run ``fn`` ``repeats`` times; record the best time in row[stage] and the first call's
    (which pays one-off warm-ups, e.g. torch's decomposition tables) in row[stage + " first"]."""
    best, value = float("inf"), None
    for i in range(max(1, repeats)):
        start = time.perf_counter()
        value = fn()
        took = time.perf_counter() - start
        if i == 0:
            row[f"{stage} first"] = took
        best = min(best, took)
    row[stage] = best
    return value


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"


def worker(repeats: int) -> dict[str, Any]:
    import dataclasses

    import torch

    from mal_desktop.core.graph.discover import discover_spec
    from mal_desktop.core.graph.selftest import self_test
    from mal_desktop.core.io.model import LoadedModel

    fields = {f.name for f in dataclasses.fields(LoadedModel)}
    results: dict[str, Any] = {}
    for name in MODELS:
        row: dict[str, Any] = {}
        results[name] = row
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module, x, dtype, vocab = _build(name)
            try:
                program = _best(lambda: torch.export.export(module, (x,)), repeats, row, "export")
            except Exception as exc:  # noqa: BLE001 - a measurement reports, never hides
                row["export"] = _error(exc)
                continue
            extra = {k: v for k, v in (("input_dtype", dtype), ("input_range", vocab))
                     if k in fields and v is not None}
            model = LoadedModel(module, {"kind": "memory"}, tuple(x.shape[1:]),
                                int(module(x).shape[-1]), program=program, **extra)
            try:
                spec = _best(lambda: discover_spec(model), repeats, row, "discovery")
            except Exception as exc:  # noqa: BLE001
                row["discovery"] = _error(exc)
                continue
            row["free"] = f"{len(spec.free_spaces())}/{len(spec.spaces)}"
            try:
                report = _best(lambda: self_test(model, spec), repeats, row, "self-test")
                row["status"] = getattr(report, "status", "passed" if report.passed else "FAILED")
            except Exception as exc:  # noqa: BLE001
                row["self-test"] = _error(exc)
    return results


# ----- driver ---------------------------------------------------------------------------------

def _run_version(checkout: Path, repeats: int, threads: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker",
                           "--repeats", str(repeats), "--threads", str(threads)],
                          env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise SystemExit(f"the worker for {checkout} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cell(value: Any) -> str:
    return f"{value:9.3f}" if isinstance(value, float) else "failed"


def _table(before: dict[str, Any], after: dict[str, Any]) -> tuple[str, list[str]]:
    lines = [f"{'model':<6} {'stage':<10} {'before s':>9} {'after s':>9} {'after/before':>12} "
             f"{'1st before':>10} {'1st after':>9}  free spaces before -> after"]
    errors = []
    for name in MODELS:
        for stage in STAGES:
            b, a = before[name].get(stage), after[name].get(stage)
            ratio = f"{a / b:12.2f}" if isinstance(a, float) and isinstance(b, float) else \
                f"{'-':>12}"
            free = (f"  {before[name].get('free', '-')} -> {after[name].get('free', '-')}"
                    if stage == "discovery" else "")
            fb, fa = before[name].get(f"{stage} first"), after[name].get(f"{stage} first")
            lines.append(f"{name:<6} {stage:<10} {_cell(b) if b is not None else '-':>9} "
                         f"{_cell(a) if a is not None else '-':>9} {ratio} "
                         f"{_cell(fb) if fb is not None else '-':>10} "
                         f"{_cell(fa) if fa is not None else '-':>9}{free}")
            for who, v in (("before", b), ("after", a)):
                if isinstance(v, str):
                    errors.append(f"{name} {stage} {who}: {v}")
    return "\n".join(lines), errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help=f"commit to compare with ({BEFORE})")
    parser.add_argument("--before-dir", type=Path, help="an existing checkout of the old code")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(worker(args.repeats)))
        return
    temp = None
    before_dir = args.before_dir
    try:
        if before_dir is None:
            temp = Path(tempfile.mkdtemp(prefix="mal_before_")) / "checkout"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet",
                            str(temp), args.before], check=True)
            before_dir = temp
        before = _run_version(before_dir, args.repeats, args.threads)
        after = _run_version(ROOT, args.repeats, args.threads)
    finally:
        if temp is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(temp)],
                           check=False)
    import torch
    import transformers

    print(f"discovery + self-test, before = {args.before if args.before_dir is None else args.before_dir}"
          f", after = this checkout; torch {torch.__version__}, transformers "
          f"{transformers.__version__}, {args.threads} thread(s), best of {args.repeats}, "
          f"{platform.processor() or platform.machine()}")
    table, errors = _table(before, after)
    print(table)
    for line in errors:
        print("  " + line)
    for name in MODELS:
        st = after[name].get("status")
        if st:
            print(f"  {name}: self-test after: {st}; before: {before[name].get('status', '-')}")
    if args.json:
        args.json.write_text(json.dumps({"before": before, "after": after,
                                         "before_ref": str(args.before_dir or args.before)},
                                        indent=1))


if __name__ == "__main__":
    main()

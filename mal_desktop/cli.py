"""`mal`: the headless command line over the same core jobs the GUI runs.

Every command takes ``--json`` to print one JSON object on stdout; progress goes to stderr;
exit code 0 on success, 1 with a one-line error on failure, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__


class _Progress:
    """Prints job progress to stderr: a redrawn bar on a terminal, sparse lines otherwise."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, event) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        final = event.fraction >= 1.0
        if not final and now - self._last < (0.1 if self.tty else 2.0):
            return
        self._last = now
        frac = event.fraction if event.fraction == event.fraction else 0.0
        if self.tty:
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r[{bar:<30}] {frac:5.1%} {event.message[:80]:<80}")
            if final:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(f"{frac:5.1%} {event.message}\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\n")


def _run(job, args) -> Any:
    """Drive a job with progress on stderr; Ctrl+C cancels cooperatively."""
    from .core.progress import run_job

    progress = _Progress(getattr(args, "quiet", False))
    try:
        return run_job(job, progress)
    finally:
        progress.done()


def _finite(x: Any) -> Any:
    """JSON has no NaN/inf: encode them as strings so every output parses."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _emit(args, obj: dict[str, Any], text: Callable[[], str]) -> None:
    if args.json:
        sys.stdout.write(json.dumps(_finite(obj)) + "\n")
    else:
        sys.stdout.write(text() + "\n")


# -- commands -----------------------------------------------------------------------------
def cmd_inspect(args) -> int:
    from .core.graph.selftest import self_test
    from .core.graph.tree import build_layer_tree
    from .core.io.files import load_model

    model = load_model(args.model, args.arch)
    tree = build_layer_tree(model)
    obj = tree.to_json()
    obj.update({"file": str(args.model), "form": model.form, "arch": model.arch,
                "input_shape": list(model.input_shape), "num_classes": model.num_classes,
                "metadata": model.metadata})
    if args.self_test:
        report = self_test(model, tree.spec)
        obj["self_test"] = {"passed": report.passed, "max_abs_diff": report.overall,
                            "per_space": report.per_space}

    def text() -> str:
        lines = [f"{args.model}: {model.form}, {tree.total_params:,} parameters, "
                 f"input {tuple(model.input_shape)}, {model.num_classes} classes"]
        for layer in tree.spec.layers:
            sp_out = tree.spec.spaces[layer.out_axis.space]
            sp_in = tree.spec.spaces[layer.in_axis.space]
            mark = lambda s: s.id + (" [fixed]" if s.fixed else "")  # noqa: E731
            lines.append(f"  {layer.name:<28} {layer.kind:<7} out {mark(sp_out)} ({sp_out.size}) "
                         f"in {mark(sp_in)} ({sp_in.size})")
        if tree.spec.unsupported:
            lines.append("  unsupported: " + ", ".join(tree.spec.unsupported))
        if args.self_test:
            lines.append(f"  self-test: {'passed' if obj['self_test']['passed'] else 'FAILED'} "
                         f"(max difference {obj['self_test']['max_abs_diff']:.2e})")
        return "\n".join(lines)

    _emit(args, obj, text)
    return 0


def _parse_layers(pairs: Sequence[str] | None) -> list[tuple[str, str]] | None:
    from .core.errors import MalError

    if not pairs:
        return None
    out = []
    for p in pairs:
        if p.count(":") != 1 or not all(p.split(":")):
            raise MalError(f"--layers {p!r}: expected SOURCE_LAYER:BASE_LAYER, e.g. layers.0:layers.0")
        src, dst = p.split(":")
        out.append((src, dst))
    return out


def cmd_curve(args) -> int:
    from .core.jobs import model_curve_job

    result = _run(model_curve_job(args.base, args.target, args.data, align=args.align,
                                  grid=args.grid, layers=_parse_layers(args.layers),
                                  arch=args.arch, repair=args.repair), args)
    obj = result.to_json()

    def text() -> str:
        rows = [f"{'lambda':>6}  {'naive loss':>10} {'acc':>6}  {'aligned loss':>12} {'acc':>6}"]
        for i, lam in enumerate(result.lambdas):
            rows.append(f"{lam:6.2f}  {result.naive.loss[i]:10.4f} {result.naive.accuracy[i]:6.1%}"
                        f"  {result.aligned.loss[i]:12.4f} {result.aligned.accuracy[i]:6.1%}")
        for name, c in (("naive", result.naive), ("aligned", result.aligned)):
            rows.append(f"{name}: barrier {c.barrier:.4f}, mean loss {c.mean_loss:.4f}, "
                        f"lambda* {c.threshold:.2f}")
        return "\n".join(rows)

    _emit(args, obj, text)
    return 0


def cmd_assemble(args) -> int:
    from .core.jobs import assemble_job, evaluate_job
    from .core.merge.plan import load_plan

    plan = load_plan(args.plan)
    result = _run(assemble_job(plan, out=Path(args.out), arch=args.arch), args)
    obj = result.to_json()
    scores = {}
    if plan.data:  # the plan names its data: score the base and the result on it
        for role, model in (("base", plan.base), ("merged", result.model)):
            r = _run(evaluate_job(model, plan.data, arch=args.arch), args)
            scores[role] = {"loss": r.loss, "accuracy": r.accuracy}
        obj["evaluation"] = {"data": plan.data, **scores}

    def text() -> str:
        lines = [f"wrote {result.out}"]
        lines += [f"  {role} on {plan.data}: loss {v['loss']:.4f}, accuracy {v['accuracy']:.2%}"
                  for role, v in scores.items()]
        for s in result.steps:
            j = f"{s.objective[-1]:.4g}" if s.objective else "-"
            lines.append(f"  step {s.index + 1}: {s.label} [{s.align}] {s.case_text}; "
                         f"out matched {s.out.matched}, padded {s.out.padded}, dropped "
                         f"{s.out.dropped}; J {j}" + (f" ({s.note})" if s.note else ""))
        return "\n".join(lines)

    _emit(args, obj, text)
    return 0


def cmd_evaluate(args) -> int:
    from .core.jobs import evaluate_job

    result = _run(evaluate_job(args.model, args.data, arch=args.arch), args)
    obj = {"loss": result.loss, "accuracy": result.accuracy, "n": result.n}
    _emit(args, obj, lambda: f"loss {result.loss:.4f}  accuracy {result.accuracy:.2%}  "
                             f"({result.n} samples)")
    return 0


def cmd_zoo_build(args) -> int:
    from .core.zoo.build import build_zoo_job, default_zoo, default_zoo_dir

    out = Path(args.out) if args.out else default_zoo_dir()
    index = _run(build_zoo_job(out, default_zoo(small=args.small), None), args)
    return _zoo_emit(args, index)


def cmd_zoo_list(args) -> int:
    from .core.zoo.build import default_zoo_dir, load_zoo_index

    index = load_zoo_index(Path(args.dir) if args.dir else default_zoo_dir())
    return _zoo_emit(args, index)


def _zoo_emit(args, index) -> int:
    models = [{"name": e.name, "path": str(index.path_of(e.name)), "family": e.family,
               "dataset": e.dataset, "seed": e.seed, "test_accuracy": e.test_accuracy}
              for e in index.entries]
    obj = {"dir": str(index.dir), "models": models}
    _emit(args, obj, lambda: "\n".join(
        [f"zoo in {index.dir}: {len(models)} models"] +
        [f"  {m['name']:<28} {m['family']:<7} {m['dataset']:<16} acc {m['test_accuracy']:.1%}"
         for m in models]))
    return 0


# -- parser -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mal", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mal_desktop {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common.add_argument("--quiet", action="store_true", help="no progress on stderr")
    common.add_argument("--arch", metavar="MODULE:FACTORY",
                        help="architecture for plain state dicts (runs that code: explicit opt-in)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", parents=[common], help="layers, shapes, spaces, stats of a model")
    p.add_argument("model")
    p.add_argument("--self-test", action="store_true",
                   help="check that permuting every space leaves the outputs unchanged")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("curve", parents=[common], help="interpolation curve, naive vs aligned")
    p.add_argument("--base", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--data", required=True, help="registered dataset name or a .npz (x, y)")
    p.add_argument("--layers", nargs="+", metavar="SRC:DST")
    p.add_argument("--align", choices=["none", "chain", "local", "weight", "activation"],
                   help="aligned series: whole model 'weight' (default) or 'activation' (probe "
                        "batch from the training data); with --layers 'chain' (default), "
                        "'local' or 'none'")
    p.add_argument("--grid", type=int, default=21, help="number of lambda points (default 21)")
    p.add_argument("--repair", action="store_true",
                   help="re-estimate BatchNorm statistics on the training data at every interior "
                        "lambda (REPAIR-style; an addition to MAL, reported in the output)")
    p.set_defaults(func=cmd_curve)

    p = sub.add_parser("assemble", parents=[common], help="run an assembly plan (PLAN.json)")
    p.add_argument("plan")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.set_defaults(func=cmd_assemble)

    p = sub.add_parser("evaluate", parents=[common], help="loss and accuracy on a dataset")
    p.add_argument("model")
    p.add_argument("--data", required=True)
    p.set_defaults(func=cmd_evaluate)

    zoo = sub.add_parser("zoo", help="the built-in demo zoo").add_subparsers(dest="zoo_command",
                                                                           required=True)
    p = zoo.add_parser("build", parents=[common], help="train (or reuse cached) demo-zoo models")
    p.add_argument("--out", help="zoo folder (default: the user cache)")
    p.add_argument("--small", action="store_true", help="a tiny zoo (seconds), for tests")
    p.set_defaults(func=cmd_zoo_build)
    p = zoo.add_parser("list", parents=[common], help="list the models of a built zoo")
    p.add_argument("--dir", help="zoo folder (default: the user cache)")
    p.set_defaults(func=cmd_zoo_list)

    from .cli_eval import add_commands  # eval-matrix and study

    add_commands(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "grid", 21) is not None and getattr(args, "grid", 21) < 2:
        parser.error("--grid needs at least 2 points")
    from .core.errors import MalError
    from .core.progress import Cancelled

    try:
        return int(args.func(args))
    except MalError as exc:
        sys.stderr.write(f"mal: error: {exc}\n")
        return 1
    except (KeyboardInterrupt, Cancelled):
        sys.stderr.write("mal: interrupted\n")
        return 130
    except Exception as exc:  # a bug, not a user error: still one line, details on request
        if os.environ.get("MAL_DEBUG"):
            raise
        sys.stderr.write(f"mal: internal error: {type(exc).__name__}: {exc} "
                         "(set MAL_DEBUG=1 for the traceback)\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())

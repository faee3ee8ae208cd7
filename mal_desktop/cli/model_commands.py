"""``mal inspect``, ``curve``, ``assemble``, ``evaluate`` and ``zoo``: models on the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from .output import emit, run


def note_output(model, args) -> None:
    """On stderr: which output of a model returning several is used, when the user did not
    choose it with --output."""
    note = model.output_note()
    if note and getattr(args, "output", None) is None:
        sys.stderr.write(f"mal: note: {note}; choose another with --output N\n")


def output_json(model) -> dict:
    return {"outputs": model.outputs, "output_index": model.output_index}


def cmd_inspect(args) -> int:
    from ..core.errors import MalError
    from ..core.graph.selftest import self_test
    from ..core.graph.spec import repeated_spaces
    from ..core.graph.tree import build_layer_tree
    from ..core.io.files import load_model, open_from_headers

    model = None
    if args.headers:
        if args.self_test:
            raise MalError("--self-test runs the model, so it needs the weights: leave out "
                           "--headers")
        model = open_from_headers(args.model, args.output)
        if model is None:
            sys.stderr.write(f"mal: note: {args.model}: its architecture comes with its tensors "
                             "(a .pt2 program, a plain state dict or user code), so it is read "
                             "whole\n")
    if model is None:
        model = load_model(args.model, args.arch, args.output)
    note_output(model, args)
    tree = build_layer_tree(model)
    obj = tree.to_json()
    obj.update({"file": str(args.model), "form": model.form, "arch": model.arch,
                "input_shape": list(model.input_shape), "num_classes": model.num_classes,
                "metadata": model.metadata, **output_json(model)})
    if args.self_test:
        report = self_test(model, tree.spec)
        obj["self_test"] = {"passed": report.passed, "status": report.status,
                            "free_spaces": report.free, "spaces": len(tree.spec.spaces),
                            "max_abs_diff": report.overall, "tolerance": report.tolerance,
                            "per_space": report.per_space, "inert": list(report.inert),
                            "powerless": list(report.powerless), "noised": list(report.noised)}

    def text() -> str:
        # a language model's outputs are next-token logits over its vocabulary, not classes
        outputs = (f"{model.num_classes:,}-token vocabulary" if model.id_range() is not None
                   else f"{model.num_classes} classes")
        lines = [f"{args.model}: {model.form}, {tree.total_params:,} parameters, "
                 f"input {tuple(model.input_shape)}, {outputs}"
                 + ("" if tree.has_stats else " (from the headers: weights not read)")]
        made = model.metadata
        if made.get("kind") == "assembly":  # a merge: what it was made of (--json: all of it)
            steps = made.get("steps") or []
            lines.append(f"  assembled by mal_desktop {made.get('created_at', '')}: "
                         f"{len(steps)} step{'s' if len(steps) != 1 else ''} into base "
                         f"{made.get('base', '?')}")
        shapes = {k: "x".join(map(str, v.shape)) for k, v in model.module.state_dict().items()}

        def side(axis) -> str:
            space = tree.spec.spaces[axis.space]
            fixed = " [fixed]" if space.fixed else ""
            # how the axis lays out the space's units, where not one entry each: the sizes
            # then differ from the weight's (a flatten, fused projections, grouped-query heads)
            how = [f"{axis.block} entries each"] if axis.block > 1 else []
            how += [f"{axis.tiles} copies"] if axis.tiles > 1 else []
            how += [f"each repeated {axis.repeat}x"] if axis.repeat > 1 else []
            return f"{space.id}{fixed} ({'; '.join([str(space.size), *how])})"

        for layer in tree.spec.layers:
            lines.append(f"  {layer.name:<28} {layer.kind:<7} {shapes.get(layer.weight, ''):<10} "
                         f"out {side(layer.out_axis)} in {side(layer.in_axis)}")
        if tree.spec.unsupported:
            lines.append("  ops without a rule (the spaces they touch keep their order): "
                         + ", ".join(tree.spec.unsupported))
        for space in tree.spec.spaces.values():
            if space.fixed and space.reason not in ("class output", "network input"):
                lines.append(f"  fixed {space.id} ({space.size}): {space.reason}")
        repeated = repeated_spaces(tree.spec)
        for space_id, group in tree.spec.head_groups.items():
            lines.append(f"  heads {space_id}: {group.heads} heads" + (
                f" of {group.dim} dims" if group.dim > 1 else " moving as blocks"))
            if space_id in repeated:
                lines.append(f"    {repeated[space_id][0]} query heads per key/value head (their "
                             "order inside a group may move too)")
            pinned = sorted({why for _, why in group.parts if why} | (
                {group.inner_reason} if group.inner_reason else set()))
            for why in pinned:
                lines.append(f"    dims inside a head pinned: {why}")
        if args.self_test:
            st = obj["self_test"]
            lines.append(f"  self-test: {st['status']}, {st['free_spaces']} of {st['spaces']} "
                         f"spaces free (max difference {st['max_abs_diff']:.2e})")
            if st["inert"] or st["powerless"]:
                lines.append("    not seen by the probe: " + ", ".join(st["inert"] + st["powerless"]))
            if st["noised"]:
                lines.append(f"    {len(st['noised'])} all-zero parameters got noise for the test")
        return "\n".join(lines)

    emit(args, obj, text)
    return 0


def _parse_layers(pairs: Sequence[str] | None) -> list[tuple[str, str]] | None:
    from ..core.errors import MalError

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
    from ..core.align.matching import WEIGHT_RESTARTS
    from ..core.errors import MalError
    from ..core.evaluate.datasets import load_dataset
    from ..core.jobs import ModelCache, model_curve_job

    if args.plan is not None:
        return _plan_curve(args)
    missing = [o for o, v in (("--base", args.base), ("--target", args.target),
                              ("--data", args.data)) if not v]
    if missing:
        raise MalError(f"mal curve needs {', '.join(missing)}, or --plan PLAN (the curve of one "
                       "of its steps)")
    if args.step is not None:
        raise MalError("--step picks a step of --plan PLAN")
    if args.restarts is not None and (args.layers or args.align not in (None, "weight")):
        raise MalError("--restarts sets the descents of whole-model weight matching: it needs "
                       "no --layers and --align weight (the default)")
    data = load_dataset(args.data)  # an unknown dataset is refused before any model is read
    if args.align == "activation" and data.text is not None:
        # its probe batch is input samples; a text dataset holds text until a model tokenises it
        raise MalError(f"--align activation needs input samples; {args.data} is text: use "
                       "--align weight")
    chosen = {} if args.output is None else {args.base: args.output, args.target: args.output}
    cache = ModelCache(None, args.arch, outputs=chosen)
    for path in dict.fromkeys((args.base, args.target)):
        note_output(cache.model(path), args)
    result = run(model_curve_job(args.base, args.target, data, align=args.align,
                                  grid=args.grid, layers=_parse_layers(args.layers),
                                  arch=args.arch, repair=args.repair, cache=cache,
                                  restarts=args.restarts or WEIGHT_RESTARTS), args)
    obj = result.to_json()
    obj["output_index"] = cache.model(args.base).output_index
    return _emit_curve(args, result, obj, Path(args.base).name)


def _plan_curve(args) -> int:
    """`mal curve --plan PLAN [--step N]`: the curve the app's Run draws for a plan's step."""
    from ..core.errors import DatasetError, MalError, PlanError
    from ..core.evaluate.datasets import is_text_dataset, load_dataset
    from ..core.jobs import plan_curve_job

    given = [o for o, v in (("--base", args.base), ("--target", args.target),
                            ("--layers", args.layers), ("--align", args.align),
                            ("--restarts", args.restarts), ("--output", args.output))
             if v is not None]
    if given:
        raise MalError(f"--plan takes the models, layers, alignment and outputs from the plan: "
                       f"leave out {', '.join(given)}")
    plan = _load_any_plan(args.plan)
    data = args.data or plan.data
    if not data:
        raise MalError(f"{args.plan}: the plan names no data set: give --data")
    try:
        if not is_text_dataset(data):  # text is read after the base says it reads text
            load_dataset(data)  # an unknown dataset is refused before any model is read
        result = run(plan_curve_job(plan, args.step - 1 if args.step else -1, data,
                                    args.grid, arch=args.arch, repair=args.repair), args)
    except (PlanError, DatasetError) as exc:  # a step or the data of this plan: name the file
        if str(exc).startswith(str(args.plan)):
            raise
        raise type(exc)(f"{args.plan}: {exc}") from None
    obj = result.to_json()
    step = result.alignment["steps"][0]
    heading = (f"step {step['index'] + 1} of {result.alignment['plan_steps']}: {step['label']} "
               f"[{step['align']}], lambda 0 = the base"
               + (f" with {_steps_before(step['index'])} merged" if step["index"] else ""))
    return _emit_curve(args, result, obj, Path(plan.base).name, heading)


def _steps_before(n: int) -> str:
    return "step 1" if n == 1 else f"steps 1-{n}"


def _load_any_plan(path: str):
    """A plan file, or the plan of a project saved by the app (.malproj)."""
    from ..core.merge.plan import load_plan
    from ..core.project.document import PROJECT_SUFFIX, load_project_plan

    return (load_project_plan(path) if Path(path).suffix.lower() == PROJECT_SUFFIX
            else load_plan(path))


def _emit_curve(args, result, obj: dict, base_name: str, heading: str = "") -> int:
    """Print a curve: a table of lambda, loss (and perplexity for text) and accuracy, naive and
    aligned, then their summaries; or its JSON."""
    text_data = result.per_token  # perplexity is what language models are read by
    repair_note = ""
    if args.repair:  # asked for: say what it did, also when there was nothing to do
        repair_note = ("repair: BatchNorm statistics re-estimated at every interior lambda"
                       if result.repair else
                       f"repair: nothing to re-estimate ({base_name} has no BatchNorm "
                       "statistics)")
        obj["repair_note"] = repair_note
    if text_data:
        for name, c in (("naive", result.naive), ("aligned", result.aligned)):
            obj[name]["perplexity"] = [_perplexity(v) for v in c.loss]

    def text() -> str:
        ppl = f" {'ppl':>9}" if text_data else ""
        rows = [heading] if heading else []
        rows.append(f"{'lambda':>6}  {'naive loss':>10}{ppl} {'acc':>6}  {'aligned loss':>12}"
                    f"{ppl} {'acc':>6}")
        for i, lam in enumerate(result.lambdas):
            cols = []
            for c, width in ((result.naive, 10), (result.aligned, 12)):
                cols.append(f"{c.loss[i]:{width}.4f}"
                            + (f" {_perplexity(c.loss[i]):9.2f}" if text_data else "")
                            + f" {c.accuracy[i]:6.1%}")
            rows.append(f"{lam:6.2f}  " + "  ".join(cols))
        for name, c in (("naive", result.naive), ("aligned", result.aligned)):
            rows.append(f"{name}: barrier {c.barrier:.4f}, mean loss {c.mean_loss:.4f}, "
                        f"lambda* {c.threshold:.2f}")
        rows.append("lambda*: the largest lambda up to which accuracy stays within one point "
                    "of the base's")
        if repair_note:
            rows.append(repair_note)
        return "\n".join(rows)

    emit(args, obj, text)
    return 0


def cmd_assemble(args) -> int:
    from ..core.errors import DatasetError, PlanError
    from ..core.evaluate.datasets import load_dataset
    from ..core.jobs import assemble_job, evaluate_job
    from ..core.merge.case_words import counts_in_case_units, query_groups_text, unit_of

    plan = _load_any_plan(args.plan)  # a .malproj saved by the app runs like its plan
    for first, again in plan.repeated_steps():
        sys.stderr.write(f"mal: warning: {args.plan}: steps {first + 1} and {again + 1} both "
                         f"merge {plan.steps[again].label}: that layer is merged twice\n")
    per_token = False
    try:
        if plan.data:  # an unknown dataset is refused before anything is assembled or written
            per_token = load_dataset(plan.data).text is not None
        result = run(assemble_job(plan, out=Path(args.out), arch=args.arch), args)
    except (PlanError, DatasetError) as exc:  # a step or the data of this plan: name the file
        if str(exc).startswith(str(args.plan)):
            raise
        raise type(exc)(f"{args.plan}: {exc}") from None
    obj = result.to_json()
    scores = {}
    if plan.data:  # the plan names its data: score the base and the result on it
        for role, model in (("base", plan.base), ("merged", result.model)):
            r = run(evaluate_job(model, plan.data, arch=args.arch), args)
            scores[role] = {"loss": r.loss, "accuracy": r.accuracy}
            if per_token:  # a language model is read by its perplexity, as mal evaluate says
                scores[role]["perplexity"] = _perplexity(r.loss)
        obj["evaluation"] = {"data": plan.data, **scores}

    def text() -> str:
        lines = [f"wrote {result.out}"]
        lines += [f"  {role} on {plan.data}: loss {v['loss']:.4f}, perplexity "
                  f"{v['perplexity']:.2f}, next-token accuracy {v['accuracy']:.2%}" if per_token
                  else f"  {role} on {plan.data}: loss {v['loss']:.4f}, accuracy "
                       f"{v['accuracy']:.2%}" for role, v in scores.items()]
        for s in result.steps:
            j = f"{s.objective[-1]:.4g}" if s.objective else "-"
            # counted as the case counts them (heads, not their dims) so the line agrees
            matched, padded, dropped = counts_in_case_units(
                s.case_text, "out", s.out.base, s.out.target,
                (s.out.matched, s.out.padded, s.out.dropped))
            unit = unit_of(s.case_text, "out")
            lines.append(f"  step {s.index + 1}: {s.label} [{s.align}] {s.case_text}; "
                         f"out{' ' + unit if unit else ''} matched {matched}, padded {padded}, "
                         f"dropped {dropped}; " + "".join(
                             f"{side}: {query_groups_text(r.groups, r.groups_reordered)}; "
                             for side, r in (("out", s.out), ("in", s.inp)) if r.groups)
                         + f"J {j}" + (f" ({s.note})" if s.note else ""))
        return "\n".join(lines)

    emit(args, obj, text)
    return 0


def cmd_evaluate(args) -> int:
    from ..core.evaluate.datasets import load_dataset
    from ..core.jobs import evaluate_job

    from ..core.io.files import load_model

    data = load_dataset(args.data)
    model = load_model(args.model, args.arch, args.output)
    note_output(model, args)
    result = run(evaluate_job(model, data), args)
    obj = {"loss": result.loss, "accuracy": result.accuracy, "n": result.n,
           **output_json(model)}
    if data.text is not None:  # per token: perplexity is what language models are read by
        obj["perplexity"] = _perplexity(result.loss)
        emit(args, obj, lambda: f"loss {result.loss:.4f}  perplexity {obj['perplexity']:.2f}  "
                                 f"next-token accuracy {result.accuracy:.2%}  "
                                 f"({result.n} tokens)")
        return 0
    emit(args, obj, lambda: f"loss {result.loss:.4f}  accuracy {result.accuracy:.2%}  "
                             f"({result.n} samples)")
    return 0


def cmd_zoo_build(args) -> int:
    if args.language:  # Hugging Face folders of small Llama-style LMs (needs the [hf] extra)
        from ..core.zoo.language import build_lm_zoo_job, default_lm_zoo, default_lm_zoo_dir

        out = Path(args.out) if args.out else default_lm_zoo_dir()
        index = run(build_lm_zoo_job(out, default_lm_zoo(small=args.small), None), args)
        return _zooemit(args, index)
    from ..core.zoo.build import build_zoo_job, default_zoo, default_zoo_dir

    out = Path(args.out) if args.out else default_zoo_dir()
    index = run(build_zoo_job(out, default_zoo(small=args.small), None), args)
    return _zooemit(args, index)


def cmd_zoo_list(args) -> int:
    from ..core.zoo.build import default_zoo_dir, load_zoo_index

    if args.dir:
        folder = Path(args.dir)
    elif args.language:
        from ..core.zoo.language import default_lm_zoo_dir

        folder = default_lm_zoo_dir()
    else:
        folder = default_zoo_dir()
    return _zooemit(args, load_zoo_index(folder))


def _perplexity(loss: float) -> float:
    """exp(loss) (core.evaluate.metrics.perplexity_of, imported when first needed like the
    rest of the core here)."""
    from ..core.evaluate.metrics import perplexity_of

    return perplexity_of(loss)


def _zooemit(args, index) -> int:
    models = [{"name": e.name, "path": str(index.path_of(e.name)), "family": e.family,
               "dataset": e.dataset, "seed": e.seed, "test_accuracy": e.test_accuracy}
              for e in index.entries]
    for m, e in zip(models, index.entries):
        if e.dataset.startswith("python-"):  # language models: accuracy is per next token
            m["test_perplexity"] = _perplexity(e.test_loss)
    obj = {"dir": str(index.dir), "models": models}

    def line(m: dict) -> str:
        score = (f"perplexity {m['test_perplexity']:.1f}" if "test_perplexity" in m
                 else f"acc {m['test_accuracy']:.1%}")
        return f"  {m['name']:<28} {m['family']:<7} {m['dataset']:<18} {score}"

    emit(args, obj, lambda: "\n".join([f"zoo in {index.dir}: {len(models)} models"] +
                                      [line(m) for m in models]))
    return 0

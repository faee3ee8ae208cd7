"""`mal eval-matrix` and `mal study`: the evaluation toolkit and the MAL study on the command line.

``add_commands(subparsers, common)`` adds both commands to the ``mal`` parser; they
drive the same core jobs as the GUI, with progress on stderr and ``--json`` output on stdout.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from .output import emit, run


def _check_writable(out: Path) -> None:
    """Refuse an output folder that cannot be written, before the work (every cell was
    computed, then the write failed): a file is created and removed in it, or in the nearest
    folder above it that exists (nothing is left behind)."""
    from ..core.errors import MalError

    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise MalError(f"{out}: cannot write in {probe}: {exc.strerror or exc}") from None


def cmd_eval_matrix(args) -> int:
    from ..core.errors import MalError
    from ..core.toolkit.matrix import cache_line, eval_matrix_job, format_matrix
    from ..core.evaluate.metric_registry import get_metric
    from ..core.io.files import atomic_write_text
    from ..core.jsonio import dumps
    from ..core.project.refs import register_projects

    register_projects()  # a project (.malproj) names the merge its plan assembles
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():  # refused before the work
        raise MalError(f"{out}: --out names a folder for matrix.json and matrix.csv; "
                       "this is an existing file")
    if out is not None:
        _check_writable(out)
    result = run(eval_matrix_job(args.models, args.datasets, args.metrics, args.cache,
                                  zoo_dir=args.zoo, arch=args.arch), args)
    obj = result.to_json()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "matrix.json", dumps(obj, indent=1) + "\n")
        atomic_write_text(out / "matrix.csv", result.to_csv())
        obj["files"] = {"json": str(out / "matrix.json"), "csv": str(out / "matrix.csv")}

    def text() -> str:
        scalar = [m for m in result.metrics if not get_metric(m).per_category]
        parts = [format_matrix(result, m) for m in scalar] or [format_matrix(result)]
        parts.append(cache_line(result))  # once, not under every table
        if args.out:
            parts.append(f"wrote {obj['files']['json']} and {obj['files']['csv']}")
        return "\n\n".join(parts)

    emit(args, obj, text)
    for line in result.not_applicable:  # "n/a" in the table: the model reads other data
        sys.stderr.write(f"mal: note: not applicable: {line}\n")
    for line in result.errors:
        sys.stderr.write(f"mal: error: {line}\n")
    return 1 if result.errors else 0


def cmd_study(args) -> int:
    import os

    import torch

    from ..core.study import StudySettings, study_job

    if "OMP_NUM_THREADS" not in os.environ:
        # The study's models are tiny: a second torch thread costs more in OpenMP hand-offs
        # than it gains, and its spin-waits suffer badly on a busy machine. Measured on 2 cores:
        # study on a built zoo 18 s with one thread vs 41 s with two; cold default study while
        # other jobs ran 52 s with one thread vs 578 s with two.
        torch.set_num_threads(1)
    settings = StudySettings.for_mode(args.small)
    if args.seeds is not None:
        settings = replace(settings, seeds=args.seeds)
    if args.workers is not None:
        settings = replace(settings, workers=args.workers)
    result = run(study_job(args.zoo, args.out, args.small, settings=settings), args)
    figures: dict[str, str] = {}
    if not args.no_figures:
        from ..figures import render_figures

        figures = {k: str(p) for k, p in render_figures(result.data, result.out_dir).items()}
    obj = {"out": str(result.out_dir), "report": str(result.report_path),
           "data": str(result.data_path), "figures": figures,
           "verdicts": {str(k): v for k, v in result.verdicts.items()},
           "timing": result.data["timing"]}

    def text() -> str:
        lines = [f"wrote {result.report_path} and {result.data_path}"
                 + (f" and {len(figures)} figures" if figures else "")]
        for law in result.data["laws"]:
            tests = "; ".join(f"n={c['n']} p={c['p']:.3g}" for c in law["checks"])
            lines.append(f"  law {law['law']:<2}: {law['verdict']:<13} {law['title']} ({tests})")
        t = result.data["timing"]
        lines.append(f"  run time {t['total_seconds']:.1f} s (zoo {t['zoo_seconds']:.1f} s, "
                     f"{t['curves']} curves {t['curve_seconds']:.1f} s, "
                     f"{t['curves_cached']} cached)")
        return "\n".join(lines)

    emit(args, obj, text)
    return 0


def _at_least_two(text: str) -> int:
    n = int(text)
    if n < 2:
        raise argparse.ArgumentTypeError("the study needs at least 2 seeds per configuration")
    return n


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def add_commands(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser,
                 plain: argparse.ArgumentParser) -> None:
    """Add ``eval-matrix`` and ``study`` to the ``mal`` sub-command parsers.

    common: the parent parser carrying --json, --quiet and --arch; plain: --json and --quiet
    only (the study trains its own zoo: no user architecture).
    """
    p = subparsers.add_parser(
        "eval-matrix", parents=[common],
        help="evaluate models x datasets, with a result cache (adding a model computes one row)")
    p.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                   help="model files, zoo:NAME, plan .json files or projects saved by the app "
                        "(.malproj; assembled on the fly)")
    p.add_argument("--datasets", nargs="+", required=True, metavar="DATA",
                   help="registered dataset names, .npz files (x, y), or text:PATH (a .txt "
                        "file or a folder of them, scored per token)")
    p.add_argument("--metrics", nargs="+", metavar="METRIC",
                   help="any of accuracy, loss, perplexity, ece, per_class_accuracy (default: "
                        "accuracy, loss, ece and per_class_accuracy, the last left out for text, "
                        "whose classes are token ids)")
    p.add_argument("--cache", metavar="DIR", help="result cache (default: the user cache)")
    p.add_argument("--out", metavar="DIR", help="also write matrix.json and matrix.csv there")
    p.add_argument("--zoo", metavar="DIR", help="zoo folder for zoo:NAME (default: user cache)")
    p.set_defaults(func=cmd_eval_matrix)

    p = subparsers.add_parser(
        "study", parents=[plain],
        help="measure the laws of Model Assembly Learning on the demo zoo: report and figures")
    p.add_argument("--zoo", metavar="DIR", help="demo-zoo folder (default: the user cache); "
                                                "missing models are trained there")
    p.add_argument("--out", metavar="DIR", default="mal-study",
                   help="folder for report.md, study.json and the figures (default: mal-study)")
    p.add_argument("--small", action="store_true", help="a tiny zoo and grid (for tests)")
    p.add_argument("--seeds", type=_at_least_two, metavar="N",
                   help="zoo seeds per configuration (default 3; --small 2)")
    p.add_argument("--workers", type=_positive, metavar="N",
                   help="parallel training and measuring processes (default 2)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures (no Qt)")
    p.set_defaults(func=cmd_study)

"""`mal`: the headless command line over the same core jobs the GUI runs.

Every command takes ``--json`` to print one JSON object on stdout; progress goes to stderr;
exit code 0 on success, 1 with a one-line error on failure, 130 when interrupted (Ctrl+C),
143 when terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Sequence

from .. import __version__
from . import eval_commands
from .model_commands import (cmd_assemble, cmd_curve, cmd_evaluate, cmd_inspect, cmd_zoo_build,
                             cmd_zoo_list)

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mal", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mal_desktop {__version__}")
    plain = argparse.ArgumentParser(add_help=False)  # every command
    plain.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    plain.add_argument("--quiet", action="store_true", help="no progress on stderr")
    common = argparse.ArgumentParser(add_help=False, parents=[plain])  # commands reading models
    common.add_argument("--arch", metavar="MODULE:FACTORY",
                        help="architecture for plain state dicts (runs that code: explicit opt-in)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", parents=[common], help="layers, shapes, spaces, stats of a model")
    p.add_argument("model", help="a model file (.safetensors, .pt2, .pt) or a model folder "
                                 "(Hugging Face: config.json + safetensors)")
    p.add_argument("--self-test", action="store_true",
                   help="check that permuting every space leaves the outputs unchanged")
    p.add_argument("--headers", action="store_true",
                   help="layers and spaces from the file headers alone, in seconds for a large "
                        "model: no tensor data is read (no statistics, no NaN check)")
    _output_option(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("curve", parents=[common], help="interpolation curve, naive vs aligned",
                       description="The curve of a target merged into a base (--base, --target), "
                                   "or of one step of an assembly plan (--plan, --step), as the "
                                   "app's Run draws it.")
    p.add_argument("--base", metavar="MODEL",
                   help="the model merged into (lambda 0): a file or a model folder")
    p.add_argument("--target", metavar="MODEL",
                   help="the model merged in (lambda 1)")
    p.add_argument("--plan", metavar="PLAN",
                   help="instead of --base and --target: a plan file or a project saved by the "
                        "app; the curve of its step --step, the steps before it merged first "
                        "(a step naming two blocks counts as the steps of its layers)")
    p.add_argument("--step", type=_positive_int, default=None, metavar="N",
                   help="with --plan: the step to sweep, from 1 (default: the last)")
    p.add_argument("--data",
                   help="registered dataset name, a .npz (x, y), or text:PATH (a .txt file or a "
                        "folder of them, scored per token with the model's tokenizer); with "
                        "--plan, default: the plan's data")
    p.add_argument("--layers", nargs="+", metavar="SRC:DST",
                   help="merge only these layers (target layer : base layer), each at the "
                        "same lambda; default: the whole model (same architecture)")
    p.add_argument("--align", choices=["none", "chain", "local", "weight", "activation"],
                   help="aligned series: whole model 'weight' (default) or 'activation' (probe "
                        "batch from the training data); with --layers 'chain' (default), "
                        "'local' or 'none'")
    p.add_argument("--grid", type=_grid_points, default=21, metavar="N",
                   help="number of lambda points from 0 to 1 (default 21)")
    p.add_argument("--restarts", type=_positive_int, default=None, metavar="N",
                   help="whole-model weight matching: descents to run, the first from the "
                        "identity, the others from seeded random matches; the highest J is kept "
                        "(default 4; 1 is about 4x faster on wide models and may end at a "
                        "lower J)")
    p.add_argument("--repair", action="store_true",
                   help="re-estimate BatchNorm statistics on the training data at every interior "
                        "lambda (REPAIR-style; an addition to MAL, reported in the output)")
    _output_option(p)
    p.set_defaults(func=cmd_curve)

    p = sub.add_parser("assemble", parents=[common],
                       help="run an assembly plan (PLAN.json) or a project saved by the app "
                            "(.malproj)")
    p.add_argument("plan", help="a plan file (PLAN.json: base, zoo, steps; paths relative to "
                                "the file) or a project saved by the app (.malproj)")
    p.add_argument("--out", required=True,
                   help="output .safetensors file, or a name without extension for a folder "
                        "(a Hugging Face folder when the base is one; shards otherwise)")
    p.set_defaults(func=cmd_assemble)

    p = sub.add_parser("evaluate", parents=[common], help="loss and accuracy on a dataset")
    p.add_argument("model", help="a model file or a model folder, as for inspect")
    p.add_argument("--data", required=True,
                   help="registered dataset name, a .npz (x, y), or text:PATH (a .txt file or a "
                        "folder of them, scored per token with the model's tokenizer)")
    _output_option(p)
    p.set_defaults(func=cmd_evaluate)

    zoo = sub.add_parser("zoo", help="the built-in demo zoo").add_subparsers(dest="zoo_command",
                                                                           required=True)
    p = zoo.add_parser("build", parents=[plain], help="train (or reuse cached) demo-zoo models")
    p.add_argument("--out", help="zoo folder (default: the user cache)")
    p.add_argument("--small", action="store_true", help="a tiny zoo (seconds), for tests")
    p.add_argument("--language", action="store_true",
                   help="the language zoo: small Llama-style LMs trained on Python's own code "
                        "and docstrings, saved as Hugging Face folders (needs the [hf] extra)")
    p.set_defaults(func=cmd_zoo_build)
    p = zoo.add_parser("list", parents=[plain], help="list the models of a built zoo")
    p.add_argument("--dir", help="zoo folder (default: the user cache)")
    p.add_argument("--language", action="store_true", help="the language zoo's default folder")
    p.set_defaults(func=cmd_zoo_list)

    eval_commands.add_commands(sub, common, plain)  # eval-matrix and study
    return parser


def _whole_number(least: int, what: str = ""):
    """An argparse type: a whole number >= ``least``; ``what`` says why in the refusal."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(
                f"{what or f'expected a whole number >= {least}'}, got {text!r}")
        return value

    return parse


_output_index = _whole_number(0)
_grid_points = _whole_number(2, "needs at least 2 points (0 and 1)")
_positive_int = _whole_number(1)


def _output_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", type=_output_index, metavar="N",
                   help="for models returning several outputs: which one (from 0) is the "
                        "logits (default 0, with a note on stderr)")


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt: no ``except Exception`` on the
    way may swallow it, and every cleanup on the way runs."""


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (``kill``, a service manager, a closed session) unwinds like Ctrl+C: a model
    being saved has its temporary file or folder removed on the way out, instead of left
    beside the output until the next save there. Only where nobody else handles SIGTERM
    (the main thread, the default action); the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def stop(signum, frame) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..core.errors import MalError
    from ..core.progress import Cancelled

    try:
        with _sigterm_unwinds():
            return int(args.func(args))
    except Terminated:
        sys.stderr.write("mal: terminated\n")
        return 143
    except MalError as exc:
        sys.stderr.write(f"mal: error: {exc}\n")
        return 1
    except (KeyboardInterrupt, Cancelled):
        sys.stderr.write("mal: interrupted\n")
        return 130
    except OSError as exc:  # the machine said no (disk full, permissions): not a bug of ours
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"mal: error: {where}{exc.strerror or exc}\n")
        return 1
    except Exception as exc:  # a bug, not a user error: still one line, details on request
        if os.environ.get("MAL_DEBUG"):
            raise
        sys.stderr.write(f"mal: internal error: {type(exc).__name__}: {exc} "
                         "(set MAL_DEBUG=1 for the traceback)\n")
        return 2


"""The demo zoos' choices: which models "Open Demo Zoo" and "Open Language Demo Zoo" open, the
language demo's data set, and the example first step.

Heavy modules (torch through the zoo builder and the pre-flight check) are imported inside the
functions that need them: the GUI imports this module on its start-up path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from ..errors import MalError
from ..merge.plan import AssemblyStep

if TYPE_CHECKING:
    from ..graph.tree import LayerTree
    from ..zoo.build import ZooEntry, ZooIndex, ZooModelInfo

# The models opened by "Open Demo Zoo" (names of core.zoo.build.default_zoo entries).
DEMO_BASE = "mlp-w64-s0"
DEMO_ZOO = ("mlp-w64-s1", "mlp-w128-s0", "mlp-w64-s1-permuted", "cnn-w16-s0")
DEMO_DATA = "digits"  # what the demo models were trained on: their curves' data set


def demo_zoo_ready(index: "ZooIndex") -> bool:
    """True when ``index`` lists every demo model and each one's file exists."""
    names = set(index.names())
    return all(n in names and index.path_of(n).is_file() for n in (DEMO_BASE, *DEMO_ZOO))


# The language demo (core.zoo.language entries): its base, and the text its curves are scored
# on, per token (loss is the log of the perplexity).
LM_DEMO_BASE = "llama-w128-s0-code"
LM_DEMO_DATA = "python-code"


def lm_demo_ready(index: "ZooIndex", names: Iterable[str]) -> bool:
    """True when ``index`` lists every model of ``names`` and each one's folder holds its
    config.json (a folder is written whole, so its config means the model is complete)."""
    listed = set(index.names())
    return all(n in listed and (index.path_of(n) / "config.json").is_file() for n in names)


def pick_lm_demo_models(index: "ZooIndex") -> tuple["ZooModelInfo", list["ZooModelInfo"]]:
    """The base and zoo models "Open Language Demo Zoo" opens: the width-128 code model (else
    the first model trained on python-code, else the first one) as the base, every other model
    of the zoo as the zoo.

    Raises MalError when the index lists no model.
    """
    if not index.entries:
        raise MalError(f"{index.dir}: the language zoo lists no model")
    by_name = {e.name: e for e in index.entries}
    base = by_name.get(LM_DEMO_BASE) or next(
        (e for e in index.entries if e.dataset == LM_DEMO_DATA), index.entries[0])
    return base, [e for e in index.entries if e.name != base.name]


def demo_zoo_entries(existing: Iterable[str] = ()) -> list["ZooEntry"]:
    """The zoo entries to build for the demo: the demo models plus those named in ``existing``
    (models already in the zoo's index are kept, so building the demo never shrinks a zoo built
    with the CLI)."""
    from ..zoo.build import default_zoo

    wanted = {DEMO_BASE, *DEMO_ZOO} | set(existing)
    return [e for e in default_zoo() if e.name in wanted]


def pick_demo_models(index: "ZooIndex") -> tuple["ZooModelInfo", list["ZooModelInfo"]]:
    """Choose the base and the zoo models to open from a zoo index.

    Base: the demo MLP when listed, else the first MLP trained on "digits". Zoo: the demo
    models that are listed, else up to four others, preferring a same-width MLP with another
    seed, a model trained on other data and a CNN, so that every kind of step can be tried.
    Raises MalError when the zoo has no MLP trained on digits.
    """
    by_name = {e.name: e for e in index.entries}
    base = by_name.get(DEMO_BASE) or next(
        (e for e in index.entries if e.family == "mlp" and e.dataset == "digits"), None)
    if base is None:
        raise MalError(f"{index.dir}: the zoo has no MLP trained on digits to use as the base")
    zoo = [by_name[n] for n in DEMO_ZOO if n in by_name and n != base.name]
    if not zoo:
        others = [e for e in index.entries if e.name != base.name]
        ranked = sorted(others, key=lambda e: (
            not (e.family == base.family and e.config == base.config),  # same arch, other seed
            e.dataset == base.dataset and e.family == "mlp",
            e.family != "cnn"))
        zoo = ranked[:4]
    return base, zoo


def weight_layers(tree: "LayerTree") -> list[str]:
    """Paths of the weight layers of a layer tree, in model order."""
    found: list[str] = []
    stack = [tree.root]
    while stack:
        node = stack.pop()
        if node.layer is not None:
            found.append(node.path)
        stack.extend(reversed(node.children))
    return found


Fits = Callable[[str, str, str], bool]  # (zoo model, zoo layer, base layer) -> can merge


def suggest_first_step(base: "LayerTree | None", zoo: Mapping[str, "LayerTree"],
                       fits: Fits | None = None) -> AssemblyStep | None:
    """An example step for a freshly opened demo, or None.

    A hidden layer of a same-architecture zoo model merged into the same base layer (both the
    out and the in side get aligned); failing that the first, then the last layer. Parameters:
    base - the base model's layer tree (None: no suggestion); zoo - layer trees by zoo model
    name, tried in order; fits - whether a step fits (default: the core pre-flight check; the
    GUI passes its cached one). Only reads the trees: cheap enough for the GUI thread.
    """
    if base is None:
        return None
    if fits is None:
        from ..merge.preflight import check_step

        def preflight(name: str, source_layer: str, base_layer: str) -> bool:
            return check_step(base, zoo[name], source_layer, base_layer).ok
        fits = preflight
    layers = weight_layers(base)
    preferred = layers[1:-1] + layers[:1] + layers[-1:]
    for name, tree in zoo.items():
        donor_layers = set(weight_layers(tree))
        for layer in preferred:
            if layer in donor_layers and fits(name, layer, layer):
                return AssemblyStep(name, layer, layer, lam=0.5)
    return None

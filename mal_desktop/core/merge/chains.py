"""Chain alignment of a plan's steps: one joint solve per donor, shared by its steps.

A step's chain alignment solves every hidden space of the layer prefix it merges (method
section 4). Two steps of one donor whose prefixes overlap pair the same spaces: a block merged
layer by layer (q, k, v, o, gate, up, down of one decoder layer) has gate_proj writing the space
down_proj reads. Solved step by step, each against the base as the steps before it left it,
a shared space can get a different map in each solve, and the merged block then mixes units
that do not correspond; each solve also repeats the whole prefix's descent (seven times for
one Llama block, each a few minutes at LLM widths).

So the steps of one donor share solves: a step's chain is solved once as the chain of the
donor's deepest step whose prefix contains it, against the base as it is at the first step that
needs it, and every step whose prefix it contains takes its maps from that solve. Through a
deep layer of a large model the prefix is most of the model: above ``CHAIN_WORKING_BYTES`` of
working copies the chain starts at the first layer of the steps it serves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Generator, Sequence

import torch

from ..align.descent import MatchResult
from ..align.matching import chain_layers, chain_pairs, match_spaces
from ..errors import AlignmentError
from ..graph.spec import Layer, PermutationSpec
from ..progress import CancelToken, ProgressEvent
from .plan import AssemblyStep

State = dict[str, torch.Tensor]
Pairs = tuple[dict[str, str], list[tuple[str, str]]]  # chain_pairs: space pairs, tensor pairs

# Coordinate descent ends in local optima: a few seeded restarts, keeping the highest J, recover
# permuted copies that a single run can miss (measured on the demo zoo's Mixer: 3 of 6 chain
# seeds got stuck at 77 % of J). They are match_spaces' restarts: the first from the identity,
# the rest from random matches, never kept below the identity's J.
CHAIN_RESTARTS = 4


# A chain's tensors are copied to float32 for the descent, base and donor both. Through a deep
# layer of a large model that is the whole model twice over (52 GB for the last block of a
# 7B-parameter model). Above this the chain starts at the first layer of the steps it serves:
# their spaces, the residual stream included, are then solved from those layers' weights.
# A fixed bound, not the machine's free memory, so that a plan aligns the same everywhere.
CHAIN_WORKING_BYTES = 4 * 2**30


class ChainTooLarge(AlignmentError):
    """Even from the first layer of the steps it serves, a chain's working copies would pass
    ``CHAIN_WORKING_BYTES`` (every block of a large model merged from one donor)."""


@dataclass(frozen=True)
class ChainSolve:
    """One chain solve: the spaces it paired (base -> donor), through which base layer and from
    which (``start``: "" when from the model's first), its result, and the steps it serves."""

    space_pairs: dict[str, str]
    upto: str
    result: MatchResult
    served: tuple[AssemblyStep, ...] = ()
    start: str = ""
    prefix_bytes: int = 0  # the working copies a chain from the first layer would have needed

    def covers(self, space_pairs: dict[str, str]) -> bool:
        return _contains(self.space_pairs, space_pairs)

    @property
    def note(self) -> str:
        parts = []
        if len(self.served) > 1:
            parts.append(f"one chain solve through {self.upto} serves {len(self.served)} steps "
                         "of this donor: a space they share gets one map")
        if self.start:
            parts.append(f"the chain starts at {self.start}: from the first layer its float32 "
                         f"working copies would take {self.prefix_bytes / 2**30:.1f} GiB "
                         f"(limit {CHAIN_WORKING_BYTES / 2**30:g} GiB)")
        return "; ".join(parts)


class SharedChains:
    """The chain solves of one plan's steps (one object per assembly or curve job).

    ``steps``: every step of the plan, later ones included: a step is solved together with the
    deepest step of the same donor whose prefix contains its own.
    """

    def __init__(self, steps: Sequence[AssemblyStep]) -> None:
        self._steps = list(steps)
        self._solved: dict[str, list[ChainSolve]] = {}

    def solve(self, step: AssemblyStep, own_pairs: dict[str, str], base_state: State,
              base_spec: PermutationSpec, donor_state: State, donor_spec: PermutationSpec,
              cancel: CancelToken | None = None) -> Generator[ProgressEvent, None, ChainSolve]:
        """The solve that serves ``step`` (whose own chain pairs ``own_pairs``): an earlier one,
        or a new one through the deepest step of the donor whose prefix contains it."""
        for done in self._solved.get(step.source, []):
            if step in done.served or (not done.start and done.covers(own_pairs)):
                return done
        # each chain of this donor's steps, computed once (a spec walk per step)
        chains: dict[AssemblyStep, Pairs] = {step: chain_pairs(base_spec, donor_spec,
                                                               step.base_layer, step.source_layer)}
        for other in self._steps:
            if other.source == step.source and other.align == "chain" and other not in chains:
                try:
                    chains[other] = chain_pairs(base_spec, donor_spec, other.base_layer,
                                                other.source_layer)
                except (AlignmentError, KeyError):
                    pass  # its own alignment reports why
        upto, pairs = _deepest(step, own_pairs, chains, base_spec)
        served = tuple(s for s in self._steps if s in chains and _contains(pairs[0], chains[s][0]))
        start, needed = 0, _working_bytes(pairs[1], base_state, donor_state)
        if needed > CHAIN_WORKING_BYTES:
            start = _position(base_spec, min(served or (step,),
                                             key=lambda s: base_spec.layer(s.base_layer).index))
            pairs = chain_pairs(base_spec, donor_spec, *upto, start=start)
            window = _working_bytes(pairs[1], base_state, donor_state)
            if window > CHAIN_WORKING_BYTES:
                raise ChainTooLarge(
                    f"its float32 working copies would take {window / 2**30:.1f} GiB, over the "
                    f"limit of {CHAIN_WORKING_BYTES / 2**30:g} GiB, even from the first layer "
                    "of this donor's steps")
        solve = yield from solve_chain(upto, pairs, base_state, base_spec, donor_state,
                                       donor_spec, cancel, start)
        solve = dataclasses.replace(solve, served=served or (step,),
                                    prefix_bytes=needed if start else 0)
        self._solved.setdefault(step.source, []).append(solve)
        return solve


def _deepest(step: AssemblyStep, own_pairs: dict[str, str], chains: dict[AssemblyStep, Pairs],
             base_spec: PermutationSpec) -> tuple[tuple[str, str], Pairs]:
    """(base layer, donor layer) of the deepest step in ``chains`` (step -> its chain pairs)
    whose pairs contain ``own_pairs``, and its chain pairs; the step itself when no other does."""
    def depth(other: AssemblyStep) -> tuple[int, int]:
        # a chain also takes the tensors whose every axis it pairs (up_proj and down_proj ride
        # on gate_proj's spaces): on a tie the later layer names the solve
        return len(chains[other][1]), base_spec.layer(other.base_layer).index

    best = max((other for other in chains if _contains(chains[other][0], own_pairs)),
               key=depth, default=step)
    return (best.base_layer, best.source_layer), chains[best]


def _contains(pairs: dict[str, str], part: dict[str, str]) -> bool:
    return all(pairs.get(b) == t for b, t in part.items())


def _position(spec: PermutationSpec, step: AssemblyStep) -> int:
    """Where the step's base layer stands in the model's execution order (0: the first)."""
    index = spec.layer(step.base_layer).index
    return sum(1 for lay in spec.layers if lay.index < index)


def _working_bytes(tensor_pairs: Sequence[tuple[str, str]], base_state: State,
                   donor_state: State) -> int:
    """The float32 working copies a descent over ``tensor_pairs`` makes, base and donor."""
    return 4 * sum(base_state[b].numel() + donor_state[t].numel() for b, t in tensor_pairs
                   if b in base_state and t in donor_state)


def solve_chain(upto: tuple[str, str],
                pairs: tuple[dict[str, str], list[tuple[str, str]]], base_state: State,
                base_spec: PermutationSpec, donor_state: State, donor_spec: PermutationSpec,
                cancel: CancelToken | None = None, start: int = 0
                ) -> Generator[ProgressEvent, None, ChainSolve]:
    """Solve the chain through base layer ``upto[0]`` / donor layer ``upto[1]`` from its
    ``start``-th layer (its ``chain_pairs`` given as ``pairs``)."""
    space_pairs, tensor_pairs = pairs
    layers = chain_layers(base_spec, donor_spec, *upto, start=start)
    # a Conv1D donor layer in a chain of nn.Linear base layers (or the reverse) is matched in
    # the base's orientation
    chain_state, chain_spec = _oriented_as_base(layers, donor_state, donor_spec)
    # coordinate descent has local optima: several seeded runs, the best J is kept
    result = yield from match_spaces(base_state, base_spec, chain_state, chain_spec,
                                     space_pairs, tensor_pairs, restarts=CHAIN_RESTARTS,
                                     cancel=cancel)
    return ChainSolve(space_pairs, upto[0], result, start=layers[0][0].name if start else "")


def _oriented_as_base(pairs: list[tuple[Layer, Layer]], donor_state: State,
                      donor_spec: PermutationSpec) -> tuple[State, PermutationSpec]:
    """The donor's state and spec with the weight of every chained layer whose storage
    orientation differs from its base partner's transposed (a view, no copy), so that the
    paired tensors agree axis by axis; the donor itself is untouched."""
    flips = [lt for lb, lt in pairs if lb.transposed != lt.transposed]
    if not flips:
        return donor_state, donor_spec
    state, axes = dict(donor_state), dict(donor_spec.axes)
    for lt in flips:
        state[lt.weight] = donor_state[lt.weight].transpose(0, 1)
        if lt.weight in axes:
            axes[lt.weight] = tuple(reversed(axes[lt.weight]))
    layers = [dataclasses.replace(lay, transposed=not lay.transposed) if lay in flips else lay
              for lay in donor_spec.layers]
    return state, PermutationSpec(donor_spec.spaces, axes, layers, donor_spec.unsupported,
                                  donor_spec.head_groups)

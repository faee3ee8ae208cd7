"""Which plan edits make a step's results stale (gui/run_results.signature)."""

from __future__ import annotations

from dataclasses import replace

from mal_desktop.core.merge.plan import AssemblyStep
from mal_desktop.gui.run_results import signature


def _plan() -> list[AssemblyStep]:
    return [AssemblyStep("a", "layers.0", "layers.0", 0.3),
            AssemblyStep("b", "layers.1", "layers.1", 0.5),
            AssemblyStep("a", "layers.1", "layers.1", 0.5)]


def test_a_later_chain_step_of_the_same_donor_is_part_of_a_steps_signature():
    steps = _plan()
    before = signature(steps, 0)
    # its own lambda, and the lambda or method of any later step: the results still hold
    assert signature([replace(steps[0], lam=0.9), *steps[1:]], 0) == before
    assert signature([*steps[:2], replace(steps[2], lam=1.0, method="slerp")], 0) == before
    # a later step of another donor does not touch this step's chain solve
    assert signature([steps[0], replace(steps[1], base_layer="head"), steps[2]], 0) == before
    # the same donor's later chain step extends the solve this step shares
    assert signature([*steps[:2], replace(steps[2], base_layer="head",
                                          source_layer="head")], 0) != before
    assert signature([*steps[:2], replace(steps[2], align="local")], 0) != before
    assert signature(steps[:2], 0) != before  # removed


def test_signatures_of_different_steps_do_not_collide():
    # step 0 of [s0, s1] (s1 a later chain step of its donor) is not step 1 of [s0, s1']
    s0 = AssemblyStep("a", "layers.0", "layers.0", 0.0)
    s1 = AssemblyStep("a", "layers.1", "layers.1", 0.0)
    assert signature([s0, s1], 0) != signature([s0, s1], 1)

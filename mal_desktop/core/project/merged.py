"""The merged model of a plan: which zoo models it really uses and whether it can be assembled.

One definition for the evaluation matrix's "merged (current plan)" row: its cache key hashes
every zoo file the plan names, so it is built from :func:`used_zoo`; it needs every model it
uses as a file (:func:`missing_model_files`).
"""

from __future__ import annotations

from pathlib import Path

from ..merge.plan import AssemblyPlan


def used_zoo(plan: AssemblyPlan) -> AssemblyPlan:
    """A copy of ``plan`` naming only the zoo models its steps use (data dropped).

    An unused zoo model in the plan would make opening another zoo model change the merged
    model's cache key, invalidating cached results for nothing.
    """
    used = {s.source for s in plan.steps}
    return AssemblyPlan(plan.base, {k: v for k, v in plan.zoo.items() if k in used}, None,
                        list(plan.steps), plan.base_output,
                        {k: v for k, v in plan.zoo_outputs.items() if k in used})


def missing_model_files(plan: AssemblyPlan) -> list[str]:
    """The models the merged model needs (the base and the used zoo models) that are not on
    disk (a file, or a Hugging Face model folder).

    A model only in memory is listed as "(a model only in memory)". Empty when the plan can be
    assembled from what is on disk.
    """
    plan = used_zoo(plan)
    return [p or "(a model only in memory)" for p in (plan.base, *plan.zoo.values())
            if not p or not Path(p).exists()]

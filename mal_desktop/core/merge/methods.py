"""Merge methods in a name-keyed registry with parameter schemas (the GUI builds forms from them).

A method combines one base tensor with one aligned target tensor (already in base shape) at
factor ``lam``. ``mask`` marks entries that came from a target unit; where it is False the
step's unmatched policy decides (handled by the caller, see ``assemble``), so methods only see
entries that are really paired. All methods return the base unchanged at ``lam == 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import PlanError


@dataclass(frozen=True)
class Param:
    """One parameter of a merge method: name, default, range, help text (for forms and CLI)."""

    name: str
    default: float
    minimum: float
    maximum: float
    help: str


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method: ``fn(base, target, lam, seed=..., **params) -> tensor``."""

    name: str
    fn: Callable[..., torch.Tensor]
    params: tuple[Param, ...] = field(default=())
    description: str = ""
    elementwise: bool = False  # each output entry depends on the same entries only
    title: str = ""  # how people write the name ("task arithmetic", "TIES"); "" means ``name``

    @property
    def label(self) -> str:
        """The name to show a user."""
        return self.title or self.name.replace("_", " ")


MERGE_METHODS: dict[str, MergeMethod] = {}


MethodFn = Callable[..., torch.Tensor]


def register_method(name: str, description: str, params: tuple[Param, ...] = (),
                    elementwise: bool = False, title: str = ""
                    ) -> Callable[[MethodFn], MethodFn]:
    """Decorator: register ``fn(base, target, lam, seed, **params) -> tensor`` under ``name``.

    name: the name plans store (``"method"`` of a step). description: one line for forms and
    tooltips. params: the method's extra parameters (their defaults and ranges); a step's
    ``params`` are checked against these ranges and passed to ``fn`` as keyword arguments.
    ``fn`` gets float tensors of equal shape (the target already aligned into the base's shape)
    and must return the base unchanged at ``lam == 0`` (``merge_tensor`` never calls it there).
    elementwise: each output entry depends on the same entry of base and target only (no norms,
    no ranks, no random draws over the tensor): such a method is run over large tensors in
    chunks, so its float32 temporaries stay small.
    title: the name as a user reads it in the app ("TIES"); default: ``name`` with spaces.
    Returns the decorator, which returns ``fn`` unchanged. A taken name is replaced.
    """
    def wrap(fn: MethodFn) -> MethodFn:
        MERGE_METHODS[name] = MergeMethod(name, fn, params, description, elementwise, title)
        return fn
    return wrap


def get_method(name: str) -> MergeMethod:
    """The method registered as ``name``. Raises PlanError naming the known methods."""
    if name not in MERGE_METHODS:
        raise PlanError(f"unknown merge method {name!r}; known: {', '.join(MERGE_METHODS)}")
    return MERGE_METHODS[name]


def method_values(method: str, params: dict[str, Any] | None = None) -> dict[str, float]:
    """Every parameter of ``method``: the given values checked against its schema, defaults for
    the rest.

    Raises PlanError for an unknown method, a parameter name the method does not have (a typo
    must not be silently ignored: the message lists the valid names), a value that is not a real
    number (strings and booleans included) or one outside the parameter's range.
    """
    m = get_method(method)
    given = dict(params or {})
    known = {p.name: p for p in m.params}
    unknown = sorted(set(given) - set(known))
    if unknown:
        valid = ", ".join(known) or "none"
        raise PlanError(f"merge method {method!r} has no parameter {', '.join(map(repr, unknown))}"
                        f" (valid: {valid})")
    values = {}
    for p in m.params:
        value = given.get(p.name, p.default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise PlanError(f"merge method {method!r}: {p.name} must be a number in "
                            f"[{p.minimum}, {p.maximum}], got {value!r}")
        if not (p.minimum <= value <= p.maximum):
            raise PlanError(f"merge method {method!r}: {p.name} must be in [{p.minimum}, "
                            f"{p.maximum}], got {value}")
        values[p.name] = float(value)
    return values


def merge_tensor(method: str, base: torch.Tensor, target: torch.Tensor, lam: float,
                 params: dict[str, Any] | None = None, seed: int = 0) -> torch.Tensor:
    """Merge ``target`` (aligned, base shape) into ``base`` with ``method``; base dtype kept."""
    values = method_values(method, params)
    m = get_method(method)
    if lam == 0.0:
        return base.clone()  # exact: lambda 0 returns the base bit for bit
    # at least float32 (half precision would round every step), float64 stays float64
    work = torch.promote_types(base.dtype, torch.float32)
    if not m.elementwise or base.numel() <= _CHUNK or base.dim() == 0:
        return m.fn(base.to(work), target.to(work), float(lam), seed=seed, **values).to(base.dtype)
    # A bf16 4096 x 11008 weight would need three float32 copies (540 MiB) at once; rows in
    # chunks need a few MiB, and an elementwise method gives the same bits either way.
    out = torch.empty_like(base)
    rows = max(1, _CHUNK // max(1, base[0].numel()))
    for start in range(0, base.shape[0], rows):
        part = slice(start, start + rows)
        out[part] = m.fn(base[part].to(work), target[part].to(work), float(lam), seed=seed,
                         **values).to(base.dtype)
    return out


_CHUNK = 1 << 22  # elements per chunk of an elementwise merge


@register_method("linear", "(1 - lambda) base + lambda target (MAL's merge rule)",
                 elementwise=True)
def _linear(base: torch.Tensor, target: torch.Tensor, lam: float, seed: int) -> torch.Tensor:
    return torch.lerp(base, target, lam)


@register_method("slerp", "spherical interpolation of the flattened tensors (falls back to linear "
                          "for nearly parallel tensors)", title="SLERP")
def _slerp(base: torch.Tensor, target: torch.Tensor, lam: float, seed: int) -> torch.Tensor:
    a, b = base.reshape(-1), target.reshape(-1)
    na, nb = a.norm(), b.norm()
    if na < 1e-12 or nb < 1e-12:
        return torch.lerp(base, target, lam)
    cos = torch.clamp(torch.dot(a / na, b / nb), -1.0, 1.0)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-4:  # nearly parallel: slerp degenerates to lerp
        return torch.lerp(base, target, lam)
    so = torch.sin(omega)
    out = (torch.sin((1 - lam) * omega) / so) * a + (torch.sin(lam * omega) / so) * b
    return out.reshape(base.shape)


@register_method("task_arithmetic", "base + lambda * scale * (target - base)",
                 (Param("scale", 1.0, 0.0, 4.0, "multiplier of the task vector"),),
                 elementwise=True)
def _task_arithmetic(base: torch.Tensor, target: torch.Tensor, lam: float, seed: int,
                     scale: float) -> torch.Tensor:
    return base + lam * scale * (target - base)


def _trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` fraction of entries with the largest magnitude (TIES' trim step)."""
    k = int(math.ceil(density * delta.numel()))
    if k >= delta.numel():
        return delta
    if k <= 0:
        return torch.zeros_like(delta)
    threshold = delta.abs().reshape(-1).kthvalue(delta.numel() - k + 1).values
    return torch.where(delta.abs() >= threshold, delta, torch.zeros_like(delta))


@register_method("ties", "TIES: trim the task vector to its largest entries, then add lambda of it "
                         "(sign election is trivial with one donor per step)",
                 (Param("density", 0.2, 0.0, 1.0, "fraction of task-vector entries kept"),),
                 title="TIES")
def _ties(base: torch.Tensor, target: torch.Tensor, lam: float, seed: int,
          density: float) -> torch.Tensor:
    return base + lam * _trim(target - base, density)


@register_method("dare", "DARE: drop task-vector entries at random with probability p, rescale the "
                         "rest by 1/(1-p), add lambda of it",
                 (Param("drop", 0.5, 0.0, 0.99, "probability of dropping an entry"),),
                 title="DARE")
def _dare(base: torch.Tensor, target: torch.Tensor, lam: float, seed: int,
          drop: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    keep = torch.rand(base.shape, generator=gen) >= drop
    delta = (target - base) * keep.to(base.dtype) / (1.0 - drop)
    return base + lam * delta

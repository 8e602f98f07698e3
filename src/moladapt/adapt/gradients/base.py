"""Contract shared by the gradient combiners (auxiliary-task gradient surgery).

A combiner maps the per-task gradients of the *shared* parameters,

.. math:: G = [g_1; \\dots; g_T] \\in \\mathbb{R}^{T \\times P},

where row ``target`` is the gradient of the target (primary) task :math:`g_t` and every
other row the gradient of an auxiliary task :math:`g_i`, to one update direction
:math:`d \\in \\mathbb{R}^P` (to be written into ``.grad`` and handed to the optimizer; see
:func:`moladapt.adapt.gradients.pertask.assign_direction`). Every combiner in this package
has the form

.. math:: d = \\sum_{k=1}^{T} c_k \\, \\tilde g_k, \\qquad c_t = 1,

with :math:`\\tilde g_k = g_k` (``sum``, ``gcs``, ``gns``) or the conflict-projected
gradient (``pcgrad``, ``rcgrad``); :attr:`CombineResult.coefficients` holds the
:math:`c_k`.

Combiners are function-like: the output depends only on the arguments of the call and on
the hyper-parameters given to ``__init__`` (the one exception, ``PCGrad(symmetric=True)``,
owns a seeded random generator for its projection order and says so). They never modify
``grads`` and are differentiable in ``grads`` and ``weights`` (no in-place ops on inputs),
so a bi-level outer loop may back-propagate through them.

Zero gradients are safe: every division is guarded by ``eps``; a zero row has cosine 0
with the target (it is not conflicting) and contributes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from moladapt.registry import Registry

DEFAULT_EPS = 1e-12


@dataclass(frozen=True)
class CombineResult:
    """The output of a :class:`GradientCombiner`.

    Attributes:
        direction: ``[P]`` the combined update direction :math:`d` (a descent direction
            when passed as the gradient, like a summed-loss gradient).
        coefficients: ``[T]`` the scale :math:`c_k` applied to row k (its projected form for
            ``pcgrad``/``rcgrad``); ``coefficients[target] == 1``.
        cosines: ``[T]`` :math:`\\cos(g_t, g_k)` of the *input* rows, ``cosines[target] == 1``;
            0 for a zero row (or a zero target gradient).
        conflicting: ``[T]`` bool, ``cosines < 0`` (never true for the target row).
    """

    direction: Tensor
    coefficients: Tensor
    cosines: Tensor
    conflicting: Tensor


def cosines_to_target(grads: Tensor, target: int, eps: float = DEFAULT_EPS) -> Tensor:
    """:math:`\\cos(g_t, g_k) = g_t^\\top g_k / \\max(\\|g_t\\| \\|g_k\\|, \\epsilon)`.

    Shapes: ``grads [T, P]`` → ``[T]``; entry ``target`` is exactly 1.
    """
    norms = grads.norm(dim=1)
    dots = grads @ grads[target]
    cos = dots / (norms * norms[target]).clamp_min(eps)
    is_target = torch.arange(grads.shape[0], device=grads.device) == target
    return torch.where(is_target, torch.ones_like(cos), cos)


def aux_mask(num_tasks: int, target: int, device: torch.device | None = None) -> Tensor:
    """``[T]`` bool, True for the auxiliary rows (every row but ``target``)."""
    return torch.arange(num_tasks, device=device) != target


def project_conflicting(grads: Tensor, target: int, eps: float = DEFAULT_EPS) -> Tensor:
    """Target-anchored PCGrad projection of every auxiliary row that conflicts with ``g_t``.

    .. math::
        \\tilde g_i = g_i - \\frac{\\min(0,\\, g_i^\\top g_t)}{\\max(\\|g_t\\|^2, \\epsilon)} \\, g_t

    i.e. a conflicting :math:`g_i` (:math:`g_i^\\top g_t < 0`) is replaced by its projection
    onto the normal plane of :math:`g_t` (so :math:`\\tilde g_i^\\top g_t = 0`); the other rows
    and the target row are unchanged.

    Shapes: ``grads [T, P]`` → ``[T, P]`` (a new tensor).
    """
    g_t = grads[target]
    dots = grads @ g_t
    scale = torch.clamp(dots, max=0.0) / (g_t @ g_t).clamp_min(eps)
    scale = torch.where(aux_mask(grads.shape[0], target, grads.device), scale,
                        torch.zeros_like(scale))
    return grads - scale[:, None] * g_t[None, :]


class GradientCombiner:
    """Base class: ``combiner(grads [T, P], target, weights [T] | None) -> CombineResult``.

    Args (of every subclass's ``__init__``):
        eps: guard for divisions by norms (zero gradients).

    ``weights`` (optional, ``[T]``, non-negative) are per-task weights :math:`w_k` of the
    auxiliary rows (e.g. learned by a bi-level outer loop); ``weights[target]`` is ignored
    (the target's coefficient is always 1) and ``None`` means :math:`w_k = 1`. How a combiner
    uses them is given in its docstring (a multiplicative factor on the auxiliary
    coefficient for all but ``rcgrad``, which averages it with the GNS scale).

    Subclasses implement :meth:`combine`.
    """

    name: ClassVar[str] = ""

    def __init__(self, eps: float = DEFAULT_EPS) -> None:
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = float(eps)

    def __call__(
        self, grads: Tensor, target: int = 0, weights: Tensor | None = None
    ) -> CombineResult:
        if grads.ndim != 2:
            raise ValueError(f"grads must be [T, P], got shape {tuple(grads.shape)}")
        num_tasks = grads.shape[0]
        if num_tasks < 1:
            raise ValueError("grads needs at least one row (the target task)")
        if not -num_tasks <= target < num_tasks:
            raise IndexError(f"target {target} out of range for {num_tasks} tasks")
        target = int(target) % num_tasks
        finite = torch.isfinite(grads).all(dim=1)
        if not bool(finite.all()):  # one NaN row would turn the whole direction into NaN
            rows = torch.nonzero(~finite).flatten().tolist()
            raise FloatingPointError(f"non-finite gradient in task row(s) {rows} (target row {target})")
        w = self._weights(weights, num_tasks, target, grads)
        cosines = cosines_to_target(grads, target, self.eps)
        direction, coefficients = self.combine(grads, target, w, cosines)
        conflicting = (cosines < 0) & aux_mask(num_tasks, target, grads.device)
        return CombineResult(direction, coefficients, cosines, conflicting)

    def combine(
        self, grads: Tensor, target: int, weights: Tensor, cosines: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Return ``(direction [P], coefficients [T])``.

        ``weights`` is already a ``[T]`` tensor with ``weights[target] == 1``.
        """
        raise NotImplementedError

    def _weights(self, weights: Tensor | None, num_tasks: int, target: int, grads: Tensor) -> Tensor:
        is_aux = aux_mask(num_tasks, target, grads.device)
        if weights is None:
            return torch.ones(num_tasks, dtype=grads.dtype, device=grads.device)
        weights = torch.as_tensor(weights, dtype=grads.dtype, device=grads.device)
        if weights.shape != (num_tasks,):
            raise ValueError(f"weights must have shape [{num_tasks}], got {tuple(weights.shape)}")
        aux_w = weights.detach()[is_aux]
        if not torch.isfinite(aux_w).all() or (aux_w < 0).any():
            raise ValueError("weights must be finite and non-negative")
        return torch.where(is_aux, weights, torch.ones_like(weights))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


COMBINERS: Registry[type[GradientCombiner]] = Registry("gradient combiner")


def build_combiner(name: str, **hparams: object) -> GradientCombiner:
    """``COMBINERS.get(name)(**hparams)``."""
    return COMBINERS.get(name)(**hparams)

"""Joint least-squares fit of Diracs to two-channel spherical signals (damped Gauss-Newton).

A fit holds, per signal, padded peaks: a direction and a Dirac weight in each channel. Its
normal equations are built analytically from the addition theorem, so no Jacobian is formed.
"""

import functools
import math
from typing import NamedTuple

import numpy
import torch

from geoae._segments import size_groups

from ._harmonics import _derivative_matrices, dirac_scale, spherical_harmonics

_MAX_TURN = 0.25  # radians: the largest move of a direction in one Gauss-Newton step
_DAMPING_START = 1e-3  # Levenberg-Marquardt damping, relative to the diagonal of J^T J
_DAMPING = 1e-6  # the smallest damping, also that of the final differentiable step
_CONVERGED = 1e-3  # radians: a signal whose last step moved a peak more gets up to _MORE_STEPS more
_MORE_STEPS = 8
_GROUP_COST = 4096.0  # a refinement group's fixed cost, in rows times squared width (measured on CPU)


class _Fit(NamedTuple):
    directions: torch.Tensor  # [S, K, 3]
    weights: torch.Tensor  # [S, K, 2]: Dirac weights in channels 0 and 1
    mask: torch.Tensor  # [S, K]


def _tangent_basis(directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x_axis = torch.zeros_like(directions)  # [..., 3]
    x_axis[..., 0] = 1
    y_axis = x_axis.roll(1, dims=-1)
    reference = torch.where(directions[..., :1].abs() < 0.9, x_axis, y_axis)  # [..., 3]
    first = torch.nn.functional.normalize(torch.linalg.cross(directions, reference), dim=-1)
    return first, torch.linalg.cross(directions, first)


class _Target(NamedTuple):
    coefficients: torch.Tensor  # [S, 2, M]
    products: torch.Tensor  # [S, M, 8]: the coefficients of both channels, then A[k] @ them (k = x, y, z)

    def rows(self, rows: torch.Tensor) -> "_Target":
        return _Target(self.coefficients[rows], self.products[rows])


def _target(coefficients: torch.Tensor, lmax: int) -> _Target:
    r"""The coefficients ``(S, 2, M)`` with the maps that turn harmonics into projections.

    ``Y(u) @ products`` gives, per channel, the signal's value at ``u`` and its Cartesian gradient
    (of the solid harmonics), since ``d Y / d x_k = Y @ A[k]``: one matmul per evaluation.
    """
    num, _, dim = coefficients.shape
    maps = _projection_maps(lmax, coefficients.dtype, coefficients.device)  # [4M, M]
    products = (coefficients.reshape(2 * num, dim) @ maps.T).reshape(num, 2, 4, dim)  # [S, 2, 4, M]
    return _Target(coefficients, products.permute(0, 3, 2, 1).reshape(num, dim, 8))


@functools.lru_cache(maxsize=None)
def _projection_maps(lmax: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    matrices = _derivative_matrices(lmax, torch.float64, torch.device("cpu"))  # [3, M, M]
    eye = torch.eye(matrices.shape[1], dtype=torch.float64)[None]
    return torch.cat([eye, matrices]).reshape(-1, matrices.shape[1]).to(dtype=dtype, device=device)  # [4M, M]


@functools.lru_cache(maxsize=None)
def _kernel_table(lmax: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r"""``(lmax+1, 3)``: ``c**n @ table`` gives ``g(c), g'(c), g''(c)`` for the Gram kernel
    ``g(u . v) = <s Y(u), s Y(v)> = s^2 sum_l (2l+1) / (4 pi) P_l(u . v)`` (addition theorem)."""
    coefficients = numpy.zeros(lmax + 1)
    for degree in range(lmax + 1):
        polynomial = numpy.polynomial.legendre.leg2poly(numpy.eye(lmax + 1)[degree])
        coefficients[: len(polynomial)] += (2 * degree + 1) / (4 * math.pi) * polynomial
    coefficients *= dirac_scale(lmax) ** 2
    first = numpy.polynomial.polynomial.polyder(coefficients)
    second = numpy.polynomial.polynomial.polyder(first)
    table = numpy.zeros((lmax + 1, 3))
    for column, values in enumerate((coefficients, first, second)):
        table[: len(values), column] = values
    return torch.tensor(table, dtype=dtype, device=device)


def _kernel(cosines: torch.Tensor, lmax: int) -> torch.Tensor:
    r"""``g, g', g''`` at ``cosines`` (evaluated in float64), shape ``cosines.shape + (3,)``."""
    table = _kernel_table(lmax, torch.float64, cosines.device)
    powers = cosines.double()[..., None].expand(cosines.shape + (lmax,)).cumprod(dim=-1)  # [..., L - 1]
    return (powers @ table[1:] + table[0]).to(cosines.dtype)


class _State(NamedTuple):
    projections: torch.Tensor  # [S, K, 4, 2]: per channel, <s Y(u_k), c> and its Cartesian gradient
    cost: torch.Tensor  # [S]: squared residual of the fit


def _diracs(fit: _Fit, lmax: int) -> torch.Tensor:
    r"""Coefficients ``(S, K, M)`` of the peaks' unit Diracs, zero for dead peaks."""
    return spherical_harmonics(fit.directions, lmax) * (dirac_scale(lmax) * fit.mask[..., None])


def _cost(fit: _Fit, diracs: torch.Tensor, target: _Target) -> torch.Tensor:
    return (target.coefficients - fit.weights.transpose(1, 2) @ diracs).square().sum(dim=(1, 2))  # [S]


def _projections(diracs: torch.Tensor, target: _Target) -> torch.Tensor:
    return (diracs @ target.products).reshape(diracs.shape[:2] + (4, 2))  # [S, K, 4, 2]


def _state(fit: _Fit, target: _Target, lmax: int) -> _State:
    r"""Projections of the coefficients on the peaks' Diracs and the fit's squared residual."""
    diracs = _diracs(fit, lmax)  # [S, K, M]
    return _State(_projections(diracs, target), _cost(fit, diracs, target))


def _gram(fit: _Fit, first: torch.Tensor, second: torch.Tensor, lmax: int) -> torch.Tensor:
    r"""Gram matrix ``(S, 3, K, 3, K)`` of each peak's Dirac and its derivatives along the two tangents.

    Analytic, from the addition theorem: with ``c = u_k . u_l``, ``<f0_k, f0_l> = g(c)``,
    ``<fi_k, f0_l> = g'(c) t_k . u_l``, ``<fi_k, fj_l> = g''(c) (t_k . u_l)(u_k . t'_l) + g'(c) t_k . t'_l``.
    Zero for dead peaks.
    """
    num, width, _ = fit.directions.shape
    frames = torch.stack([fit.directions, first, second], dim=1).reshape(num, 3 * width, 3)  # [S, 3K, 3]
    dots = (frames @ frames.transpose(1, 2)).reshape(num, 3, width, 3, width)  # [S, 3, K, 3, K]
    cosines = dots[:, 0, :, 0, :]  # [S, K, K]
    kernel = _kernel(cosines, lmax) * (fit.mask[:, :, None] & fit.mask[:, None, :])[..., None]
    value, slope, curvature = kernel.unbind(dim=-1)  # [S, K, K] each
    gram = slope[:, None, :, None, :] * dots  # [S, 3, K, 3, K]
    tangent_dot_u, u_dot_tangent = dots[:, 1:, :, 0, :], dots[:, 0, :, 1:, :]  # [S, 2, K, K], [S, K, 2, K]
    gram[:, 1:, :, 1:, :] += curvature[:, None, :, None, :] * tangent_dot_u[:, :, :, None, :] * u_dot_tangent[:, None]
    gram[:, 0, :, 0, :] = value
    return gram


def _solve(fit: _Fit, state: _State, lmax: int, damping: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Levenberg-Marquardt step ``(S, K, 4)`` towards the coefficients whose projections are in ``state``.

    ``damping`` ``(S,)`` is relative to the diagonal of ``J^T J``; a signal whose damped matrix
    is not numerically positive definite gets a zero step. Also returns the two tangents used.

    Per peak the parameters are two tangent moves and the Dirac weights in channels 0 and 1.
    ``J^T J`` and ``J^T r`` are assembled from the analytic Gram matrix of the Diracs and their
    derivatives and from the projections of the coefficients on them: no ``(2M, 4K)`` Jacobian.
    """
    num, width = fit.mask.shape
    first, second = _tangent_basis(fit.directions)  # [S, K, 3] each
    gram = _gram(fit, first, second, lmax)  # [S, 3, K, 3, K]
    weights = fit.weights  # [S, K, 2]
    values, gradients = state.projections[:, :, 0], state.projections[:, :, 1:]  # [S, K, 2], [S, K, 3, 2]
    tangents = torch.stack([first, second], dim=2)  # [S, K, 2, 3]
    projection = torch.cat([values[:, :, None], tangents @ gradients], dim=2)  # [S, K, 3, 2]
    residual = projection - torch.einsum("sikl,slc->skic", gram[:, :, :, 0], weights)  # [S, K, 3, 2]
    # J^T J in blocks of (move 1, move 2, weight a in channel 0, weight b in channel 1) x peaks
    moves = (weights @ weights.transpose(1, 2))[:, None, :, None] * gram[:, 1:, :, 1:]  # [S, 2, K, 2, K]
    move_weight = weights[:, None, :, :, None] * gram[:, 1:, :, None, 0]  # [S, 2, K, 2, K]: (move i, k, channel, l)
    diracs = gram[:, :1, :, :1]  # [S, 1, K, 1, K]
    zero = diracs.new_zeros(()).expand_as(diracs)
    weight_weight = torch.cat([torch.cat([diracs, zero], dim=3), torch.cat([zero, diracs], dim=3)], dim=1)
    normal = torch.cat(
        [torch.cat([moves, move_weight], dim=3), torch.cat([move_weight.permute(0, 3, 4, 1, 2), weight_weight], dim=3)],
        dim=1,
    ).reshape(num, 4 * width, 4 * width)
    right = torch.cat(
        [(residual[:, :, 1:] * weights[:, :, None]).sum(dim=3).transpose(1, 2), residual[:, :, 0].transpose(1, 2)], dim=1
    ).reshape(num, 4 * width)
    dead = (~fit.mask).repeat(1, 4).to(normal.dtype)  # [S, 4K]
    diagonal = normal.diagonal(dim1=1, dim2=2)  # [S, 4K], a view
    tiny = torch.finfo(normal.dtype).tiny ** 0.5
    diagonal.add_(damping[:, None] * diagonal + dead + tiny)
    factor, info = torch.linalg.cholesky_ex(normal)  # [S, 4K, 4K], [S]
    step = torch.cholesky_solve(right[..., None], factor).reshape(num, 4, width).transpose(1, 2)  # [S, K, 4]
    return torch.where((info == 0)[:, None, None], step, 0), first, second


def _apply(fit: _Fit, step: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> _Fit:
    move = step[..., :2]  # [S, K, 2]
    move = move * (_MAX_TURN / move.norm(dim=-1, keepdim=True).clamp(min=_MAX_TURN))
    directions = fit.directions + move[..., :1] * first + move[..., 1:] * second  # [S, K, 3]
    return _Fit(torch.nn.functional.normalize(directions, dim=-1), fit.weights + step[..., 2:], fit.mask)


def _choose(better: torch.Tensor, new, old):
    r"""Per signal (``better``: ``(S,)``), fields of ``new`` where true, of ``old`` elsewhere."""
    return type(new)(*(torch.where(better.view((-1,) + (1,) * (a.dim() - 1)), a, b) for a, b in zip(new, old)))


def _refine(fit: _Fit, target: _Target, lmax: int, steps: int, more_steps: int = 0) -> _Fit:
    r"""Least-squares weights for the current directions, then ``steps`` Levenberg-Marquardt steps,
    then up to ``more_steps`` more for the signals whose last step still moved a direction by
    more than ``_CONVERGED`` (each signal stops on its own).

    A step that does not lower the squared residual is undone and the damping raised tenfold;
    one that does lowers it tenfold.
    """
    if fit.mask.shape[1] == 0:  # no live peak in any of these signals
        return fit
    diracs = _diracs(fit, lmax)  # [S, K, M]
    projections = _projections(diracs, target)
    fit = fit._replace(weights=_linear_weights(fit, projections[:, :, 0], lmax))
    state = _State(projections, _cost(fit, diracs, target))
    damping = torch.full_like(state.cost, _DAMPING_START)  # [S]
    active, slow = None, torch.arange(len(damping), device=damping.device)  # active: [S'] rows once not all
    for step in range(steps + more_steps):
        if step >= steps:
            active = slow if active is None else active[slow]
            if len(active) == 0:
                break
        if active is None:
            part_fit, part_state, part_target, part_damping = fit, state, target, damping
        else:
            part_fit, part_state, part_target, part_damping = (_take(x, active) for x in (fit, state, target, damping))
        move, first, second = _solve(part_fit, part_state, lmax, part_damping)  # [S', K, 4]
        trial = _apply(part_fit, move, first, second)
        trial_state = _state(trial, part_target, lmax)
        better = trial_state.cost <= part_state.cost  # [S']
        part_fit, part_state = _choose(better, trial, part_fit), _choose(better, trial_state, part_state)
        part_damping = torch.where(better, part_damping / 10, part_damping * 10).clamp(_DAMPING, 1e6)
        slow = (move[..., :2].norm(dim=-1).amax(dim=1) > _CONVERGED).nonzero().squeeze(1)  # of the S' rows
        if active is None:
            fit, state, damping = part_fit, part_state, part_damping
        else:
            fit, state, damping = (_place(x, active, y) for x, y in zip((fit, state, damping), (part_fit, part_state, part_damping)))
    return fit


def _take(value, rows: torch.Tensor):
    r"""The ``rows`` of a tensor, or of each tensor of a named tuple of them."""
    if isinstance(value, torch.Tensor):
        return value[rows]
    return type(value)(*(a[rows] for a in value))


def _place(value, rows: torch.Tensor, new):
    r"""``value`` (as in :func:`_take`) with its ``rows`` replaced by ``new``."""
    if isinstance(value, torch.Tensor):
        return value.index_copy(0, rows, new)
    return type(value)(*(a.index_copy(0, rows, b) for a, b in zip(value, new)))


def _linear_weights(fit: _Fit, projections: torch.Tensor, lmax: int) -> torch.Tensor:
    r"""Least-squares Dirac weights ``(S, K, 2)`` for the fit's directions, given the projections
    ``(S, K, 2)`` of the coefficients on the Diracs."""
    cosines = fit.directions @ fit.directions.transpose(1, 2)  # [S, K, K]
    gram = _kernel(cosines, lmax)[..., 0] * (fit.mask[:, :, None] & fit.mask[:, None, :])
    gram = gram + torch.diag_embed((~fit.mask).to(gram.dtype))  # [S, K, K]
    return torch.linalg.solve(gram, projections)  # [S, K, 2]


def _compact(fit: _Fit) -> _Fit:
    r"""Move live peaks first and drop the all-dead columns."""
    order = (~fit.mask).to(torch.uint8).argsort(dim=1, stable=True)  # [S, K]
    width = int(fit.mask.sum(dim=1).max()) if fit.mask.numel() else 0
    order = order[:, :width]
    return _Fit(
        fit.directions.gather(1, order[..., None].expand(-1, -1, 3)),
        fit.weights.gather(1, order[..., None].expand(-1, -1, 2)),
        fit.mask.gather(1, order),
    )


def _rows(fit: _Fit, rows: torch.Tensor) -> _Fit:
    return _compact(_Fit(fit.directions[rows], fit.weights[rows], fit.mask[rows]))


def _put(fit: _Fit, rows: torch.Tensor, part: _Fit) -> _Fit:
    r"""``fit`` with the signals ``rows`` replaced by ``part`` (not wider than ``fit``)."""
    width = part.mask.shape[1]
    directions, weights, mask = fit.directions.clone(), fit.weights.clone(), fit.mask.clone()
    directions[rows, :width], weights[rows, :width], mask[rows] = part.directions, part.weights, False
    mask[rows, :width] = part.mask
    return _Fit(directions, weights, mask)


def _refine_rows(fit: _Fit, rows: torch.Tensor, target: _Target, lmax: int, steps: int) -> _Fit:
    r"""Refine only the signals ``rows`` of ``fit``: ``steps`` steps, then more for the slow ones.

    Signals are refined in groups of consecutive peak counts, each at the width of its
    largest (:func:`geoae._segments.size_groups`): the split minimises the summed
    ``_GROUP_COST + rows * width**2`` of the groups, a group's fixed cost (its Python and
    kernel-launch overhead) against the padding of narrow rows (the normal matrices grow as
    the cube of the padded width).
    """
    counts = fit.mask[rows].sum(dim=1)  # (R,)
    for group in size_groups(counts, lambda group_rows, width: _GROUP_COST + group_rows * max(width, 1) ** 2):
        group = rows[group]
        fit = _put(fit, group, _refine(_rows(fit, group), target.rows(group), lmax, steps, _MORE_STEPS))
    return fit

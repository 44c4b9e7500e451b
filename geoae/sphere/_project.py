"""Vectors to spherical signals, and signals evaluated at directions."""

import torch

from ._harmonics import harmonics_and_gradient, kernel, spherical_harmonics


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` when ``tensor`` holds NaN or infinite values."""
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} holds NaN or infinite values")


def project(vectors: torch.Tensor, index: torch.Tensor, num_signals: int, lmax: int) -> torch.Tensor:
    r"""Project ragged sets of vectors, one set per signal, onto two-channel spherical signals.

    Signal ``s`` is made of the vectors ``vectors[index == s]``. Channel 0 is the sum of unit
    band-limited Diracs ``kernel(v / |v|) = dirac_scale(lmax) * Y(v / |v|)`` (value 1 at an isolated vector's direction,
    whatever its length); channel 1 is the same sum weighted by the lengths ``|v|`` (value
    ``|v|`` there). Both channels have e3nn's irreps ``SphericalTensor(lmax, 1, -1)``
    (``0e+1o+2e+...``, ``"integral"`` normalization). Zero vectors are skipped.

    Args:
        vectors: ``(P, 3)``.
        index: ``(P,)`` integers in ``[0, num_signals)``.
        num_signals: number of signals ``N``.
        lmax: largest degree.

    Returns:
        ``(N, 2, (lmax+1)**2)``, differentiable with respect to ``vectors``.

    >>> signals = project(torch.tensor([[0.0, 0.0, 2.0]]), torch.tensor([0]), 2, lmax=3)
    >>> signals.shape
    torch.Size([2, 2, 16])
    >>> evaluate(signals, torch.tensor([0.0, 0.0, 1.0])).squeeze(-1).round(decimals=4)
    tensor([[1., 2.],
            [0., 0.]])
    """
    check_finite(vectors, "vectors")
    lengths = vectors.norm(dim=-1)  # [P]
    present = lengths > 0  # [P]
    safe = torch.where(present, lengths, torch.ones_like(lengths))  # [P]
    directions = vectors / safe[:, None]  # [P, 3]
    diracs = kernel(directions, lmax) * present[:, None]  # [P, M]
    per_vector = torch.stack([diracs, diracs * lengths[:, None]], dim=1)  # [P, 2, M]
    out = per_vector.new_zeros(num_signals, 2, (lmax + 1) ** 2)  # [N, 2, M]
    return out.index_add(0, index, per_vector)


def _lmax(signals: torch.Tensor) -> int:
    lmax = round(signals.shape[-1] ** 0.5) - 1
    if (lmax + 1) ** 2 != signals.shape[-1]:
        raise ValueError(f"the last dimension of a signal must be (lmax+1)**2, got {signals.shape[-1]}")
    return lmax


def evaluate(signals: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    r"""Values of signals at directions.

    Args:
        signals: ``(..., (lmax+1)**2)``.
        directions: ``(*B, 3)``, normalized here.

    Returns:
        ``(..., *B)``: ``f(x) = sum_lm c_lm Y_lm(x)``, as e3nn's ``SphericalTensor.signal_xyz``.

    >>> signals = project(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0]), 1, lmax=4)
    >>> evaluate(signals[0, 0], torch.tensor([[1.0, 0, 0], [-1.0, 0, 0]])).round(decimals=4)
    tensor([1.0000, 0.2000])
    """
    sh = spherical_harmonics(torch.nn.functional.normalize(directions, dim=-1), _lmax(signals))  # [*B, M]
    values = signals.reshape(-1, signals.shape[-1]) @ sh.reshape(-1, sh.shape[-1]).T  # [A, B]
    return values.reshape(signals.shape[:-1] + directions.shape[:-1])


def evaluate_gradient(signals: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    r"""Gradients along the sphere of signals at directions (analytic, no autograd).

    Args:
        signals: ``(..., (lmax+1)**2)``.
        directions: ``(*B, 3)``, normalized here.

    Returns:
        ``(..., *B, 3)``, tangent to the sphere at each direction.

    >>> signals = project(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([0]), 1, lmax=4)
    >>> evaluate_gradient(signals[0, 0], torch.tensor([0.0, 0.0, 1.0])).abs().max() < 1e-6
    tensor(True)
    """
    unit = torch.nn.functional.normalize(directions, dim=-1)
    _, gradient = harmonics_and_gradient(unit, _lmax(signals))  # [*B, 3, M]
    flat = gradient.reshape(-1, gradient.shape[-1])  # [B * 3, M]
    values = signals.reshape(-1, signals.shape[-1]) @ flat.T  # [A, B * 3]
    return values.reshape(signals.shape[:-1] + directions.shape[:-1] + (3,))

import torch

from geoae.sphere import project
from geoae.sphere._fit import _CONVERGED, _Fit, _refine, _target

LMAX = 4


def fit_problem(num_signals=6, seed=0):
    r"""Signals of two unit vectors each, and fits started from the true directions turned by
    0 to 0.3 rad: the first signal starts exactly at its optimum."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(num_signals, 2, 3, generator=generator, dtype=torch.float64), dim=2)
    index = torch.arange(num_signals).repeat_interleave(2)
    target = _target(project(directions.reshape(-1, 3), index, num_signals, LMAX), LMAX)
    turn = torch.linspace(0, 0.3, num_signals, dtype=torch.float64)[:, None, None]
    start = directions + turn * torch.randn(num_signals, 2, 3, generator=generator, dtype=torch.float64)
    fit = _Fit(
        torch.nn.functional.normalize(start, dim=2),
        torch.ones(num_signals, 2, 2, dtype=torch.float64),
        torch.ones(num_signals, 2, dtype=torch.bool),
    )
    return directions, fit, target


def test_slow_signals_converge_with_more_steps():
    directions, fit, target = fit_problem()
    few = _refine(fit, target, LMAX, steps=1)
    more = _refine(fit, target, LMAX, steps=1, more_steps=20)
    error = lambda f: (f.directions - directions).norm(dim=2).amax(dim=1)  # [S]
    assert error(few)[1:].min() > _CONVERGED  # one step leaves the turned fits short
    assert error(more).max() < _CONVERGED
    assert torch.allclose(more.weights, torch.ones_like(more.weights), atol=1e-4)  # unit vectors: weights 1, length 1


def test_each_signal_stops_on_its_own():
    """A signal's fit does not depend on the signals refined beside it, however many steps they need."""
    _, fit, target = fit_problem()
    together = _refine(fit, target, LMAX, steps=2, more_steps=8)
    for row in range(len(fit.mask)):
        rows = torch.tensor([row])
        alone = _refine(_Fit(*(a[rows] for a in fit)), target.rows(rows), LMAX, steps=2, more_steps=8)
        torch.testing.assert_close(alone.directions, together.directions[rows], rtol=0, atol=1e-12)
        torch.testing.assert_close(alone.weights, together.weights[rows], rtol=0, atol=1e-12)

import pytest
import torch
from e3nn.math import soft_one_hot_linspace

from geoae.nn import RadialEmbedding, polynomial_cutoff


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_matches_e3nn_inside(dtype):
    emb = RadialEmbedding(num_basis=8, r_max=2.5)
    r = torch.linspace(0.05, 2.45, 50, dtype=dtype)
    out = emb(r)
    assert out.shape == (50, 8) and out.dtype == dtype
    bessel = soft_one_hot_linspace(r, 0.0, 2.5, 8, basis="bessel", cutoff=True)
    torch.testing.assert_close(out, bessel * polynomial_cutoff(r / 2.5)[:, None])


def test_vanishes_smoothly_at_r_max():
    emb = RadialEmbedding(num_basis=8, r_max=2.5)
    r = torch.tensor([2.5 - 1e-4, 2.5, 2.5 + 1e-4, 3.0, 100.0], dtype=torch.float64, requires_grad=True)
    out = emb(r)
    (grad,) = torch.autograd.grad(out.sum(), r)
    assert out[1:].abs().max() == 0 and grad[1:].abs().max() == 0
    # envelope ~ (r_max - r)^3 and Bessel ~ (r_max - r): value ~ d^4, derivative ~ d^3
    assert out[0].abs().max() < 1e-12 and grad[0].abs().max() < 1e-8
    # the envelope: value 1 at 0, value and first two derivatives 0 at 1
    x = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    u = polynomial_cutoff(x)
    (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), x)
    assert u.tolist() == [1.0, 0.0] and du[1] == 0 and abs(float(d2u[1])) < 1e-12


def test_zero_length_is_the_finite_limit():
    emb = RadialEmbedding(num_basis=8, r_max=2.5)
    r = torch.tensor([0.0, 1e-6], dtype=torch.float64, requires_grad=True)
    out = emb(r)
    (grad,) = torch.autograd.grad(out.sum(), r)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(out[0], out[1], atol=1e-9, rtol=0)
    assert out[0].abs().min() > 0

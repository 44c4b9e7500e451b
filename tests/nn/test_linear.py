import pytest
import torch
from e3nn import o3

from geoae.nn import Linear
from tests.utils.equivariance import assert_equivariant_both_dtypes, default_dtype

CASES = [
    # a convolution's linear_out: several channels of every type into fewer
    ("48x0o+48x0e+96x1o+96x1e+96x2o+96x2e", "16x0o+80x0e+16x1o+16x1e+16x2o+16x2e"),
    ("5x0e", "4x0e+4x0o+4x1o"),  # one input entry (the embedding of species); outputs no path reaches: zero
    ("2x0e+3x1o+2x0e+1x1o", "3x0e+2x1o+1x2e"),  # repeated input types: two paths into an output
]


def make(irreps_in, irreps_out, dtype=torch.float32):
    with default_dtype(dtype):
        torch.manual_seed(0)
        return Linear(irreps_in, irreps_out).to(dtype)


@pytest.mark.parametrize("irreps_in,irreps_out", CASES)
def test_equals_e3nn(irreps_in, irreps_out):
    for dtype, tol in [(torch.float64, 1e-13), (torch.float32, 1e-5)]:
        linear = make(irreps_in, irreps_out, dtype)
        assert isinstance(linear, o3.Linear) and linear.irreps_in == o3.Irreps(irreps_in)
        x = torch.randn(3, 7, linear.irreps_in.dim, dtype=dtype, generator=torch.Generator().manual_seed(1))
        expected = o3.Linear.forward(linear, x)
        assert expected.abs().max() > 0.1  # not trivially zero
        assert linear(x).shape == expected.shape == (3, 7, linear.irreps_out.dim)
        assert (linear(x) - expected).abs().max() <= tol * expected.abs().max()


def test_gradients_equal_e3nn():
    linear = make(*CASES[2], dtype=torch.float64)
    x = torch.randn(9, linear.irreps_in.dim, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(9, linear.irreps_out.dim, dtype=torch.float64)
    ours = torch.autograd.grad((linear(x) * probe).sum(), [x, linear.weight])
    theirs = torch.autograd.grad((o3.Linear.forward(linear, x) * probe).sum(), [x, linear.weight])
    for a, b in zip(ours, theirs):
        assert b.abs().max() > 0.1 and (a - b).abs().max() < 1e-13 * b.abs().max()


def test_state_dict_is_e3nns():
    """Checkpoints of e3nn's Linear load into ours and give the same map (and the other way)."""
    theirs = o3.Linear(*CASES[2])
    ours = Linear(*CASES[2])
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, ours.irreps_in.dim)
    torch.testing.assert_close(ours(x), theirs(x))


def test_empty_batch():
    linear = make(*CASES[0])
    assert linear(torch.zeros(0, linear.irreps_in.dim)).shape == (0, linear.irreps_out.dim)


@pytest.mark.parametrize("irreps_in,irreps_out", CASES[1:])
def test_equivariance(irreps_in, irreps_out):
    x = torch.randn(6, o3.Irreps(irreps_in).dim)
    assert_equivariant_both_dtypes(lambda: Linear(irreps_in, irreps_out), [x], [irreps_in], irreps_out)


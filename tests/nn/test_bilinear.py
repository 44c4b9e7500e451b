import pytest
import torch
from e3nn import o3

from geoae.nn import BilinearForm
from tests.utils.equivariance import assert_equivariant_both_dtypes, default_dtype

CASES = [
    ("8x0e+8x0o+8x1o+8x1e+8x2e+8x2o", "8x0e+8x0o+8x1o+8x1e+8x2e+8x2o", "2x0e+2x1o+2x2e+2x3o+2x4e+1x0e+1x1o"),  # the bloom head's
    ("3x0e+2x1o", "2x1o+1x2e", "2x0e+3x1o+1x1e+2x2e+1x3o"),  # different inputs, several paths per output
    ("2x0e", "2x1o", "1x0e+1x2e"),  # no path reaches any output: zero
]


def fctp(irreps1, irreps2, irreps_out, dtype=torch.float32):
    with default_dtype(dtype):
        torch.manual_seed(0)
        return o3.FullyConnectedTensorProduct(irreps1, irreps2, irreps_out).to(dtype)


@pytest.mark.parametrize("irreps1,irreps2,irreps_out", CASES)
@pytest.mark.parametrize("chunk_size", [1, 5, 256])
def test_equals_e3nn(irreps1, irreps2, irreps_out, chunk_size):
    for dtype, tol in [(torch.float64, 1e-12), (torch.float32, 1e-5)]:
        tp = fctp(irreps1, irreps2, irreps_out, dtype)
        form = BilinearForm(tp, chunk_size=chunk_size)
        g = torch.Generator().manual_seed(1)
        x1 = torch.randn(11, tp.irreps_in1.dim, generator=g, dtype=dtype)
        x2 = torch.randn(11, tp.irreps_in2.dim, generator=g, dtype=dtype)
        expected = tp(x1, x2)
        scale = max(expected.abs().max().item(), 1.0)
        assert (form(x1, x2, tp.weight) - expected).abs().max() <= tol * scale
    if "3x0e" in irreps1:
        assert expected.abs().max() > 0.1  # a non-trivial case


def test_gradients_equal_e3nn():
    tp = fctp(*CASES[1], dtype=torch.float64)
    form = BilinearForm(tp)
    x1 = torch.randn(7, tp.irreps_in1.dim, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(7, tp.irreps_in2.dim, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(7, tp.irreps_out.dim, dtype=torch.float64)
    ours = torch.autograd.grad((form(x1, x2, tp.weight) * probe).sum(), [x1, x2, tp.weight])
    theirs = torch.autograd.grad((tp(x1, x2) * probe).sum(), [x1, x2, tp.weight])
    for a, b in zip(ours, theirs):
        assert (a - b).abs().max() < 1e-12 * b.abs().max()


def test_equivariance():
    irreps1, irreps2, irreps_out = CASES[0]

    class Square(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tp = o3.FullyConnectedTensorProduct(irreps1, irreps2, irreps_out)
            self.form = BilinearForm(self.tp)

        def forward(self, x):
            return self.form(x, x, self.tp.weight)

    x = torch.randn(6, o3.Irreps(irreps1).dim, dtype=torch.float64)
    assert_equivariant_both_dtypes(Square, [x], [irreps1], irreps_out)


def test_empty_batch():
    tp = fctp(*CASES[1])
    out = BilinearForm(tp)(torch.zeros(0, tp.irreps_in1.dim), torch.zeros(0, tp.irreps_in2.dim), tp.weight)
    assert out.shape == (0, tp.irreps_out.dim)


def test_rejects_other_tensor_products():
    with pytest.raises(ValueError, match="uvw"):
        BilinearForm(o3.TensorProduct("2x1o", "1x1o", "2x0e", [(0, 0, 0, "uvu", True)]))
    with pytest.raises(ValueError, match="shared weights"):
        BilinearForm(o3.FullyConnectedTensorProduct("2x1o", "1x1o", "2x0e", shared_weights=False))

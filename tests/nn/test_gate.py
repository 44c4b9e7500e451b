import e3nn.nn
import pytest
import torch

from geoae.nn import Gate
from tests.utils.equivariance import assert_equivariant_both_dtypes, default_dtype

SILU, TANH, SIGMOID = torch.nn.functional.silu, torch.tanh, torch.sigmoid
CASES = [
    # a GatedBlock's: even and odd scalars, one gate per gated irrep, gated irreps not in sorted order
    ("3x0e+2x0o", [SILU, TANH], "8x0e", [SIGMOID], "2x1o+2x1e+1x2e+3x2o"),
    ("2x0e", [SILU], "", [], ""),  # scalars only
    ("", [], "2x0e", [SIGMOID], "1x1o+1x3o"),  # gated only
]


def make_gate(case, dtype=torch.float64):
    with default_dtype(dtype):
        return Gate(*case)


@pytest.mark.parametrize("case", CASES)
def test_equals_e3nn(case):
    for dtype, tol in [(torch.float64, 1e-14), (torch.float32, 1e-6)]:
        gate = make_gate(case, dtype)
        x = torch.randn(7, 3, gate.irreps_in.dim, dtype=dtype, generator=torch.Generator().manual_seed(0))
        expected = e3nn.nn.Gate.forward(gate, x)
        assert gate(x).shape == expected.shape == (7, 3, gate.irreps_out.dim)
        assert (gate(x) - expected).abs().max() <= tol
        assert expected.abs().max() > 0.1  # not trivially zero


def test_gradients_equal_e3nn():
    gate = make_gate(CASES[0])
    x = torch.randn(9, gate.irreps_in.dim, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(9, gate.irreps_out.dim, dtype=torch.float64)
    ours = torch.autograd.grad((gate(x) * probe).sum(), x)[0]
    theirs = torch.autograd.grad((e3nn.nn.Gate.forward(gate, x) * probe).sum(), x)[0]
    assert (ours - theirs).abs().max() < 1e-14


def test_equivariance():
    gate = make_gate(CASES[0])
    x = torch.randn(6, gate.irreps_in.dim)
    assert_equivariant_both_dtypes(lambda: Gate(*CASES[0]), [x], [gate.irreps_in], gate.irreps_out)

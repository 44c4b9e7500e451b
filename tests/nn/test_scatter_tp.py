import pytest
import torch
from e3nn import o3

from geoae.nn import NequIPConvolution, ScatterTensorProduct
from tests.utils.equivariance import assert_equivariant_both_dtypes, default_dtype

IRREPS = "4x0e+4x0o+3x1o+3x1e+2x2e+2x2o"


def nequip_tp(irreps_in=IRREPS, irreps_out=IRREPS, lmax=2) -> o3.TensorProduct:
    """The tensor product of a NequIP convolution (uvu paths, per-edge weights)."""
    return NequIPConvolution(irreps_in, irreps_out, lmax=lmax).tp


def inputs(tp, num_src, num_edges, num_out, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_src, tp.irreps_in1.dim, generator=g, dtype=dtype)
    y = o3.spherical_harmonics(tp.irreps_in2, torch.randn(num_edges, 3, generator=g, dtype=dtype), True, normalization="component")
    weight = torch.randn(num_edges, tp.weight_numel, generator=g, dtype=dtype)
    edge_index = torch.stack([torch.randint(0, max(num_src, 1), (num_edges,), generator=g), torch.randint(0, max(num_out, 1), (num_edges,), generator=g)])
    return x, y, weight, edge_index


def reference(tp, x, y, weight, edge_index, num_out):
    """e3nn's tensor product on every edge, summed over each target's edges."""
    messages = tp(x[edge_index[0]], y, weight)  # (E, irreps_out.dim)
    return messages.new_zeros(num_out, messages.shape[1]).index_add_(0, edge_index[1], messages)


@pytest.mark.parametrize(
    "irreps_in,irreps_out,lmax",
    [
        (IRREPS, IRREPS, 2),
        ("4x0e+2x1o", "3x0e+2x1e+2x2o", 2),  # bipartite-style sizes, some outputs unreachable
        ("3x0e+2x1o+2x2e+1x3o", "3x0e+2x1o+2x2e+1x3o", 3),
        ("5x0e", "5x0e+5x1o", 1),
    ],
)
@pytest.mark.parametrize("chunk_size", [1, 7, 512])
def test_equals_e3nn_tensor_product_summed(irreps_in, irreps_out, lmax, chunk_size):
    for dtype, tol in [(torch.float64, 1e-12), (torch.float32, 1e-5)]:
        with default_dtype(dtype):
            tp = nequip_tp(irreps_in, irreps_out, lmax).to(dtype)
        stp = ScatterTensorProduct(tp, chunk_size=chunk_size)
        assert stp.irreps_out == tp.irreps_out and stp.weight_numel == tp.weight_numel
        args = inputs(tp, num_src=9, num_edges=40, num_out=6, dtype=dtype)
        expected = reference(tp, *args, num_out=6)
        assert expected.abs().max() > 0.1  # a non-trivial sum
        assert (stp(*args, num_out=6) - expected).abs().max() < tol * expected.abs().max()


def test_scale():
    with default_dtype(torch.float64):
        tp = nequip_tp()
    args = inputs(tp, num_src=9, num_edges=40, num_out=6, dtype=torch.float64)
    expected = 0.375 * reference(tp, *args, num_out=6)
    assert (ScatterTensorProduct(tp, scale=0.375)(*args, num_out=6) - expected).abs().max() < 1e-12 * expected.abs().max()


def test_shared_kernels_form_groups():
    stp = ScatterTensorProduct(nequip_tp())
    # the two parities of each l share a kernel: three groups of two input irreps
    assert [(members, dim) for members, dim, _ in stp.groups] == [([0, 1], 1), ([2, 3], 3), ([4, 5], 5)]


def test_no_edges_and_bipartite_targets():
    tp = nequip_tp()
    stp = ScatterTensorProduct(tp)
    x, y, weight, edge_index = inputs(tp, num_src=5, num_edges=0, num_out=3, dtype=torch.float32)
    assert torch.equal(stp(x, y, weight, edge_index, num_out=3), torch.zeros(3, tp.irreps_out.dim))
    x, y, weight, edge_index = inputs(tp, num_src=5, num_edges=20, num_out=11, dtype=torch.float32)
    out = stp(x, y, weight, edge_index, num_out=11)
    assert out.shape == (11, tp.irreps_out.dim)
    silent = torch.ones(11, dtype=torch.bool)
    silent[edge_index[1]] = False
    assert out[silent].abs().max() == 0  # targets without edges get nothing


def test_gradients_equal_e3nn():
    with default_dtype(torch.float64):
        tp = nequip_tp()
    stp = ScatterTensorProduct(tp, chunk_size=8)
    args = [a.requires_grad_() if a.is_floating_point() else a for a in inputs(tp, 6, 30, 4, torch.float64)]
    probe = torch.randn(4, tp.irreps_out.dim, dtype=torch.float64)
    ours = torch.autograd.grad((stp(*args, num_out=4) * probe).sum(), args[:3])
    theirs = torch.autograd.grad((reference(tp, *args, num_out=4) * probe).sum(), args[:3])
    for a, b in zip(ours, theirs):
        assert (a - b).abs().max() < 1e-12 * b.abs().max()


def test_weights_as_a_product_of_coefficients_and_basis():
    """Weights given as ``coefficients @ basis`` (a radial MLP's last, linear layer) give the
    sums and the gradients (on the features, the harmonics, the coefficients and the basis)
    of the weights computed first, for any chunking."""
    with default_dtype(torch.float64):
        tp = nequip_tp()
    x, y, _, edge_index = inputs(tp, 6, 30, 4, torch.float64)
    g = torch.Generator().manual_seed(1)
    coefficients = torch.randn(30, 7, generator=g, dtype=torch.float64)
    basis = torch.randn(7, tp.weight_numel, generator=g, dtype=torch.float64)
    leaves = [t.requires_grad_() for t in (x, y, coefficients, basis)]
    probe = torch.randn(4, tp.irreps_out.dim, generator=g, dtype=torch.float64)
    for chunk_size in (1, 8, 512):
        stp = ScatterTensorProduct(tp, chunk_size=chunk_size)
        factored = stp(x, y, coefficients, edge_index, 4, basis)
        expected = stp(x, y, coefficients @ basis, edge_index, 4)
        assert expected.abs().max() > 0.1
        torch.testing.assert_close(factored, expected, rtol=0, atol=1e-12 * expected.abs().max().item())
        ours = torch.autograd.grad((factored * probe).sum(), leaves)
        theirs = torch.autograd.grad((expected * probe).sum(), leaves)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12 * b.abs().max().item())


def test_equivariance():
    num_edges = 24
    edge_index = torch.stack([torch.arange(num_edges) % 7, torch.arange(num_edges) % 5])

    class Summed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tp = ScatterTensorProduct(nequip_tp())

        def forward(self, x, y, weight):
            return self.tp(x, y, weight, edge_index, num_out=5)

    tp = nequip_tp()
    x, y, weight, _ = inputs(tp, 7, num_edges, 5, torch.float64)
    assert_equivariant_both_dtypes(
        Summed, [x, y, weight], [tp.irreps_in1, tp.irreps_in2, o3.Irreps(f"{tp.weight_numel}x0e")], tp.irreps_out
    )


def test_rejects_unsupported_tensor_products():
    with pytest.raises(ValueError, match="uvu"):
        ScatterTensorProduct(o3.FullyConnectedTensorProduct("2x1o", "1x1o", "2x0e"))
    shared = o3.TensorProduct("2x1o", "1x1o", "2x0e", [(0, 0, 0, "uvu", True)], shared_weights=True)
    with pytest.raises(ValueError, match="per-edge"):
        ScatterTensorProduct(shared)
    with pytest.raises(ValueError, match="multiplicity 1"):
        ScatterTensorProduct(o3.TensorProduct("2x1o", "2x1o", "2x0e", [(0, 0, 0, "uvu", True)], shared_weights=False, internal_weights=False))


def test_no_nodes():
    tp = nequip_tp()
    x, y, weight, edge_index = inputs(tp, num_src=0, num_edges=0, num_out=0, dtype=torch.float32)
    assert ScatterTensorProduct(tp)(x, y, weight, edge_index, num_out=0).shape == (0, tp.irreps_out.dim)


def test_groups_of_zero_features_are_skipped_exactly():
    """Scalar-only features (the l > 0 irreps exactly zero, as after an embedding of the
    species): without gradients the zero groups are skipped, and the sum still equals e3nn's;
    with gradients every group runs, so the gradient on the zero features is right too."""
    with default_dtype(torch.float64):
        tp = nequip_tp()
    stp = ScatterTensorProduct(tp, chunk_size=8)
    x, y, weight, edge_index = inputs(tp, 6, 30, 4, torch.float64)
    x[:, tp.irreps_in1[:2].dim :] = 0  # only 4x0e + 4x0o left
    expected = reference(tp, x, y, weight, edge_index, num_out=4)
    calls = []
    bmm = torch.bmm
    try:
        torch.bmm = lambda *a, **k: calls.append(1) or bmm(*a, **k)
        with torch.no_grad():
            out = stp(x, y, weight, edge_index, num_out=4)
        assert calls == []  # the l = 1 and l = 2 groups (the only ones with several components) were skipped
        x[0, -1] = 1.0  # one non-zero l = 2 feature: its group runs
        stp(x, y, weight, edge_index, num_out=4)
        assert calls
    finally:
        torch.bmm = bmm
    assert (out - expected).abs().max() < 1e-12 * expected.abs().max()
    x.requires_grad_()
    probe = torch.randn(4, tp.irreps_out.dim, dtype=torch.float64)
    ours = torch.autograd.grad((stp(x, y, weight, edge_index, num_out=4) * probe).sum(), x)[0]
    theirs = torch.autograd.grad((reference(tp, x, y, weight, edge_index, num_out=4) * probe).sum(), x)[0]
    assert ours[:, tp.irreps_in1[:2].dim :].abs().max() > 0.1  # the zero features get a gradient
    assert (ours - theirs).abs().max() < 1e-12 * theirs.abs().max()

import pytest
import torch
from e3nn import o3

from geoae.nn import CONVOLUTIONS, NequIPConvolution, build_convolution, radius_graph
from tests.utils.equivariance import assert_equivariant_both_dtypes, assert_permutation_equivariant

IRREPS = "4x0e+4x0o+3x1o+3x1e+2x2e+2x2o"


class GraphConv(torch.nn.Module):
    """(x, pos) -> conv over the radius graph of pos: checks the graph + conv together, translations included."""

    def __init__(self, conv, r_max):
        super().__init__()
        self.conv, self.r_max = conv, r_max

    def forward(self, x, pos):
        edge_index = radius_graph(pos, self.r_max)
        edge_vec = pos[edge_index[0]] - pos[edge_index[1]]
        return self.conv(x, edge_index, edge_vec)


class BipartiteConv(torch.nn.Module):
    """(x_src, pos_src, pos_dst) -> conv from every source to every target."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x, pos_src, pos_dst):
        src, dst = torch.meshgrid(torch.arange(len(pos_src)), torch.arange(len(pos_dst)), indexing="ij")
        edge_vec = pos_src[src.flatten()] - pos_dst[dst.flatten()]
        return self.conv(x, torch.stack([src.flatten(), dst.flatten()]), edge_vec, num_nodes_out=len(pos_dst))


def make_conv(irreps_in=IRREPS, irreps_out=IRREPS, **kwargs):
    torch.manual_seed(0)
    return NequIPConvolution(irreps_in, irreps_out, lmax=2, num_basis=6, r_max=2.5, radial_hidden=16, **kwargs)


def test_attributes_and_shapes():
    conv = make_conv(irreps_out="5x0e+2x1o")
    assert conv.irreps_in == o3.Irreps(IRREPS)
    assert conv.irreps_out == o3.Irreps("5x0e+2x1o")
    assert conv.irreps_sh == o3.Irreps("0e+1o+2e")
    x = torch.randn(4, conv.irreps_in.dim)
    out = conv(x, torch.tensor([[0, 1], [2, 3]]), torch.randn(2, 3))
    assert out.shape == (4, conv.irreps_out.dim)
    assert out[:2].abs().max() == 0  # nodes that receive nothing


@pytest.mark.parametrize("irreps_in,irreps_out", [(IRREPS, IRREPS), ("4x0e+2x1o", "3x0e+2x1e+2x2o")])
def test_equivariance_on_radius_graph(irreps_in, irreps_out):
    conv = make_conv(irreps_in, irreps_out)
    g = torch.Generator().manual_seed(1)
    pos = 1.2 * torch.randn(10, 3, generator=g, dtype=torch.float64)
    x = torch.randn(10, conv.irreps_in.dim, generator=g, dtype=torch.float64)
    assert radius_graph(pos, 2.5).shape[1] > 20  # a real graph, not an empty one
    worst = assert_equivariant_both_dtypes(
        lambda: GraphConv(make_conv(irreps_in, irreps_out), r_max=2.5),
        [x, pos],
        [conv.irreps_in, "cartesian_points"],
        conv.irreps_out,
    )
    print(f"NequIPConvolution {irreps_in} -> {irreps_out}: max error {worst}")


def test_equivariance_bipartite_with_coincident_points():
    conv = make_conv()
    g = torch.Generator().manual_seed(2)
    pos_src = torch.randn(6, 3, generator=g, dtype=torch.float64)
    pos_dst = torch.randn(3, 3, generator=g, dtype=torch.float64)
    pos_dst[0] = pos_src[2]  # a centre on top of a member: zero-length edge
    x = torch.randn(6, conv.irreps_in.dim, generator=g, dtype=torch.float64)
    assert BipartiteConv(conv)(x.float(), pos_src.float(), pos_dst.float()).shape == (3, conv.irreps_out.dim)
    worst = assert_equivariant_both_dtypes(
        lambda: BipartiteConv(make_conv()), [x, pos_src, pos_dst], [conv.irreps_in, "cartesian_points", "cartesian_points"], conv.irreps_out
    )
    print(f"NequIPConvolution bipartite: max error {worst}")


def test_permutation():
    conv = make_conv().to(torch.float64)
    g = torch.Generator().manual_seed(3)
    pos = 1.2 * torch.randn(12, 3, generator=g, dtype=torch.float64)
    x = torch.randn(12, conv.irreps_in.dim, generator=g, dtype=torch.float64)
    edge_index = radius_graph(pos, 2.5)
    edge_vec = pos[edge_index[0]] - pos[edge_index[1]]
    assert_permutation_equivariant(conv, x, edge_index, edge_vec)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_length_edge_is_finite(dtype):
    conv = make_conv().to(dtype)
    x = torch.randn(2, conv.irreps_in.dim, dtype=dtype)
    edge_vec = torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.2, 0.1]], dtype=dtype, requires_grad=True)
    edge_index = torch.tensor([[0, 1], [0, 0]])
    out = conv(x, edge_index, edge_vec)
    assert torch.isfinite(out).all()
    (grad,) = torch.autograd.grad(out.pow(2).sum(), edge_vec)
    assert torch.isfinite(grad).all()
    # a zero-length edge alone still carries a message (its radial features are not zero)
    only_zero = conv(x, edge_index[:, :1], edge_vec[:1].detach())
    assert only_zero[0].abs().max() > 0
    # for 0e inputs, 0e outputs only see the l = 0 harmonic: the zero edge is the limit of short edges
    x0 = x.clone()
    x0[:, 4:] = 0  # keep only the leading 4x0e block of IRREPS
    tiny = torch.tensor([[1e-7, 0.0, 0.0]], dtype=torch.float64).to(dtype)
    near = conv(x0, edge_index[:, :1], tiny)
    at = conv(x0, edge_index[:, :1], torch.zeros_like(tiny))
    torch.testing.assert_close(near[:, :4], at[:, :4], atol=1e-5, rtol=1e-4)


def test_registry():
    assert CONVOLUTIONS["nequip"] is NequIPConvolution
    conv = build_convolution("nequip", irreps_in="2x0e", irreps_out="2x0e+1x1o", lmax=1)
    assert isinstance(conv, NequIPConvolution)
    with pytest.raises(ValueError, match=r"unknown convolution 'tfn'; valid names: \['nequip'\]"):
        build_convolution("tfn", irreps_in="2x0e", irreps_out="2x0e")


def test_unreachable_output_raises():
    with pytest.raises(ValueError, match="no tensor-product path"):
        NequIPConvolution("2x0e", "2x3o", lmax=2)


def test_no_edges():
    conv = make_conv()
    out = conv(torch.randn(3, conv.irreps_in.dim), torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 3))
    assert out.shape == (3, conv.irreps_out.dim) and out.abs().max() == 0


def test_chunks_change_only_the_order_of_additions():
    """Edges in any order, taken a few at a time with all the edges of their targets (targets
    without edges among them), give the sums of all edges at once, and the same gradients."""
    conv = make_conv(chunk_size=3).to(torch.float64)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(9, conv.irreps_in.dim, generator=g, dtype=torch.float64, requires_grad=True)
    edge_index = torch.stack([torch.randint(0, 9, (40,), generator=g), torch.randint(0, 6, (40,), generator=g) * 2])  # odd targets get nothing
    edge_vec = torch.randn(40, 3, generator=g, dtype=torch.float64)
    chunked = conv(x, edge_index, edge_vec, num_nodes_out=13)
    conv.chunk_size = 10**6
    whole = conv(x, edge_index, edge_vec, num_nodes_out=13)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-12)
    assert whole[1::2].abs().max() == 0 and whole[::2].abs().max() > 0
    (grad_chunked,) = torch.autograd.grad(chunked.pow(2).sum(), x)
    (grad_whole,) = torch.autograd.grad(whole.pow(2).sum(), x)
    torch.testing.assert_close(grad_chunked, grad_whole, rtol=0, atol=1e-11)

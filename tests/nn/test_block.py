import pytest
import torch
from e3nn import o3

from geoae.nn import GatedBlock, irreps_from_lmax, radius_graph
from tests.utils.equivariance import assert_equivariant_both_dtypes, assert_permutation_equivariant

HIDDEN = "4x0e+4x0o+2x1o+2x1e+2x2e+2x2o"
CONV_KWARGS = dict(lmax=2, num_basis=6, r_max=2.5, radial_hidden=16)


class GraphBlock(torch.nn.Module):
    """(x, pos) -> block over the radius graph of pos."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x, pos):
        edge_index = radius_graph(pos, 2.5)
        return self.block(x, edge_index, pos[edge_index[0]] - pos[edge_index[1]])


class BipartiteBlock(torch.nn.Module):
    """(x_src, x_dst, pos_src, pos_dst) -> block from every source to every target, x_dst as x_out."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x, x_dst, pos_src, pos_dst):
        src, dst = torch.meshgrid(torch.arange(len(pos_src)), torch.arange(len(pos_dst)), indexing="ij")
        src, dst = src.flatten(), dst.flatten()
        return self.block(x, torch.stack([src, dst]), pos_src[src] - pos_dst[dst], x_out=x_dst)


def make_block(irreps_in=HIDDEN, irreps_out=HIDDEN, **kwargs):
    torch.manual_seed(0)
    return GatedBlock(irreps_in, irreps_out, **CONV_KWARGS, **kwargs)


def graph_inputs(irreps_in, n=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    pos = 1.2 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    x = torch.randn(n, o3.Irreps(irreps_in).dim, generator=g, dtype=torch.float64)
    return x, pos


def test_irreps_and_residual_flag():
    block = make_block()
    assert block.irreps_in == o3.Irreps(HIDDEN)
    assert block.irreps_out == o3.Irreps(HIDDEN)
    assert block.resnet
    assert block.conv.irreps_out == block.gate.irreps_in
    assert not make_block(irreps_out="4x0e+2x1o").resnet
    assert not make_block(resnet=False).resnet
    # scalars are listed first in irreps_out, then the gated irreps in the given order
    assert make_block(irreps_out="2x1o+3x0e").irreps_out == o3.Irreps("3x0e+2x1o")
    # only scalars: no gates
    assert make_block(irreps_out="3x0e+2x0o").irreps_out == o3.Irreps("3x0e+2x0o")


@pytest.mark.parametrize(
    "irreps_in,irreps_out",
    [(HIDDEN, HIDDEN), ("3x0e+2x1o", HIDDEN), (HIDDEN, "3x0e+2x0o")],
    ids=["residual", "sh-in", "scalars-out"],
)
def test_equivariance_on_radius_graph(irreps_in, irreps_out):
    x, pos = graph_inputs(irreps_in)
    out_irreps = make_block(irreps_in, irreps_out).irreps_out
    worst = assert_equivariant_both_dtypes(
        lambda: GraphBlock(make_block(irreps_in, irreps_out)), [x, pos], [o3.Irreps(irreps_in), "cartesian_points"], out_irreps
    )
    print(f"GatedBlock {irreps_in} -> {irreps_out}: max error {worst}")


def test_equivariance_bipartite():
    g = torch.Generator().manual_seed(2)
    pos_src = torch.randn(6, 3, generator=g, dtype=torch.float64)
    pos_dst = torch.randn(3, 3, generator=g, dtype=torch.float64)
    pos_dst[1] = pos_src[4]  # zero-length edge
    irreps = o3.Irreps(HIDDEN)
    x = torch.randn(6, irreps.dim, generator=g, dtype=torch.float64)
    x_dst = torch.randn(3, irreps.dim, generator=g, dtype=torch.float64)
    worst = assert_equivariant_both_dtypes(
        lambda: BipartiteBlock(make_block()),
        [x, x_dst, pos_src, pos_dst],
        [irreps, irreps, "cartesian_points", "cartesian_points"],
        irreps,
    )
    print(f"GatedBlock bipartite: max error {worst}")


def test_bipartite_self_connection_rules():
    block = make_block().to(torch.float64)
    x, pos = graph_inputs(HIDDEN, n=5)
    edge_index = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 1, 1, 1]])
    edge_vec = pos[edge_index[0]] - pos[edge_index[1]]
    conv_only = block.gate(block.conv(x, edge_index, edge_vec, 2))
    # bipartite without x_out: only the gated convolution
    torch.testing.assert_close(block(x, edge_index, edge_vec, num_nodes_out=2), conv_only)
    # with x_out: self-connection and residual from the targets' features
    x_dst = torch.randn(2, x.shape[1], dtype=torch.float64)
    expected = (conv_only + block.self_connection(x_dst) + x_dst) / 2**0.5  # normalised residual sum
    torch.testing.assert_close(block(x, edge_index, edge_vec, x_out=x_dst), expected)
    # same point set: from x itself
    out = block(x, edge_index, edge_vec)
    torch.testing.assert_close(out, (block.gate(block.conv(x, edge_index, edge_vec)) + block.self_connection(x) + x) / 2**0.5)


def test_permutation():
    block = make_block().to(torch.float64)
    x, pos = graph_inputs(HIDDEN, n=12, seed=3)
    edge_index = radius_graph(pos, 2.5)
    assert_permutation_equivariant(block, x, edge_index, pos[edge_index[0]] - pos[edge_index[1]])


def test_zero_length_edge_is_finite():
    block = make_block()
    x = torch.randn(2, block.irreps_in.dim)
    edge_vec = torch.zeros(2, 3, requires_grad=True)
    out = block(x, torch.tensor([[0, 1], [0, 1]]), edge_vec)
    (grad,) = torch.autograd.grad(out.sum(), edge_vec)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()


def test_unknown_conv():
    with pytest.raises(ValueError, match="valid names"):
        make_block(conv="attention")


def test_irreps_from_lmax():
    assert irreps_from_lmax(16, 2) == o3.Irreps("16x0e+16x0o+16x1o+16x1e+16x2e+16x2o")
    assert irreps_from_lmax(4, 3, parity="sh") == o3.Irreps("4x0e+4x1o+4x2e+4x3o")
    assert irreps_from_lmax(2, 0) == o3.Irreps("2x0e+2x0o")
    with pytest.raises(ValueError):
        irreps_from_lmax(4, 2, parity="odd")
    with pytest.raises(ValueError):
        irreps_from_lmax(0, 2)
    # usable directly as hidden irreps of a block
    assert make_block(irreps_from_lmax(2, 1), irreps_from_lmax(2, 1)).resnet

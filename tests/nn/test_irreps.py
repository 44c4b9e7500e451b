import torch
from e3nn import o3

from geoae.nn import irreps_blocks


def test_irreps_blocks_are_the_entries():
    irreps = o3.Irreps("2x0e+3x1o+2x0e")
    x = torch.arange(2 * irreps.dim, dtype=torch.float32).reshape(2, irreps.dim)
    blocks = irreps_blocks(x, irreps)
    assert len(blocks) == len(irreps)
    for block, part in zip(blocks, irreps.slices()):
        assert torch.equal(block, x[:, part])

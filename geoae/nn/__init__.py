"""Equivariant neural-network building blocks: radius graph, radial basis, convolutions, blocks,
and faster evaluations of two kinds of e3nn tensor product (:class:`ScatterTensorProduct`,
:class:`BilinearForm`), of e3nn's gate (:class:`Gate`) and of its linear map (:class:`Linear`).

Convolutions share one interface (:class:`Convolution`) and are built by name from
:data:`CONVOLUTIONS` with :func:`build_convolution`; new families register with
:func:`register_convolution`.
"""

from ._bilinear import BilinearForm
from ._block import GatedBlock
from ._convolution import (
    CONVOLUTIONS,
    Convolution,
    NequIPConvolution,
    build_convolution,
    register_convolution,
)
from ._gate import Gate
from ._irreps import irreps_blocks, irreps_from_lmax
from ._linear import Linear
from ._radial import RadialEmbedding, polynomial_cutoff
from ._radius_graph import radius_graph
from ._scatter_tp import ScatterTensorProduct

__all__ = [
    "radius_graph",
    "RadialEmbedding",
    "polynomial_cutoff",
    "Convolution",
    "NequIPConvolution",
    "ScatterTensorProduct",
    "CONVOLUTIONS",
    "register_convolution",
    "build_convolution",
    "GatedBlock",
    "Gate",
    "BilinearForm",
    "irreps_from_lmax",
    "irreps_blocks",
    "Linear",
]

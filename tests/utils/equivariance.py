"""Reusable equivariance checks for tests: O(3) (+ translations) in float64 and float32, permutations.

Import as ``from tests.utils.equivariance import assert_equivariant_both_dtypes``.
"""

import contextlib
from typing import Callable, Dict, Iterator, Sequence

import torch
from e3nn.util.test import assert_equivariant

__all__ = ["TOLERANCES", "default_dtype", "assert_equivariant_both_dtypes", "assert_permutation_equivariant"]

# largest componentwise error allowed, per dtype
TOLERANCES = {torch.float64: 1e-9, torch.float32: 1e-4}


def _to(arg, dtype):
    if isinstance(arg, torch.Tensor) and arg.is_floating_point():
        return arg.to(dtype)
    return arg


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Temporarily set torch's default dtype (restored on exit, also on errors)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def assert_equivariant_both_dtypes(
    make_module: Callable[[], torch.nn.Module],
    args_in: Sequence,
    irreps_in: Sequence,
    irreps_out,
    tolerances: Dict[torch.dtype, float] = TOLERANCES,
    ntrials: int = 2,
) -> Dict[torch.dtype, float]:
    """Check ``module(*args_in)`` for rotations, inversion and (for ``"cartesian_points"``) translations.

    For each dtype of ``tolerances``, ``make_module()`` builds the module (seeded with 0) while
    that dtype is torch's default, and it is converted with ``.to(dtype)``; floating inputs are
    converted likewise. Building in the dtype matters: e3nn stores Wigner 3j constants as
    buffers in the default dtype, and a float32-built tensor product moved to float64 keeps
    float32-rounded constants (equivariance errors ~1e-6 instead of ~1e-15). The check itself
    runs under that default dtype too: e3nn's ``Irreps.D_from_matrix`` of a float64 matrix is
    only float32-accurate (~1e-6) while the default dtype is float32.
     ``irreps_in`` / ``irreps_out`` are as in
    `e3nn.util.test.assert_equivariant` (irreps, ``"cartesian_points"`` or ``None`` for an
    argument left alone, e.g. an ``edge_index``). Returns the largest error per dtype, and
    asserts each is below its tolerance.
    """
    worst = {}
    for dtype, tol in tolerances.items():
        torch.manual_seed(0)
        with default_dtype(dtype):
            mod = make_module().to(dtype)
            args = [_to(a, dtype) for a in args_in]
            errors = assert_equivariant(
                mod, args_in=args, irreps_in=list(irreps_in), irreps_out=irreps_out, tolerance=tol, ntrials=ntrials
            )
        assert len(errors) == (4 if "cartesian_points" in list(irreps_in) else 2), errors.keys()
        worst[dtype] = max(float(e.max()) for e in errors.values())
        assert worst[dtype] < tol, (dtype, worst[dtype], errors)
    return worst


def assert_permutation_equivariant(
    func: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    edge_index: torch.Tensor,
    edge_vec: torch.Tensor,
    atol: float = 1e-10,
    seed: int = 0,
) -> None:
    """``func(x, edge_index, edge_vec)`` on one point set: relabel the nodes and shuffle the edges.

    Node ``i`` becomes ``perm_inv[i]``; the output must be the permuted output.
    """
    g = torch.Generator().manual_seed(seed)
    n, e = x.shape[0], edge_index.shape[1]
    perm = torch.randperm(n, generator=g)  # new node k is old node perm[k]
    perm_inv = torch.empty_like(perm)
    perm_inv[perm] = torch.arange(n)
    edge_perm = torch.randperm(e, generator=g)
    out = func(x, edge_index, edge_vec)
    out_p = func(x[perm], perm_inv[edge_index][:, edge_perm], edge_vec[edge_perm])
    torch.testing.assert_close(out_p, out[perm], atol=atol, rtol=0)

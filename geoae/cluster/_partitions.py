"""Enumeration of the set partitions of ``n`` points into exactly ``k`` blocks."""

import functools
from typing import Optional, Union

import torch

__all__ = ["set_partitions"]


def set_partitions(
    n: int, k: int, device: Optional[Union[str, torch.device]] = None
) -> torch.Tensor:
    r"""All partitions of ``n`` labelled points into exactly ``k`` non-empty blocks.

    Each partition is written as its restricted growth string: the block of each point, with
    blocks numbered in the order of their lowest point (point 0 is in block 0, and a point is
    at most in block ``1 +`` the largest block before it), so every partition appears exactly
    once. Rows are in lexicographic order. There are :math:`S(n, k)` rows (Stirling number of
    the second kind), e.g. :math:`S(10, 5) = 42525`. The table is computed once per
    ``(n, k)`` and cached; the returned tensor is a fresh copy.

    Parameters
    ----------
    n : int
        number of points, ``n >= 1``.
    k : int
        number of blocks, ``1 <= k <= n``.
    device : `torch.device`, optional
        device of the result (default CPU).

    Returns
    -------
    `torch.Tensor`
        block labels, shape ``(S(n, k), n)``, dtype long, values in ``[0, k)``.

    Examples
    --------
    >>> set_partitions(4, 2)
    tensor([[0, 0, 0, 1],
            [0, 0, 1, 0],
            [0, 0, 1, 1],
            [0, 1, 0, 0],
            [0, 1, 0, 1],
            [0, 1, 1, 0],
            [0, 1, 1, 1]])
    """
    return cached_set_partitions(n, k).to(device, copy=True)


@functools.lru_cache(maxsize=None)
def cached_set_partitions(n: int, k: int) -> torch.Tensor:
    """`set_partitions` on CPU, cached and shared: callers must not modify the result."""
    if not 1 <= k <= n:
        raise ValueError(f"set_partitions needs 1 <= k <= n, got n={n}, k={k}")
    # Built one point at a time for all prefixes at once: the next point joins a block already
    # used or opens the next one; prefixes that can no longer reach k blocks are dropped.
    labels = torch.zeros(1, 1, dtype=torch.long)
    used = torch.ones(1, dtype=torch.long)  # number of blocks used by each prefix
    block = torch.arange(k)
    for t in range(1, n):
        new_used = torch.maximum(used[:, None], block[None, :] + 1)  # (prefixes, k)
        ok = (block[None, :] <= used[:, None]) & (new_used + (n - 1 - t) >= k)
        row, col = ok.nonzero(as_tuple=True)  # row-major, so lexicographic order is kept
        labels = torch.cat([labels[row], col[:, None]], dim=1)
        used = new_used[row, col]
    return labels

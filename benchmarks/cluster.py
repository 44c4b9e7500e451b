"""Time symmetric_kmeans(method="ward") on QM9 batches through the pooling hierarchy, with
statistics of the clusters it makes.

Molecules come from ``geoae.data.load_qm9`` (``pip install "geoae[qm9]"``), every
``--stride``-th one in QM9 index order, so all sizes 3-29 appear. Each batch of
``--batch`` molecules is pooled as the model does: ``ceil(0.5 n)`` clusters per level, one at
the last (5 levels for 29 atoms), weighted by the atoms each point stands for. Per level:
median time per batch, how often a structure ends with fewer than ``k`` clusters, and the
sizes of the clusters (points merged, atoms stood for).

    python benchmarks/cluster.py [--molecules 640] [--batch 64] [--repeats 5] [--rtol 1e-4]
                                 [--min-atoms 1] [--stride 50] [--device cpu]
"""

import argparse
import collections
import statistics
import time

import torch

from geoae.cluster import cluster_centroids, symmetric_kmeans
from geoae.data import load_qm9

RATIO, LEVELS = 0.5, 5


def qm9_molecules(num_molecules: int, stride: int, min_atoms: int = 1):
    """Positions (float64) of every ``stride``-th QM9 molecule with at least ``min_atoms``
    atoms, ``num_molecules`` of them in a random order (seed 0)."""
    qm9 = load_qm9()
    ptr = qm9["ptr"].tolist()
    rows = [r for r in range(0, len(ptr) - 1, stride) if ptr[r + 1] - ptr[r] >= min_atoms]
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[:num_molecules]
    return [qm9["pos"][ptr[rows[i]] : ptr[rows[i] + 1]].double() for i in order.tolist()]


def pool(pos, batch, method, rtol, record=None):
    """The hierarchy's levels; ``record(level, k, clustering, weight)`` sees each one."""
    weight = torch.ones_like(pos[:, 0])
    times = []
    for level in range(LEVELS):
        counts = torch.bincount(batch)
        k = torch.ones_like(counts) if level == LEVELS - 1 else torch.ceil(RATIO * counts).long()
        t0 = time.perf_counter()
        c = symmetric_kmeans(pos, batch, k, weight=weight, rtol=rtol, method=method)
        if pos.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if record is not None:
            record(level, counts, k, c, weight)
        pos, weight = cluster_centroids(pos, c.cluster, c.num_clusters, weight)
        batch = c.cluster_batch
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", type=int, default=640)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--stride", type=int, default=50)
    parser.add_argument("--min-atoms", type=int, default=1, help="e.g. 25: the slowest batches")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--method", default="ward")
    parser.add_argument("--rtol", type=float, default=1e-4, help="tolerance of ties")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    molecules = qm9_molecules(args.molecules, args.stride, args.min_atoms)
    sizes = [len(m) for m in molecules]
    print(f"{len(molecules)} QM9 molecules, {min(sizes)}-{max(sizes)} atoms (mean "
          f"{statistics.mean(sizes):.1f}); batches of {args.batch}; rtol {args.rtol}; "
          f"torch threads {torch.get_num_threads()}; device {device}", flush=True)

    under = collections.Counter()  # (level) -> structures with fewer than k clusters
    seen = collections.Counter()
    merged = collections.defaultdict(collections.Counter)  # level -> points per cluster
    atoms = collections.defaultdict(list)  # level -> atoms per cluster
    level_times = collections.defaultdict(list)
    shortfall = collections.defaultdict(list)  # level -> k - clusters, where positive

    def record(level, counts, k, c, weight):
        got = torch.bincount(c.cluster_batch, minlength=len(counts))
        seen[level] += len(counts)
        under[level] += int((got < k).sum())
        shortfall[level] += (k - got)[got < k].tolist()
        merged[level].update(torch.bincount(c.cluster, minlength=c.num_clusters).tolist())
        atoms[level] += torch.zeros(c.num_clusters, dtype=weight.dtype).index_add_(0, c.cluster, weight.cpu()).tolist()

    for start in range(0, len(molecules), args.batch):
        chunk = molecules[start : start + args.batch]
        pos = torch.cat(chunk).to(device)
        batch = torch.repeat_interleave(torch.arange(len(chunk)), torch.tensor([len(m) for m in chunk])).to(device)
        pool(pos.cpu(), batch.cpu(), args.method, args.rtol, record)  # statistics, warm-up
        runs = [pool(pos, batch, args.method, args.rtol) for _ in range(args.repeats)]
        for level in range(LEVELS):
            level_times[level].append(statistics.median(r[level] for r in runs))

    print("\nlevel  ms/batch (median over batches; min-max)  under k  shortfall (k - C)  "
          "points/cluster  atoms/cluster (mean, max)")
    for level in range(LEVELS):
        t = [1e3 * x for x in level_times[level]]
        gap = collections.Counter(shortfall[level])
        sizes = dict(sorted(merged[level].items()))
        print(f"{level:5d}  {statistics.median(t):6.2f} ({min(t):.2f}-{max(t):.2f})"
              f"  {under[level]:4d}/{seen[level]}  {dict(sorted(gap.items()))}  {sizes}"
              f"  {statistics.mean(atoms[level]):.2f}, {max(atoms[level]):.0f}", flush=True)
    total = [sum(level_times[level][b] for level in range(LEVELS)) * 1e3 for b in range(len(level_times[0]))]
    print(f"\nall {LEVELS} levels: {statistics.median(total):.2f} ms per batch of {args.batch} (median)")


if __name__ == "__main__":
    main()

"""Time geoae.nn.radius_graph on a QM9-sized batch against a brute-force full-batch cdist.

512 molecules of 3-29 atoms (uniform), atoms on a jittered cubic lattice of ~1.5 A spacing,
r_max = 5 A. Both methods run in this process on the same data; their edges are checked equal.

    python benchmarks/radius_graph.py [--molecules 512] [--repeats 20] [--device cpu]
"""

import argparse
import statistics
import time

import torch

from geoae.nn import radius_graph


def qm9_like_batch(num_molecules: int, generator: torch.Generator):
    counts = torch.randint(3, 30, (num_molecules,), generator=generator)
    pos = []
    for n in counts.tolist():
        side = round(n ** (1 / 3)) + 1
        grid = torch.stack(torch.meshgrid(*[torch.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
        sites = grid[torch.randperm(len(grid), generator=generator)[:n]].float()
        pos.append(1.5 * sites + 0.2 * torch.randn(n, 3, generator=generator))
    batch = torch.repeat_interleave(torch.arange(num_molecules), counts)
    return torch.cat(pos), batch


def brute_force(pos, r_max, batch):
    """Full (N, N) distance matrix over the whole batch, masked to same-molecule pairs."""
    dist = torch.cdist(pos, pos)
    mask = (dist < r_max) & (batch[:, None] == batch[None, :])
    mask.fill_diagonal_(False)
    target, source = mask.nonzero(as_tuple=True)
    return torch.stack([source, target])


def median_time(fn, repeats, device):
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", type=int, default=512)
    parser.add_argument("--r-max", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    pos, batch = qm9_like_batch(args.molecules, torch.Generator().manual_seed(0))
    pos, batch = pos.to(device), batch.to(device)
    ours = radius_graph(pos, args.r_max, batch)
    reference = brute_force(pos, args.r_max, batch)
    # the two compute distances differently: allow disagreement only for pairs at r_max within rounding
    differ = set(map(tuple, ours.T.tolist())) ^ set(map(tuple, reference.T.tolist()))
    for j, i in differ:
        assert abs(float((pos[j] - pos[i]).norm()) - args.r_max) < 1e-4, (j, i)

    t_ours = median_time(lambda: radius_graph(pos, args.r_max, batch), args.repeats, device)
    t_brute = median_time(lambda: brute_force(pos, args.r_max, batch), args.repeats, device)
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    print(f"{args.molecules} molecules, {len(pos)} atoms, {ours.shape[1]} edges (r_max {args.r_max})")
    print(f"geoae.nn.radius_graph (padded per molecule): median {1e3 * t_ours:8.2f} ms")
    print(f"brute force (full-batch cdist):              median {1e3 * t_brute:8.2f} ms")
    print(f"speed-up: {t_brute / t_ours:.1f}x")


if __name__ == "__main__":
    main()

"""Accuracy, speed and resolution of ``geoae.sphere`` beside e3nn's ``SphericalTensor``.

Run: ``python benchmarks/sphere_peaks.py`` (``--help`` for the sizes; ``--quick`` for a short
run). Prints four tables, fastest first: speed at lmax 6 with the ratio of throughputs in each
of ``--repeats`` rounds (ours on 10,000 signals at once, e3nn's ``find_peaks`` per signal, side
by side in the same process) and their median, signals per second at
several lmax, accuracy on random sets (ours on all of them, e3nn's ``with_peaks_at`` +
``find_peaks`` on a subset, same sets), and the smallest resolved angle between two vectors for
lmax 2..10 (the slow one).
"""

import argparse
import math
import statistics
import sys
import time

import torch
from e3nn import io, o3

from geoae.sphere import find_peaks, project


def random_sets(num_sets: int, generator: torch.Generator, max_vectors=6, min_angle=45.0, lengths=(0.5, 3.0)):
    """``num_sets`` sets of 1..max_vectors vectors, pairwise at least ``min_angle`` degrees apart."""
    sets = []
    for _ in range(num_sets):
        count = int(torch.randint(1, max_vectors + 1, (1,), generator=generator))
        while True:
            directions = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator, dtype=torch.float64), dim=1)
            cosines = directions @ directions.T - 2 * torch.eye(count, dtype=torch.float64)
            if cosines.max() <= math.cos(math.radians(min_angle)):
                break
        low, high = lengths
        sets.append(directions * (low + (high - low) * torch.rand(count, 1, generator=generator, dtype=torch.float64)))
    return sets


def batch(sets):
    """Ragged sets to ``(vectors, index)``."""
    index = torch.cat([torch.full((len(s),), i) for i, s in enumerate(sets)])
    return torch.cat(sets), index


def score(sets, found):
    """Counts and errors of found sets (a list of ``(F, 3)``) against the true ones."""
    wrong_count, missed, spurious, angles, length_errors = 0, 0, 0, [], []
    for truth, guess in zip(sets, found):
        missed += max(len(truth) - len(guess), 0)
        spurious += max(len(guess) - len(truth), 0)
        if len(guess) != len(truth):
            wrong_count += 1
            continue
        cosines = torch.nn.functional.normalize(truth, dim=1) @ torch.nn.functional.normalize(guess, dim=1).T
        best = cosines.argmax(dim=1)
        angles += torch.rad2deg(torch.arccos(cosines.max(dim=1).values.clamp(max=1))).tolist()
        length_errors += (truth.norm(dim=1) - guess[best].norm(dim=1)).abs().tolist()
    return {
        "sets": len(sets),
        "wrong count": wrong_count,
        "missed": missed,
        "spurious": spurious,
        "median angle (deg)": statistics.median(angles) if angles else math.nan,
        "worst angle (deg)": max(angles) if angles else math.nan,
        "worst length error": max(length_errors) if length_errors else math.nan,
    }


def ours(sets, lmax, dtype):
    vectors, index = batch(sets)
    peaks = find_peaks(project(vectors.to(dtype), index, len(sets), lmax))
    return [peaks.vectors[peaks.index == i].double() for i in range(len(sets))]


def e3nn_round_trip(sets, lmax):
    """e3nn's with_peaks_at then find_peaks, keeping peaks above half the smallest true length."""
    tensor = io.SphericalTensor(lmax, 1, -1)
    found = []
    for vectors in sets:
        directions, values = tensor.find_peaks(tensor.with_peaks_at(vectors.float()))
        keep = values > 0.5 * vectors.norm(dim=1).min()
        found.append((directions[keep] * values[keep, None]).double())
    return found


def seconds(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def signals_for_speed(num, lmax, generator):
    vectors, index = batch(random_sets(num, generator))
    return project(vectors.float(), index, num, lmax)


def resolved(angle, lmax, rotations):
    """Whether two unit vectors ``angle`` degrees apart come back as two, within 1 degree, in all rotations."""
    half = math.radians(angle) / 2
    pair = torch.tensor([[math.sin(half), 0, math.cos(half)], [-math.sin(half), 0, math.cos(half)]], dtype=torch.float64)
    sets = [pair @ rotation.T for rotation in rotations]
    vectors, index = batch(sets)
    peaks = find_peaks(project(vectors, index, len(sets), lmax))
    for i, truth in enumerate(sets):
        guess = peaks.vectors[peaks.index == i]
        if len(guess) != 2:
            return False
        if (truth @ guess.T).max(dim=1).values.clamp(max=1).arccos().max() > math.radians(1):
            return False
    return True


def resolution(lmax, rotations, step=1.0, tolerance=0.1):
    """Smallest angle in degrees from which every larger angle (scanned by ``step``) is resolved.

    Resolution is not monotone near the limit (the residual pass rescues some angles below it), so
    the scan walks down from 180 degrees to the first failure, then bisects that last gap.
    """
    high = 180.0
    while high - step > 0 and resolved(high - step, lmax, rotations):
        high -= step
    low = max(high - step, 0.0)
    while high - low > tolerance:
        middle = (low + high) / 2
        low, high = (low, middle) if resolved(middle, lmax, rotations) else (middle, high)
    return high


def accuracy(sets, num_e3nn):
    few = sets[:num_e3nn]
    rows = [
        {"method": f"ours float64, {len(sets)} sets", **score(sets, ours(sets, 6, torch.float64))},
        {"method": f"ours float32, {len(sets)} sets", **score(sets, ours(sets, 6, torch.float32))},
        {"method": f"ours float64, first {num_e3nn}", **score(few, ours(few, 6, torch.float64))},
        {"method": f"e3nn, first {num_e3nn}", **score(few, e3nn_round_trip(few, 6))},
    ]
    table("Accuracy, lmax 6: 1-6 vectors >= 45 deg apart, lengths 0.5-3.0 (e3nn: peaks above half the smallest true length)", rows)


def table(title, rows):
    print(f"\n{title}")
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(f"{row[k]:.3g}" if isinstance(row[k], float) else str(row[k]) for k in keys))
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", type=int, default=1000, help="random sets for our accuracy")
    parser.add_argument("--e3nn-sets", type=int, default=100, help="first sets also run through e3nn")
    parser.add_argument("--signals", type=int, default=10000, help="signals per speed measurement")
    parser.add_argument("--e3nn-signals", type=int, default=20, help="signals timed one by one with e3nn")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rotations", type=int, default=8, help="random orientations per resolution test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-resolution", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="short run: 200 sets (20 with e3nn), 10 e3nn signals, 1 repeat, no resolution"
    )
    args = parser.parse_args()
    if args.quick:
        args.sets, args.e3nn_sets, args.e3nn_signals, args.repeats, args.skip_resolution = 200, 20, 10, 1, True
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    sets = random_sets(args.sets, generator)
    tensor = io.SphericalTensor(6, 1, -1)
    e3nn_signals = [tensor.with_peaks_at(s.float()) for s in sets[: args.e3nn_signals]]
    signals = signals_for_speed(args.signals, 6, generator)
    find_peaks(signals)  # builds the cached grid and tables, and warms up, outside the timing
    rows = []
    for index in range(args.repeats):  # e3nn and ours side by side in each round: load drifts
        e3nn_each = statistics.median(seconds(lambda x=x: tensor.find_peaks(x), 1) for x in e3nn_signals)
        ours_all = seconds(lambda: find_peaks(signals), 1)
        rows.append(
            {
                "round": index,
                f"ours s / {args.signals}": ours_all,
                "ours signals/s": args.signals / ours_all,
                f"e3nn s / signal (median of {args.e3nn_signals})": e3nn_each,
                "ratio": e3nn_each * args.signals / ours_all,
            }
        )
    ratio = statistics.median(row["ratio"] for row in rows)
    table(f"Speed, lmax 6, float32: throughput ratio ours / e3nn, median of {args.repeats} rounds: {ratio:.0f}", rows)

    rows = []
    for lmax in (4, 6, 8):
        signals = signals_for_speed(args.signals, lmax, generator)
        find_peaks(signals)
        elapsed = seconds(lambda: find_peaks(signals), args.repeats)
        rows.append({"lmax": lmax, "seconds": elapsed, "signals/s": args.signals / elapsed})
    table(f"Throughput, {args.signals} signals of 1-6 vectors, float32, median of {args.repeats}", rows)

    if not args.skip_accuracy:
        accuracy(sets, args.e3nn_sets)
    if args.skip_resolution:
        return
    rotations = o3.rand_matrix(args.rotations, dtype=torch.float64)
    rows = [{"lmax": lmax, "resolved from (deg)": resolution(lmax, rotations)} for lmax in range(2, 11)]
    table(f"Resolution: two unit vectors found as two within 1 deg, {args.rotations} orientations", rows)


if __name__ == "__main__":
    main()

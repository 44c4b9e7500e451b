"""Throughput and memory of a molecule autoencoder on QM9 test molecules: training steps
(forward, backward and Adam; two batches), encoding and free-running decoding (peak finding
included; with each child-count rule, the model's own first) of all the molecules, each at the batch sizes given, medians over repeats; then
where the time goes (a per-stage split and, with ``--profile``, cProfile's top entries).
Training runs last: what its autograd buffers leave in the allocator changes the timings of
what runs after it in the process. A probe of the machine's speed (one thread's matrix-product
GFLOP/s) is printed before and after: a shared machine's speed drifts.

Stages of one batch, timed separately: the pooling hierarchy (symmetric clustering, no
parameters), the encoder network, and the decoder split into its networks and
peak finding (``geoae.sphere.find_peaks`` or ``find_counted_peaks``); with ``--refine-steps``,
decoding refined through the encoder (``Autoencoder.refine``; of ``--candidates`` decodings
each, screened ``--screen-steps`` steps, then ``--rounds`` re-decodings of the molecules whose
residual is above ``--settled`` and ``--feedback-rounds`` more, the decoder reading the latent
plus ``--feedback`` times what the decoding misses) beside plain decoding. Peak memory is the process's
resident-set high-water mark (CPU) or ``torch.cuda.max_memory_allocated`` (GPU) after each
phase.

    python benchmarks/molecules.py [--checkpoint qm9] [--batch-sizes 32 128 512] [--molecules 512]
                                   [--repeats 3] [--threads 1] [--device cpu] [--child-count RULE] [--profile]
                                   [--refine-steps K] [--candidates C] [--screen-steps S] [--rounds R] [--settled T]
                                   [--feedback-rounds F] [--feedback G]

Bars (issue 5, this machine's CPU, shipped model): encoding >= 1,000 molecules/s, decoding >=
200 molecules/s.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import platform
import pstats
import resource
import statistics
import sys
import time
from collections import defaultdict

import torch

import geoae
import geoae.model._decoder as decoder_module
from geoae.model import CHILD_COUNTS
from geoae.data import QM9Dataset, load_qm9, qm9_split


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux) and the vector instructions torch uses
    on it (AVX2, AVX512, ...), so figures say which machine made them."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    name = f"{names[0]} x {len(names)}" if names else platform.processor() or platform.machine()
    return f"{name}, {torch.backends.cpu.get_cpu_capability()}"  # the widest vector instructions torch uses


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int, warm_up=None) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, after one warm-up call (of
    ``warm_up()`` when given: a smaller version of ``fn``)."""
    (warm_up or fn)()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def probe_gflops(device: torch.device, size: int = 1024, repeats: int = 20) -> float:
    """One thread's float32 matrix-product speed (GFLOP/s, median of ``repeats`` products of
    ``size``-square matrices): the machine's speed at the time, printed before and after the
    figures. A shared machine's speed drifts (on one 2-core VM, 52 and 94 GFLOP/s an hour
    apart, with every figure of this benchmark moving alike), so figures are compared with
    the probe beside them, or alternated in one process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    seconds = timed(lambda: a @ b, device, repeats)
    torch.set_num_threads(threads)
    return 2 * size**3 / seconds / 1e9


class StageTimer:
    """Wall time spent in peak finding during decoding: inside the decoder module's
    ``find_peaks`` and ``find_counted_peaks`` (whichever its ``child_count`` calls)."""

    NAMES = ("find_peaks", "find_counted_peaks")

    def __init__(self, device):
        self.device, self.seconds = device, defaultdict(float)
        self.originals = {name: getattr(decoder_module, name) for name in self.NAMES}

    def _timed(self, original):
        def wrapper(*args, **kwargs):
            synchronize(self.device)
            start = time.perf_counter()
            out = original(*args, **kwargs)
            synchronize(self.device)
            self.seconds["find_peaks"] += time.perf_counter() - start
            return out

        return wrapper

    def __enter__(self):
        for name, original in self.originals.items():
            setattr(decoder_module, name, self._timed(original))
        return self

    def __exit__(self, *exc):
        for name, original in self.originals.items():
            setattr(decoder_module, name, original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="qm9", help="pretrained name, checkpoint file")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--molecules", type=int, default=512, help="test molecules used (the first ones)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child-count", default=None, help="child-count rule of the model (integral, peaks; default: its own): listed first, and timed by stage")
    parser.add_argument("--profile", action="store_true", help="cProfile of one decode and one training step")
    parser.add_argument("--refine-steps", type=int, default=0, help="also time decoding refined with so many steps (Autoencoder.refine), one batch of the largest size")
    parser.add_argument("--candidates", type=int, default=1, help="with --refine-steps: screen so many decodings of each molecule, refine the smallest residual")
    parser.add_argument("--screen-steps", type=int, default=50, help="with --candidates: steps refining each candidate before the choice")
    parser.add_argument("--rounds", type=int, default=0, help="with --refine-steps: re-decodings of the atoms from the refined upper levels, each refined")
    parser.add_argument("--settled", type=float, default=1e-3, help="with --rounds: molecules whose residual is this or less skip the rounds")
    parser.add_argument("--feedback-rounds", type=int, default=0, help="with --refine-steps: rounds more whose decoder reads the latent plus --feedback times what the decoding misses")
    parser.add_argument("--feedback", type=float, default=2.0, help="with --feedback-rounds: the gain on what the decoding misses of the latent")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    model = geoae.load(args.checkpoint, map_location=device, child_count=args.child_count).to(device)
    qm9 = load_qm9()
    molecules = QM9Dataset(qm9, qm9_split(qm9["index"])["test"][: args.molecules])
    molecules = [molecules[i] for i in range(len(molecules))]
    sizes = [m.num_nodes for m in molecules]
    print(f"model {args.checkpoint}: {model.config}", flush=True)
    print(
        f"{len(molecules)} QM9 test molecules, {min(sizes)}-{max(sizes)} atoms (mean {statistics.mean(sizes):.1f}); "
        f"device {device} (CPU {cpu_name()}), torch threads {torch.get_num_threads()}, {args.repeats} repeats (medians)",
        flush=True,
    )
    print(f"machine probe before: {probe_gflops(device):.0f} GFLOP/s (float32 matrix products, one thread)", flush=True)

    def batches(size: int):
        return [model.as_batch(molecules[s : s + size]) for s in range(0, len(molecules), size)]

    own_rule = model.decoder.child_count
    rules = [own_rule] + [rule for rule in CHILD_COUNTS if rule != own_rule]  # decoding with each rule, same weights
    n = len(molecules)

    def encode(batches):
        model.eval()
        with torch.no_grad():
            return [model.encode(batch) for batch in batches]

    def decode(latents):
        with torch.no_grad():
            for latent in latents:
                model.decode_tensors(latent)

    # inference first, training last: what training's autograd buffers leave in the allocator
    # changes the timings of whatever runs after it in the process
    encode_rate, decode_rate = {}, {}
    for size in args.batch_sizes:
        data = batches(size)
        latents = encode(data)
        encode_rate[size] = n / timed(lambda: encode(data), device, args.repeats, lambda: encode(data[:1]))
        decode_rate[size] = {}
        for rule in rules:
            model.decoder.child_count = rule
            decode_rate[size][rule] = n / timed(lambda: decode(latents), device, args.repeats, lambda: decode(latents[:1]))
        model.decoder.child_count = own_rule

    # where the time goes, at the largest batch size
    size = max(args.batch_sizes)
    data = batches(size)
    model.eval()
    with torch.no_grad():
        hierarchy_s = timed(lambda: [model.hierarchy(b) for b in data], device, args.repeats)
        hierarchies = [model.hierarchy(b) for b in data]
        species = [model._species_index[b.z] for b in data]
        network_s = timed(lambda: [model.encoder(s, h) for s, h in zip(species, hierarchies)], device, args.repeats)
        latents = [model.encoder(s, h) for s, h in zip(species, hierarchies)]
        decode_times, peak_times = [], []
        for _ in range(args.repeats):
            with StageTimer(device) as stages:
                start = time.perf_counter()
                for latent in latents:
                    model.decode_tensors(latent)
                synchronize(device)
                decode_times.append(time.perf_counter() - start)
            peak_times.append(stages.seconds["find_peaks"])
    decode_s, peaks_s = statistics.median(decode_times), statistics.median(peak_times)
    where = (
        f"\nWhere the time goes, batch {size}, ms per molecule:\n"
        f"- encode: hierarchy (clustering) {1e3 * hierarchy_s / n:.3f}, encoder network {1e3 * network_s / n:.3f}\n"
        f"- decode: peak finding {1e3 * peaks_s / n:.3f}, the rest (networks, merging) {1e3 * (decode_s - peaks_s) / n:.3f}"
    )
    with torch.no_grad():
        decoded = [model.decode_tensors(latent) for latent in latents]
    fraction = torch.cat([torch.bincount(d.batch, minlength=b.num_graphs) / torch.bincount(b.batch) for d, b in zip(decoded, data)])
    where += f"\n- atoms decoded / input atoms ({model.decoder.child_count} rule): median {fraction.median():.2f}, mean {fraction.mean():.2f}"
    if args.refine_steps:
        latent, count = latents[0], latents[0].shape[0]
        with torch.no_grad():
            plain_s = timed(lambda: model.decode_tensors(latent), device, args.repeats)
            options = dict(
                refine_steps=args.refine_steps, candidates=args.candidates, screen_steps=args.screen_steps, rounds=args.rounds,
                settled=args.settled, feedback_rounds=args.feedback_rounds, feedback=args.feedback,
            )
            refined_s = timed(lambda: model.decode_tensors(latent, **options), device, args.repeats)
        if args.candidates == 1:
            steps = args.refine_steps
        elif args.screen_steps < args.refine_steps:  # every candidate screened, the chosen one refined
            steps = args.candidates * args.screen_steps + args.refine_steps
        else:  # every candidate refined fully
            steps = args.candidates * args.refine_steps
        steps += (args.rounds + args.feedback_rounds) * args.refine_steps  # at most: settled molecules skip the rounds
        where += (
            f"\n- refined decoding ({args.refine_steps} steps, {args.candidates} candidates screened {args.screen_steps}, "
            f"{args.rounds} rounds and {args.feedback_rounds} with feedback {args.feedback:g}, settled {args.settled:g}), "
            f"{count} molecules: {count / refined_s:.2f} mol/s beside {count / plain_s:.0f} plain ({refined_s / plain_s:.0f}x the time; "
            f"{1e3 * (refined_s - plain_s) / count / steps:.3f} ms per molecule per step, at most {steps} steps)"
        )

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-9)

    def train(batches):
        model.train()
        for batch in batches:
            optimizer.zero_grad()
            model.loss(batch)["loss"].backward()
            optimizer.step()

    print("\n| batch | train mol/s | encode mol/s | " + " | ".join(f"decode mol/s ({rule})" for rule in rules) + " | peak memory MB |")
    print("| --- " * (4 + len(rules)) + "|")
    for size in args.batch_sizes:
        train_data = batches(size)[:2]  # training steps are slow: two batches per repeat
        trained = sum(b.num_graphs for b in train_data)
        train_rate = trained / timed(lambda: train(train_data), device, args.repeats, lambda: train(train_data[:1]))
        decoding = " | ".join(f"{decode_rate[size][rule]:.0f}" for rule in rules)
        print(f"| {size} | {train_rate:.0f} | {encode_rate[size]:.0f} | {decoding} | {peak_memory_mb(device):.0f} |", flush=True)
    print(where)
    print(f"machine probe after: {probe_gflops(device):.0f} GFLOP/s", flush=True)

    if args.profile:
        for name, fn in (
            ("decode", lambda: [model.decode_tensors(latent) for latent in latents]),
            ("training step", lambda: model.loss(data[0])["loss"].backward()),
        ):
            profiler = cProfile.Profile()
            profiler.enable()
            with torch.set_grad_enabled(name != "decode"):
                fn()
            profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
            print(f"\ncProfile of {name} (batch {size}), top entries by own time:")
            print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[:4000])


if __name__ == "__main__":
    sys.exit(main())

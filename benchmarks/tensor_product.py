"""The model's two tensor products against e3nn, side by side in each round:

- the convolution's tensor product and sum over edges: `geoae.nn.ScatterTensorProduct` against
  e3nn's `TensorProduct` on every edge followed by `index_add`;
- the bloom head's square (`geoae.model.QuadraticLinear`): `geoae.nn.BilinearForm` against e3nn's
  `FullyConnectedTensorProduct`, on as many rows as the hierarchy has parents (levels 1 and up).

The inputs are those of a real convolution: each level's radius graph of QM9 test molecules
(pooled by the shipped model's hierarchy), the harmonics and radial weights of its edges, and
random node features of the model's hidden irreps (random rows for the square). Forward alone (no gradient) and forward plus
backward (gradients of features and weights) are timed; each round times e3nn then ours, and the
medians of the rounds' times and of their ratios are printed.

    python benchmarks/tensor_product.py [--checkpoint qm9] [--molecules 512] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import geoae
from geoae.data import QM9Dataset, load_qm9, qm9_split
from geoae.nn import radius_graph


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="qm9", help="pretrained name or checkpoint file")
    parser.add_argument("--molecules", type=int, default=512, help="test molecules in the batch (the first ones)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = geoae.load(args.checkpoint).eval()
    qm9 = load_qm9()
    data = QM9Dataset(qm9, qm9_split(qm9["index"])["test"][: args.molecules])
    batch = model.as_batch([data[i] for i in range(len(data))])
    conv = model.encoder.convs[0][0].conv
    print(f"{args.molecules} QM9 test molecules, torch threads {torch.get_num_threads()}, {args.repeats} rounds (medians)")
    print(f"convolution: {conv.tp}\nsquare: {model.decoder.blooms[0].map.quadratic}")
    print("\n| product | rows | pass | e3nn ms | ours ms | e3nn / ours |")
    print("| --- | --- | --- | --- | --- | --- |")

    with torch.no_grad():
        hierarchy = model.hierarchy(batch)
    generator = torch.Generator().manual_seed(0)
    differences = {}
    for level in range(2):  # the two levels with most edges
        pos, batch_index = hierarchy.pos[level], hierarchy.batch[level]
        edge_index = radius_graph(pos, model.encoder.r_max, batch_index)  # (2, E)
        edge_vec = pos[edge_index[0]] - pos[edge_index[1]]
        with torch.no_grad():
            edge_sh = conv.sh(edge_vec)  # (E, 9)
            weight = conv.radial_mlp(conv.radial(edge_vec.norm(dim=1)))  # (E, weight_numel)
        x = torch.randn(len(pos), conv.tp.irreps_in1.dim, generator=generator)
        num = len(pos)

        def e3nn():
            messages = conv.tp(x[edge_index[0]], edge_sh, weight)  # (E, irreps_out.dim)
            return messages.new_zeros(num, messages.shape[1]).index_add_(0, edge_index[1], messages)

        def ours():
            return conv.scatter_tp(x, edge_sh, weight, edge_index, num)

        name = f"convolution, level {level} edges"
        differences[name] = compare(name, edge_index.shape[1], e3nn, ours, [x, weight], args.repeats)

    square = model.decoder.blooms[0].map
    mid = torch.randn(sum(len(p) for p in hierarchy.pos[1:]), square.quadratic.irreps_in1.dim, generator=generator)
    differences["square"] = compare(
        "bloom head's square", len(mid), lambda: square.quadratic(mid, mid),
        lambda: square.square(mid, mid, square.quadratic.weight), [mid], args.repeats,
    )
    print("\nlargest |e3nn - ours| (float32): " + ", ".join(f"{k} {v:.1e}" for k, v in differences.items()))


def compare(name: str, rows: int, e3nn, ours, inputs, repeats: int) -> float:
    """Print forward and forward + backward (gradients of ``inputs``) timings of ``e3nn`` and
    ``ours``, timed side by side in each round; return their largest difference."""
    with torch.no_grad():
        difference = (e3nn() - ours()).abs().max().item()

    def backward(fn):
        def run():
            for t in inputs:
                t.requires_grad_(True)
            fn().square().sum().backward()
            for t in inputs:
                t.requires_grad_(False)
                t.grad = None

        return run

    for pass_name, pair in [("forward", (no_grad(e3nn), no_grad(ours))), ("forward + backward", (backward(e3nn), backward(ours)))]:
        for fn in pair:  # warm up
            fn()
        times = [(seconds(pair[0]), seconds(pair[1])) for _ in range(repeats)]
        theirs, mine = zip(*times)
        ratio = statistics.median(a / b for a, b in times)
        print(f"| {name} | {rows} | {pass_name} | {1e3 * statistics.median(theirs):.0f} | "
              f"{1e3 * statistics.median(mine):.0f} | {ratio:.1f} |", flush=True)
    return difference


if __name__ == "__main__":
    main()

"""Figures of a run: loss curves and structures beside their reconstructions."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import ase
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from ase.data.colors import jmol_colors  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from geoae.metrics import bond_list, bond_orders  # noqa: E402

__all__ = [
    "plot_by_size",
    "plot_loss_curves",
    "plot_reconstructions",
    "plot_rmsd_histogram",
    "plot_structure_pairs",
]


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def plot_loss_curves(metrics_csv: str | Path, path: str | Path) -> None:
    """Plot every ``train/*`` and ``val/*`` column of lightning's CSV log against the step."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if value and key.startswith(("train/", "val/")):
                    series[key].append((float(row["step"]), float(value)))
    losses = sorted(k for k in series if not k.endswith(("reconstructed", "right_atoms")))
    rates = sorted(k for k in series if k.endswith(("reconstructed", "right_atoms")))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for key in losses:
        steps, values = np.array(series[key]).T
        axes[0].plot(steps, values, label=key, marker="." if key.startswith("val/") else None)
    axes[0].set(yscale="log", xlabel="step", title="losses (teacher forced)")
    if losses:
        axes[0].legend(fontsize=7)
    for key in rates:
        steps, values = np.array(series[key]).T
        axes[1].plot(steps, values, marker="o", label=key)
    axes[1].set(xlabel="step", ylim=(-0.02, 1.02), title="validation, decoded from the latent alone")
    if rates:  # none when no validation ran
        axes[1].legend(fontsize=7)
    _save(fig, Path(path))


def plot_reconstructions(originals: list[ase.Atoms], decoded: list[ase.Atoms], path: str | Path) -> None:
    """3D scatter of each structure (top row) above its reconstruction (bottom row)."""
    plot_structure_pairs(originals, decoded, path)


def _draw_structure(ax, atoms: ase.Atoms, bonds: bool) -> None:
    """Atoms of ``atoms`` on a 3D axis, coloured by element (Jmol colours), with their bonds
    (:func:`geoae.metrics.bond_orders`, line width by order) when ``bonds``."""
    p, z = atoms.get_positions(), atoms.get_atomic_numbers()
    if not len(p):
        return
    if bonds:
        for i, j, order in bond_list(bond_orders(p, z)):
            ax.plot(*p[[i, j]].T, color="0.35", linewidth=1.2 * order, zorder=1)
    ax.scatter(*p.T, s=np.where(z == 1, 50, 120), c=jmol_colors[np.clip(z, 0, len(jmol_colors) - 1)],
               edgecolors="black", linewidths=0.5, depthshade=False)
    centre, span = p.mean(0), max(np.ptp(p, axis=0).max(), 1.0) / 2 + 0.3
    ax.set(xlim=(centre[0] - span, centre[0] + span), ylim=(centre[1] - span, centre[1] + span),
           zlim=(centre[2] - span, centre[2] + span))


def plot_structure_pairs(
    originals: Sequence[ase.Atoms],
    decoded: Sequence[ase.Atoms],
    path: str | Path,
    bonds: bool = False,
    titles: Sequence[str] | None = None,
) -> None:
    """3D scatter of each structure (top row) above its reconstruction (bottom row), atoms
    coloured by element; with ``bonds``, bonds drawn as lines (molecules, angstrom).

    Args:
        originals, decoded: ``B`` structures each (pairs in order).
        path: the PNG to write (through a temporary file and a rename).
        bonds: draw bonds by the bond-length tables of :mod:`geoae.metrics`.
        titles: ``B`` titles of the reconstructions (default: their atom counts).
    """
    n = max(len(originals), 1)
    fig = Figure(figsize=(2.6 * n, 5.4))
    for i, (a, b) in enumerate(zip(originals, decoded)):
        for row, atoms in enumerate((a, b)):
            ax = fig.add_subplot(2, n, row * n + i + 1, projection="3d")
            _draw_structure(ax, atoms, bonds)
            if row == 0:
                label = a.info.get("name", a.get_chemical_formula())
            else:
                label = titles[i] if titles is not None else f"decoded ({len(atoms)} atoms)"
            ax.set_title(label, fontsize=8)
            ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
    _save(fig, Path(path))


def plot_by_size(summary: dict, path: str | Path) -> None:
    """Rates and RMSD by structure size, from a :func:`geoae.metrics.reconstruction_summary`:
    bars of the exact rate (and of the right-composition and identical-bond rates, where
    present) against the input atom count, with the number of structures of each size above;
    beside them, the mean and median matched RMSD (log scale) and its threshold."""
    sizes = sorted(summary["by_size"], key=int)
    x = np.array([int(s) for s in sizes])
    rows = [summary["by_size"][s] for s in sizes]
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax, ax_rmsd = fig.subplots(1, 2)
    keys = [k for k in ("right_atoms", "right_composition", "bonds_identical", "exact") if k in summary]
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        ax.bar(x + (k - (len(keys) - 1) / 2) * width, [r[key] for r in rows], width, label=key)
    for xi, r in zip(x, rows):
        ax.annotate(str(r["num_structures"]), (xi, 1.01), ha="center", fontsize=6, annotation_clip=False)
    ax.set(xlabel="atoms in the input", ylabel="fraction of structures", ylim=(0, 1.08),
           title="reconstruction by size (count above)")
    ax.legend(fontsize=7, loc="lower left")
    for stat, marker in (("mean", "o"), ("median", "s")):
        values = np.array([np.nan if r["rmsd"][stat] is None else r["rmsd"][stat] for r in rows], dtype=float)
        ax_rmsd.plot(x, np.maximum(values, 1e-6), marker=marker, label=f"{stat} RMSD")
    ax_rmsd.axhline(summary["rmsd_threshold"], color="red", linestyle="--", label=f"threshold {summary['rmsd_threshold']:g}")
    ax_rmsd.set(yscale="log", xlabel="atoms in the input", ylabel="matched RMSD (right composition)",
                title="matched RMSD by size", xlim=(x.min() - 0.5, x.max() + 0.5) if len(x) else None)
    ax_rmsd.legend(fontsize=7)
    _save(fig, Path(path))


def plot_rmsd_histogram(rmsd, path: str | Path, threshold: float = 0.1) -> None:
    """Histogram of matched RMSDs ``(B,)`` on a log axis, with the exactness threshold; an
    infinite RMSD (wrong composition) is counted in the title, not drawn."""
    rmsd = np.asarray(rmsd, dtype=float).reshape(-1)
    finite = rmsd[np.isfinite(rmsd)]
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    if len(finite):
        low = max(min(finite.min(), threshold) / 2, 1e-6)
        high = max(finite.max(), threshold) * 2
        ax.hist(np.maximum(finite, low), bins=np.geomspace(low, high, 60))
    ax.axvline(threshold, color="red", linestyle="--", label=f"threshold {threshold:g}")
    ax.set(xscale="log", xlabel="matched RMSD", ylabel="structures",
           title=f"{len(finite)} with the right composition, {len(rmsd) - len(finite)} without")
    ax.legend(fontsize=7)
    _save(fig, Path(path))

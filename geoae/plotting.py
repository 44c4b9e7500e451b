"""Figures of a run: loss curves and structures beside their reconstructions."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import ase
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_loss_curves", "plot_reconstructions"]


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
    axes[0].legend(fontsize=7)
    for key in rates:
        steps, values = np.array(series[key]).T
        axes[1].plot(steps, values, marker="o", label=key)
    axes[1].set(xlabel="step", ylim=(-0.02, 1.02), title="validation, decoded from the latent alone")
    axes[1].legend(fontsize=7)
    _save(fig, Path(path))


def plot_reconstructions(originals: list[ase.Atoms], decoded: list[ase.Atoms], path: str | Path) -> None:
    """3D scatter of each structure (top row) above its reconstruction (bottom row)."""
    fig = plt.figure(figsize=(2.6 * len(originals), 5.4))
    for i, (a, b) in enumerate(zip(originals, decoded)):
        for row, atoms in enumerate((a, b)):
            ax = fig.add_subplot(2, len(originals), row * len(originals) + i + 1, projection="3d")
            p = atoms.get_positions()
            if len(p):
                ax.scatter(*p.T, s=120, c=atoms.get_atomic_numbers(), cmap="viridis", vmin=1, vmax=9, depthshade=False)
                centre, span = p.mean(0), max(np.ptp(p, axis=0).max(), 1.0) / 2 + 0.3
                ax.set(xlim=(centre[0] - span, centre[0] + span), ylim=(centre[1] - span, centre[1] + span),
                       zlim=(centre[2] - span, centre[2] + span))
            label = a.info.get("name", a.get_chemical_formula())
            ax.set_title(label if row == 0 else f"decoded ({len(atoms)} atoms)", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
    _save(fig, Path(path))

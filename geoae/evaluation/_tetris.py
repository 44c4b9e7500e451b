"""The tetris bars: reconstruction under rotations and mirrors, equivariance, chirality."""

from __future__ import annotations

import numpy as np
import torch
from e3nn import o3
from torch_geometric.data import Batch

from geoae.data import TETRIS_SHAPES, tetris
from geoae.metrics import matched_rmsd, reconstruction_errors
from geoae.model import Autoencoder

__all__ = ["evaluate_tetris", "equivariance_errors"]


def _decode_points(model: Autoencoder, latent: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    out = model.decode_tensors(latent)
    pos, species, batch = out.pos.double().cpu().numpy(), out.species.cpu().numpy(), out.batch.cpu().numpy()
    return [(pos[batch == b], species[batch == b]) for b in range(out.num_structures)]


@torch.no_grad()
def equivariance_errors(model: Autoencoder, structures: list, seed: int = 0) -> dict[str, float]:
    """Largest errors, over ``structures`` and one random rotation each (with and without
    inversion), of

    - ``latent``: ``|encode(g x) - D(g) encode(x)|`` (max abs, latent units);
    - ``decode``: matched RMSD between ``decode(D(g) z)`` and ``g decode(z)`` (length units);
      ``inf`` if they differ in atoms;
    - ``translation``: ``|encode(x + t) - encode(x)|``;
    - ``permutation``: ``|encode(P x) - encode(x)|``.
    """
    generator = torch.Generator().manual_seed(seed)
    batch = model.as_batch(structures)
    z = model.encode(batch)
    decoded = _decode_points(model, z)
    errors = {"latent": 0.0, "decode": 0.0, "translation": 0.0, "permutation": 0.0}
    for parity in (1, -1):
        q = torch.randn(4, generator=generator, dtype=torch.float64)
        rotation = parity * o3.quaternion_to_matrix(q / q.norm())
        D = model.latent_irreps.D_from_matrix(rotation).to(model.dtype)  # (dim, dim)
        moved = batch.clone()
        moved.pos = batch.pos @ rotation.to(batch.pos.dtype).T
        errors["latent"] = max(errors["latent"], (model.encode(moved) - z @ D.T).abs().max().item())
        for (pos_a, sp_a), (pos_b, sp_b) in zip(_decode_points(model, z @ D.T), decoded):
            rmsd = matched_rmsd(pos_a, sp_a, pos_b @ rotation.numpy().T, sp_b)
            errors["decode"] = max(errors["decode"], rmsd)
    moved = batch.clone()
    moved.pos = batch.pos + torch.randn(1, 3, generator=generator).to(batch.pos) * 10
    errors["translation"] = (model.encode(moved) - z).abs().max().item()
    permuted = Batch.from_data_list([d.subgraph(torch.randperm(d.num_nodes, generator=generator)) for d in batch.to_data_list()])
    errors["permutation"] = (model.encode(permuted) - z).abs().max().item()
    return errors


@torch.no_grad()
def evaluate_tetris(model: Autoencoder, rotations: int = 100, rmsd_threshold: float = 0.05, seed: int = 12345, batch_size: int = 400) -> dict:
    """Decode every tetris shape under ``rotations`` random rotations, and their mirror
    images, free-running from the latent alone; return the figures of the tetris bars.

    A structure counts as reconstructed when it has the right number of blocks and a matched
    RMSD (optimal one-to-one matching, no rotation alignment) under ``rmsd_threshold``.
    """
    model.eval()
    structures = tetris(rotations=rotations, mirror=True, seed=seed, dtype=model.dtype)
    names, ok, rmsd = [], [], []
    for start in range(0, len(structures), batch_size):
        batch = model.as_batch(structures[start : start + batch_size])
        errors = reconstruction_errors(model.decode_tensors(model.encode(batch)), batch, model._species_index[batch.z])
        names += batch.name
        ok += (errors.right_atoms & (errors.rmsd < rmsd_threshold)).tolist()
        rmsd += errors.rmsd.tolist()
    ok, rmsd = np.array(ok), np.array(rmsd)
    per_shape = {}
    for shape in sorted(set(names)):
        mask = np.array(names) == shape
        per_shape[shape] = {"reconstructed": float(ok[mask].mean()), "rmsd_max": float(rmsd[mask].max())}

    fixed = tetris(dtype=model.dtype)
    z = model.encode(fixed)
    index = {name: i for i, name in enumerate(TETRIS_SHAPES)}
    z1, z2 = z[index["chiral_1"]], z[index["chiral_2"]]
    decoded = _decode_points(model, z[[index["chiral_1"], index["chiral_2"]]])
    centred = {name: fixed[index[name]].pos.double().numpy() - fixed[index[name]].pos.double().numpy().mean(0) for name in ("chiral_1", "chiral_2")}
    species = np.zeros(4, dtype=int)
    chirality = {
        "latent_distance": (z1 - z2).norm().item(),
        "latent_norm": z1.norm().item(),
        "chiral_1_rmsd_to_itself": matched_rmsd(*decoded[0], centred["chiral_1"], species),
        "chiral_1_rmsd_to_chiral_2": matched_rmsd(*decoded[0], centred["chiral_2"], species),
        "chiral_2_rmsd_to_itself": matched_rmsd(*decoded[1], centred["chiral_2"], species),
        "chiral_2_rmsd_to_chiral_1": matched_rmsd(*decoded[1], centred["chiral_1"], species),
    }
    return {
        "num_structures": len(structures),
        "reconstructed": float(ok.mean()),
        "rmsd_median": float(np.median(rmsd)),
        "rmsd_max": float(rmsd.max()),
        "per_shape": per_shape,
        "equivariance": equivariance_errors(model, fixed),
        "chirality": chirality,
    }

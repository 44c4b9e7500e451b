"""Molecules (QM9): free-running reconstruction of every test molecule, its records, summary
and figures."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import fields
from pathlib import Path

import ase
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from geoae._atomic import atomic_path
from geoae.metrics import ReconstructionErrors, reconstruction_errors, reconstruction_summary
from geoae.model import Autoencoder
from geoae.plotting import plot_by_size, plot_rmsd_histogram, plot_structure_pairs

from ._levels import free_running_level_errors, level_errors

__all__ = ["evaluate_molecules", "reconstruct_molecules", "write_molecule_report"]

#: Files :func:`write_molecule_report` writes into its folder.
REPORT_FILES = {
    "json": "molecules.json",
    "by_size": "molecules_by_size.png",
    "rmsd": "molecules_rmsd.png",
    "examples": "molecules_examples.png",
}


def _batches(model: Autoencoder, data, batch_size: int) -> Iterator:
    """Checked batches of ``data``: a loader (or any iterable) of batches as they come, a
    sequence of structures (list, PyG dataset) cut into ``batch_size`` structures."""
    if not isinstance(data, DataLoader) and hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        for start in range(0, len(data), batch_size):
            yield model.as_batch([data[i] for i in range(start, min(start + batch_size, len(data)))])
    else:
        for batch in data:
            yield model.as_batch(batch)


def _dataset(data):
    """A loader's dataset, or ``data`` itself (a sequence of structures)."""
    return data.dataset if isinstance(data, DataLoader) else data


def _num_structures(data) -> int | None:
    try:
        return len(_dataset(data))
    except TypeError:
        return None


def _first(data, count: int) -> Subset:
    """The first ``count`` structures of a sequence or of a loader's dataset."""
    dataset = _dataset(data)
    return Subset(dataset, range(min(count, len(dataset))))


def _atoms(pos: torch.Tensor, z: torch.Tensor) -> ase.Atoms:
    return ase.Atoms(numbers=z.cpu().numpy(), positions=pos.detach().double().cpu().numpy())


@torch.no_grad()
def reconstruct_molecules(
    model: Autoencoder,
    data: Iterable,
    batch_size: int = 128,
    rmsd_threshold: float = 0.1,
    bonds: bool = True,
    num_examples: int = 0,
    progress: bool = True,
    refine_steps: int = 0,
    candidates: int = 1,
    screen_steps: int = 50,
    rounds: int = 0,
    settled: float = 1e-3,
    feedback_rounds: int = 0,
    feedback: float = 2.0,
) -> tuple[ReconstructionErrors, list[tuple[ase.Atoms, ase.Atoms]]]:
    """Decode every structure of ``data`` free-running from its latent alone
    (``decode(encode(x))``, batched, no gradient) and compare it with the input.

    Args:
        model: the autoencoder (put in eval mode).
        data: a data loader (or any iterable) of batches, or a sequence of structures
            (``Data`` or ``ase.Atoms``: a list, a PyG dataset), batched ``batch_size`` at a time.
        rmsd_threshold: largest matched RMSD (angstrom) of an exact reconstruction.
        bonds: compare bond graphs and stability (molecules; see
            :func:`geoae.metrics.compare_structures`).
        num_examples: how many of the first structures to return beside their decodings.
        progress: show a tqdm bar (structures).
        refine_steps: refine each decoding with so many steps (:meth:`Autoencoder.refine`; 0: none).
        candidates, screen_steps: with ``refine_steps``, refine so many decodings of each
            structure (atom counts rounded other ways) ``screen_steps`` steps, and the one of
            smallest residual fully (:meth:`Autoencoder.decode_tensors`).
        rounds: with ``refine_steps``, then decode the atoms again from the refined upper
            levels and refine them, so many times, keeping the smaller residual, except for
            structures whose residual is ``settled`` or less (:meth:`Autoencoder.decode_tensors`).
        feedback_rounds, feedback: then so many rounds more, the decoder reading the latent plus
            ``feedback`` times what the decoding misses of it (:func:`geoae.model.feedback_latent`).

    Returns:
        The records of all ``B`` structures, in order (:class:`geoae.metrics.ReconstructionErrors`),
        and up to ``num_examples`` pairs ``(input, decoded)`` of ``ase.Atoms``, both centred on
        their centroid, the input's ``info["name"]`` its formula.
    """
    model.eval()
    species = torch.tensor(model.species)
    parts, examples = [], []
    with tqdm(total=_num_structures(data), unit="structure", desc="reconstructing", disable=not progress) as bar:
        for batch in _batches(model, data, batch_size):
            decoded = model.decode_tensors(
                model.encode(batch), refine_steps=refine_steps, candidates=candidates, screen_steps=screen_steps,
                rounds=rounds, settled=settled, feedback_rounds=feedback_rounds, feedback=feedback,
            )
            parts.append(
                reconstruction_errors(decoded, batch, model._species_index[batch.z],
                                      atomic_numbers=model.species if bonds else None, rmsd_threshold=rmsd_threshold)
            )
            for b in range(min(num_examples - len(examples), batch.num_graphs)):
                pos = batch.pos[batch.batch == b].double()
                original = _atoms(pos - pos.mean(0), batch.z[batch.batch == b])
                original.info["name"] = original.get_chemical_formula()
                mask = decoded.batch == b
                examples.append((original, _atoms(decoded.pos[mask], species[decoded.species[mask].cpu()])))
            bar.update(batch.num_graphs)
    if not parts:
        raise ValueError("no structure to evaluate")
    return ReconstructionErrors.cat(parts), examples


def _example_title(errors: ReconstructionErrors, i: int) -> str:
    rmsd = errors.rmsd[i].item()
    text = f"decoded, {errors.num_atoms_decoded[i].item()} atoms"
    text += f"\nRMSD {rmsd:.3f}" if math.isfinite(rmsd) else "\nwrong composition"
    if errors.has_bonds and errors.right_composition[i] and not errors.bonds_identical[i]:
        text += ", bonds differ"
    return text + (", exact" if errors.exact[i] else "")


def write_molecule_report(
    output_dir: str | Path,
    errors: ReconstructionErrors,
    summary: dict,
    examples: list[tuple[ase.Atoms, ase.Atoms]] = (),
) -> dict[str, Path]:
    """Write the summary, the per-structure records and the figures into ``output_dir``.

    Files (:data:`REPORT_FILES`): ``molecules.json`` (``{"summary": summary, "records":
    {field: [one value per structure]}}``, an infinite RMSD written ``null``; written through
    a temporary file and a rename), ``molecules_by_size.png`` (:func:`geoae.plotting.plot_by_size`),
    ``molecules_rmsd.png`` (:func:`geoae.plotting.plot_rmsd_histogram`) and, with examples,
    ``molecules_examples.png`` (inputs above their decodings, bonds drawn). Returns the paths
    written, by the keys of :data:`REPORT_FILES`.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {key: output_dir / name for key, name in REPORT_FILES.items()}
    records = {}
    for f in fields(errors):
        value = getattr(errors, f.name)
        if isinstance(value, torch.Tensor):
            records[f.name] = [None if isinstance(v, float) and not math.isfinite(v) else v for v in value.tolist()]
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps({"summary": summary, "records": records}, allow_nan=False))
    plot_by_size(summary, paths["by_size"])
    plot_rmsd_histogram(errors.rmsd.numpy(), paths["rmsd"], threshold=errors.rmsd_threshold)
    if examples:
        originals, decoded = zip(*examples)
        titles = [_example_title(errors, i) for i in range(len(examples))]
        plot_structure_pairs(originals, decoded, paths["examples"], bonds=errors.has_bonds, titles=titles)
    else:
        del paths["examples"]
    return paths


#: The data module's structures each ``split`` of :func:`evaluate_molecules` names.
SPLITS = {"test": "test_set", "val": "val_set", "train": "train_set"}


def evaluate_molecules(
    model: Autoencoder,
    data: Iterable | None = None,
    datamodule=None,
    output_dir: str | Path | None = None,
    batch_size: int = 128,
    rmsd_threshold: float = 0.1,
    num_examples: int = 6,
    limit: int | None = None,
    diagnose: int = 512,
    progress: bool = True,
    split: str = "test",
    refine_steps: int = 0,
    candidates: int = 1,
    screen_steps: int = 50,
    rounds: int = 0,
    settled: float = 1e-3,
    feedback_rounds: int = 0,
    feedback: float = 2.0,
    residual_threshold: float = 0.05,
) -> dict:
    """Reconstruct every molecule of ``data`` (default: the ``split`` of ``datamodule``, a key
    of :data:`SPLITS`; choose models on ``"val"``) free-running and summarise: for each
    molecule, ``decode(encode(x))`` against ``x`` centred on its centroid, no rotation
    alignment (:func:`reconstruct_molecules`).

    A molecule is reconstructed exactly when its composition is right, its matched RMSD is
    at most ``rmsd_threshold`` angstrom, and its bond graph (orders included, from the
    element-pair bond-length tables) is the input's under the optimal atom matching.

    Returns :func:`geoae.metrics.reconstruction_summary`: ``num_structures``,
    ``rmsd_threshold``, the rates ``right_atoms``, ``right_composition``, ``bonds_identical``,
    ``exact``, ``stable``, ``atom_stable``, ``input_stable``, ``input_atom_stable``, ``rmsd``
    (``count``, ``median``, ``mean``, ``q90``, ``q99``, ``max``) and ``by_size`` (the same
    per input atom count). With ``output_dir``, also writes :func:`write_molecule_report`'s
    files there (``num_examples`` molecules drawn beside their reconstructions). ``limit``:
    only the first ``limit`` molecules of ``data`` or of the split (None: all).
    ``refine_steps``: refine each decoding (:meth:`Autoencoder.refine`; 0: none), choosing
    among ``candidates`` decodings by residual after ``screen_steps`` steps, then
    ``rounds`` times decoding the atoms again from the refined upper levels, for the molecules
    whose residual is above ``settled``, and ``feedback_rounds`` rounds more with the decoder
    reading the latent plus ``feedback`` times what the decoding misses of it
    (:meth:`Autoencoder.decode_tensors`); refined
    decodings carry their residuals into the records, and the summary says how well
    ``residual <= residual_threshold`` flags the exact ones (under ``"residual"``). The first
    ``diagnose`` molecules are also decoded teacher forced, each level judged on its
    own (:func:`level_errors`, under ``"teacher_forced"``), and each level of their free-running
    decodings is compared with the encoder's hierarchy (:func:`free_running_level_errors`,
    under ``"free_running"``): where reconstructions break, and how errors add up.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split={split!r}; valid: {list(SPLITS)}")
    if data is None:
        if datamodule is None:
            raise ValueError("evaluate_molecules needs data or a datamodule")
        data = getattr(datamodule, SPLITS[split])
    if limit is not None:
        data = _first(data, limit)
    errors, examples = reconstruct_molecules(
        model, data, batch_size=batch_size, rmsd_threshold=rmsd_threshold, bonds=True,
        num_examples=num_examples if output_dir is not None else 0, progress=progress, refine_steps=refine_steps,
        candidates=candidates, screen_steps=screen_steps, rounds=rounds, settled=settled,
        feedback_rounds=feedback_rounds, feedback=feedback,
    )
    summary = reconstruction_summary(errors, residual_threshold)
    if diagnose:
        summary["teacher_forced"] = level_errors(model, _batches(model, _first(data, diagnose), batch_size))
        summary["free_running"] = free_running_level_errors(model, _batches(model, _first(data, diagnose), batch_size))
    if output_dir is not None:
        write_molecule_report(output_dir, errors, summary, examples)
    return summary


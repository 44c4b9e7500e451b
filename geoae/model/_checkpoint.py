"""Saving and loading models: checkpoints of ``geoae-train`` and the pretrained models shipped
with the package."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch

from geoae._atomic import atomic_path

from ._autoencoder import Autoencoder

__all__ = ["CHECKPOINT_KEY", "PRETRAINED", "load", "save"]

CHECKPOINT_KEY = "geoae"
"""Entry of a checkpoint that holds the model's configuration (``{"model": Autoencoder.config}``)."""

PRETRAINED = {
    "tetris": "tetris.pt",
    "qm9": "qm9.pt",
}
"""Names of the pretrained models shipped in ``geoae/pretrained/`` (see its README) -> file."""

_STATE_PREFIX = "model."  # geoae-train's lightning module holds the autoencoder as ``model``


def save(model: Autoencoder, path: str | os.PathLike) -> None:
    """Write ``model`` as a small checkpoint (configuration and weights, no optimizer state)
    that :func:`load` reads; written to a temporary file then renamed, so an existing file is
    never left half-written.

    >>> import tempfile, geoae
    >>> model = geoae.Autoencoder(species=[6], max_atoms=4, lmax=1, mul=2, latent_lmax=1, latent_mul=2, signal_lmax=2)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     geoae.save(model, f"{folder}/model.pt")
    ...     geoae.load(f"{folder}/model.pt").config == model.config
    True
    """
    path = Path(path)
    state = {_STATE_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({CHECKPOINT_KEY: {"model": model.config}, "state_dict": state}, tmp)


def load(
    name_or_path: str | os.PathLike, map_location: str | torch.device = "cpu", child_count: str | None = None
) -> Autoencoder:
    """Load an :class:`Autoencoder`, in eval mode, from a pretrained model's name (one of
    :data:`PRETRAINED`: ``"qm9"``, ``"tetris"``), a checkpoint written by ``geoae-train``
    (``model.ckpt``, ``checkpoints/last.ckpt``) or a file written by :func:`save`.

    ``child_count`` (``"integral"`` or ``"peaks"``, see :class:`Decoder`) decodes with that
    rule instead of the one the checkpoint names; it changes no weight. A checkpoint written
    before the option existed names none and gets the default, ``"integral"``.

    Raises ``FileNotFoundError`` for a name that is neither a file nor a pretrained model
    (listing those), and ``ValueError`` naming the file when it is not a geoae checkpoint.
    """
    path = Path(name_or_path)
    if not path.is_file():
        if str(name_or_path) not in PRETRAINED:
            raise FileNotFoundError(
                f"{name_or_path}: no such checkpoint file, and not a pretrained model; "
                f"pretrained models: {sorted(PRETRAINED)}"
            )
        with resources.as_file(resources.files("geoae.pretrained") / PRETRAINED[str(name_or_path)]) as shipped:
            return _load_file(shipped, map_location, child_count)
    return _load_file(path, map_location, child_count)


def _load_file(path: Path, map_location: str | torch.device, child_count: str | None) -> Autoencoder:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for files that are not checkpoints
        raise ValueError(f"{path}: not a geoae checkpoint (torch cannot load it: {type(error).__name__})") from error
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{path}: not a geoae checkpoint (no {CHECKPOINT_KEY!r} model configuration in it)")
    config = dict(checkpoint[CHECKPOINT_KEY]["model"])
    if child_count is not None:
        config["child_count"] = child_count
    model = Autoencoder(**config)
    state = {k[len(_STATE_PREFIX) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(_STATE_PREFIX)}
    model.load_state_dict(state)
    return model.eval()

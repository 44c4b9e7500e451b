"""Loading checkpoints written by ``geoae-train``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ._autoencoder import Autoencoder

__all__ = ["CHECKPOINT_KEY", "load"]

CHECKPOINT_KEY = "geoae"
"""Entry of a checkpoint that holds the model's configuration (``{"model": Autoencoder.config}``)."""


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Autoencoder:
    """Load an :class:`Autoencoder` from a checkpoint written by ``geoae-train``, in eval mode.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when
    it is not a geoae checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for files that are not checkpoints
        raise ValueError(f"{path}: not a geoae checkpoint (torch cannot load it: {type(error).__name__})") from error
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{path}: not a geoae checkpoint (no {CHECKPOINT_KEY!r} model configuration in it)")
    model = Autoencoder(**checkpoint[CHECKPOINT_KEY]["model"])
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(state)
    return model.eval()

"""Lightning module training an :class:`~geoae.model.Autoencoder`."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from geoae.metrics import reconstruction_errors
from geoae.model import CHECKPOINT_KEY, Autoencoder

__all__ = ["AutoencoderModule"]


class AutoencoderModule(L.LightningModule):
    """Trains an autoencoder on its teacher-forced losses (:meth:`Autoencoder.loss`);
    validation also decodes free-running from the latent alone and logs the fraction of
    structures reconstructed (right atoms, matched RMSD under ``rmsd_threshold``).

    Args:
        model: the autoencoder.
        lr: Adam learning rate; decays by ``lr_decay`` per epoch (exponential).
        rmsd_threshold: matched RMSD under which a reconstruction counts as right.
    """

    def __init__(self, model: Autoencoder, lr: float = 5e-3, lr_decay: float = 1.0, rmsd_threshold: float = 0.05):
        super().__init__()
        self.model = model
        self.lr, self.lr_decay, self.rmsd_threshold = lr, lr_decay, rmsd_threshold
        self.save_hyperparameters(ignore=["model"])

    def training_step(self, batch, batch_idx):
        terms = self.model.loss(batch)
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, batch_size=batch.num_graphs, prog_bar=False)
        self.log("loss", terms["loss"], batch_size=batch.num_graphs, prog_bar=True, logger=False)
        return terms["loss"]

    def validation_step(self, batch, batch_idx):
        terms = self.model.loss(batch)
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, batch_size=batch.num_graphs)
        decoded = self.model.decode_tensors(self.model.encode(batch))
        errors = reconstruction_errors(decoded, batch, self.model._species_index[batch.z])
        ok = errors.right_atoms & (errors.rmsd < self.rmsd_threshold)
        self.log("val/reconstructed", ok.float().mean(), batch_size=batch.num_graphs, prog_bar=True)
        self.log("val/right_atoms", errors.right_atoms.float().mean(), batch_size=batch.num_graphs)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.lr_decay)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {"model": self.model.config}

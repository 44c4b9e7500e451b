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
        lr: largest Adam learning rate of the one-cycle schedule (per step, over the run's
            ``max_epochs``: warm-up for the fraction ``warmup`` of it, then cosine annealing).
        rmsd_threshold: matched RMSD under which a reconstruction counts as right.
        position_noise: noise on the positions the decoder sees in training (see
            :meth:`Autoencoder.loss`); validation is noise-free.
        noise_growth: factor on that noise at each level further from the roots.
        count_weight: weight of the children-count loss (see :meth:`Autoencoder.loss`), in
            training and validation.
        species_weight: weight of the species cross-entropy (see :meth:`Autoencoder.loss`), in
            training and validation.
        species_balance: weight of rare species in that cross-entropy (see
            :meth:`Autoencoder.loss`; 0 weighs every atom alike), in training and validation.
        own_positions: share of each training batch's structures whose decoder sees its own
            free-running decoding's points instead of the noisy true ones (scheduled sampling;
            see :meth:`Autoencoder.loss`); validation is teacher forced on true points.
        own_max_offset: the farthest a true point is replaced by a decoded one (length units).
    """

    def __init__(
        self,
        model: Autoencoder,
        lr: float = 3e-3,
        warmup: float = 0.05,
        rmsd_threshold: float = 0.05,
        position_noise: float = 0.0,
        count_weight: float = 0.0,
        noise_growth: float = 1.0,
        species_weight: float = 1.0,
        species_balance: float = 0.0,
        own_positions: float = 0.0,
        own_max_offset: float = 0.5,
    ):
        super().__init__()
        self.model = model
        self.lr, self.warmup, self.rmsd_threshold = lr, warmup, rmsd_threshold
        self.position_noise, self.count_weight, self.noise_growth = position_noise, count_weight, noise_growth
        self.species_weight, self.species_balance = species_weight, species_balance
        self.own_positions, self.own_max_offset = own_positions, own_max_offset
        self.save_hyperparameters(ignore=["model"])

    @property
    def _weights(self) -> dict[str, float]:
        return {"count_weight": self.count_weight, "species_weight": self.species_weight, "species_balance": self.species_balance}

    def training_step(self, batch, batch_idx):
        terms = self.model.loss(
            batch,
            position_noise=self.position_noise,
            noise_growth=self.noise_growth,
            own_positions=self.own_positions,
            own_max_offset=self.own_max_offset,
            **self._weights,
        )
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, batch_size=batch.num_graphs, prog_bar=False)
        self.log("loss", terms["loss"], batch_size=batch.num_graphs, prog_bar=True, logger=False)
        return terms["loss"]

    def validation_step(self, batch, batch_idx):
        terms = self.model.loss(batch, **self._weights)
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, batch_size=batch.num_graphs)
        decoded = self.model.decode_tensors(self.model.encode(batch))
        errors = reconstruction_errors(decoded, batch, self.model._species_index[batch.z])
        ok = errors.right_atoms & (errors.rmsd < self.rmsd_threshold)
        self.log("val/reconstructed", ok.float().mean(), batch_size=batch.num_graphs, prog_bar=True)
        self.log("val/right_atoms", errors.right_atoms.float().mean(), batch_size=batch.num_graphs)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        # one cycle over the whole run: warm up, then anneal (per step)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.lr, total_steps=max(1, int(self.trainer.estimated_stepping_batches)), pct_start=self.warmup
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {"model": self.model.config}

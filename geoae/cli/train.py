"""``geoae-train``: train an autoencoder from the hydra configs in ``conf/`` and evaluate it.

``geoae-train resume=outputs/<run>`` continues a run from its ``checkpoints/last.ckpt`` (add
``hydra.run.dir=outputs/<run>`` to keep writing into the same folder; ``metrics.csv`` keeps
the rows logged before the checkpoint: :func:`geoae.cli._resume.keep_training_log`).
``geoae-train init=qm9`` (a pretrained name or a checkpoint file) starts from that model's
weights with a new optimizer and schedule (fine-tuning). ``train(cfg)`` does the work and can be
called from tests; ``main`` is the hydra entry point.
A run writes to its folder (``outputs/<date>/<time>/``, or ``outputs/multirun/.../<n>/``):
``config.yaml`` (resolved), ``checkpoints/last.ckpt`` and ``model.ckpt``, ``metrics.csv``
(lightning's log), ``metrics.json``, ``loss_curves.png`` and ``reconstructions.png``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf
from torch_geometric.data import Batch

from geoae.data import to_atoms
from geoae.model import load
from geoae.plotting import plot_loss_curves, plot_reconstructions

from ._common import CONFIG_DIR, build, evaluate_model, write_json
from ._resume import keep_training_log, resume_checkpoint

__all__ = ["main", "train"]


def train(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Train, evaluate and write a run to ``output_dir`` (default: hydra's run folder).

    Returns the metrics written to ``metrics.json``.
    """
    out = Path(output_dir or HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = resume_checkpoint(cfg.get("resume"))
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build(cfg.data)
    model = build(cfg.model)
    if cfg.get("init"):
        _initialise(model, cfg.init)
    module = build(cfg.module, model=model)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    trainer = build(
        cfg.trainer,
        default_root_dir=str(out),
        logger=CSVLogger(str(out), name="", version=""),
        callbacks=[
            ModelCheckpoint(
                dirpath=str(out / "checkpoints"),
                save_last=True,
                save_top_k=0,
                every_n_train_steps=cfg.get("checkpoint_every_n_steps"),
            )
        ],
    )
    start = time.perf_counter()
    with keep_training_log(out, checkpoint):
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint)
    training_seconds = time.perf_counter() - start
    trainer.save_checkpoint(str(out / "model.ckpt"), weights_only=False)  # explicit: lightning logs a notice otherwise

    start = time.perf_counter()
    metrics = evaluate_model(cfg.evaluation, model, datamodule, out)
    metrics["evaluation_seconds"] = time.perf_counter() - start
    metrics["training"] = {
        "seconds": training_seconds,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "final": {k: float(v) for k, v in trainer.callback_metrics.items()},
    }
    write_json(out / "metrics.json", metrics)

    if (out / "metrics.csv").is_file():  # absent when a run is shorter than log_every_n_steps
        plot_loss_curves(out / "metrics.csv", out / "loss_curves.png")
    showcase = datamodule.showcase
    plot_reconstructions(to_atoms(Batch.from_data_list(showcase)), model.reconstruct(showcase), out / "reconstructions.png")
    return metrics


def _initialise(model: torch.nn.Module, init: str) -> None:
    """Copy the weights of ``init`` (a pretrained name or a checkpoint file) into ``model``."""
    source = load(init)
    if source.config != model.config:
        differences = {k: (source.config.get(k), v) for k, v in model.config.items() if source.config.get(k) != v}
        raise ValueError(f"init={init}: its model options differ from this run's (theirs, ours): {differences}")
    model.load_state_dict(source.state_dict())


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    metrics = train(cfg)
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}))

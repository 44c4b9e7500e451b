"""``geoae-train``: train an autoencoder from the hydra configs in ``conf/`` and evaluate it.

``train(cfg)`` does the work and can be called from tests; ``main`` is the hydra entry point.
A run writes to its folder (``outputs/<date>/<time>/``, or ``outputs/multirun/.../<n>/``):
``config.yaml`` (resolved), ``checkpoints/last.ckpt`` and ``model.ckpt``, ``metrics.csv``
(lightning's log), ``metrics.json``, ``loss_curves.png`` and ``reconstructions.png``.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf
from torch_geometric.data import Batch

from geoae.data import to_atoms

from geoae.plotting import plot_loss_curves, plot_reconstructions

__all__ = ["build", "main", "train", "write_json"]


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON through a temporary file and a rename (never half-written)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def build(node: DictConfig, **kwargs):
    """``hydra.utils.instantiate`` whose error for an unknown option lists the valid ones."""
    target = get_object(node._target_)
    valid = inspect.signature(target).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in valid.values()):
        unknown = sorted(set(node) - {"_target_", "_partial_", "_recursive_", "_convert_"} - set(valid))
        if unknown:
            raise ValueError(f"{node._target_}: unknown option(s) {unknown}; valid options: {sorted(valid)}")
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        raise ValueError(f"{node._target_}: {error}") from error


def train(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Train, evaluate and write a run to ``output_dir`` (default: hydra's run folder).

    Returns the metrics written to ``metrics.json``.
    """
    out = Path(output_dir or HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build(cfg.data)
    model = build(cfg.model)
    module = build(cfg.module, model=model)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    trainer = build(
        cfg.trainer,
        default_root_dir=str(out),
        logger=CSVLogger(str(out), name="", version=""),
        callbacks=[ModelCheckpoint(dirpath=str(out / "checkpoints"), save_last=True, save_top_k=0)],
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    training_seconds = time.perf_counter() - start
    trainer.save_checkpoint(str(out / "model.ckpt"))

    start = time.perf_counter()
    metrics = build(cfg.evaluation, model=model)
    metrics["evaluation_seconds"] = time.perf_counter() - start
    metrics["training"] = {
        "seconds": training_seconds,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "final": {k: float(v) for k, v in trainer.callback_metrics.items()},
    }
    write_json(out / "metrics.json", metrics)

    plot_loss_curves(out / "metrics.csv", out / "loss_curves.png")
    showcase = datamodule.showcase
    plot_reconstructions(to_atoms(Batch.from_data_list(showcase)), model.reconstruct(showcase), out / "reconstructions.png")
    return metrics


# The configs live in the repository's conf/ (geoae-train runs from a source checkout, installed
# with `pip install -e .`); hydra takes an absolute config path.
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    metrics = train(cfg)
    print(json.dumps({k: metrics[k] for k in ("reconstructed", "rmsd_median", "rmsd_max") if k in metrics}))
